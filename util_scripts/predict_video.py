"""Classify videos with an exported model, or with a checkpoint and its run's opts.json.

    python -m util_scripts.predict_video INPUT... --model exported/r3d50 [--topk 5] \
        [--output pred.json]
    python -m util_scripts.predict_video INPUT... --model results/save_20.pdparams \
        --opts results/opts.json

INPUT is a video file, decoded through an ffmpeg pipe with its shorter side scaled to 240 as
generate_video_jpgs does (no frames are written to disk), or a frame folder (`image_00001.jpg`,
...). As `main.py --inference` does, each frame is resized and center-cropped, the video is cut
into sliding-window clips of `sample_duration` frames every `inference_stride` frames, and the
softmax scores of the clips are averaged. Prints the `--topk` classes of every video; `--output`
writes the json main.py --inference writes, `{"results": {video_id: [{"label", "score"}, ...]}}`,
where the video id is the file name without its extension, or the folder name.

An exported model (util_scripts.export_model) runs through Paddle Inference: oneDNN on CPU, GPU 0
when Paddle has CUDA and sees a GPU (unless --no_cuda). A checkpoint runs the way main.py runs
inference: oneDNN on CPU, dygraph on GPU. One video's frames are held in memory at sample size.
"""
import argparse
import json
import subprocess
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterator, List, Tuple

import environment

environment.setup()  # before Paddle is imported

import numpy as np  # noqa: E402
import paddle  # noqa: E402
from PIL import Image  # noqa: E402

import inference  # noqa: E402
from datasets.loader import ImageLoaderPIL, image_name_formatter  # noqa: E402
from model import get_device  # noqa: E402
from opts import positive_int  # noqa: E402
from spatial_transforms import CenterCrop, Compose, Resize, get_spatial_transform  # noqa: E402
from temporal_transforms import SlidingWindow, get_temporal_transform  # noqa: E402
from utils import UserError, run_cli  # noqa: E402

from .export_model import (INFO_FILE, PROGRAM_PREFIX, build_model, class_names_of,  # noqa: E402
                           input_shape, model_info, parse_model_opts, random_clip)
from .generate_video_jpgs import scale_filter  # noqa: E402
from .utils import find_ffmpeg, get_n_frames, last_error_line  # noqa: E402

FRAME_SIZE = 240  # shorter side of the frames, as generate_video_jpgs writes them

LogitsFn = Callable[[np.ndarray], np.ndarray]


def read_ppm_frames(stream: BinaryIO) -> Iterator[Image.Image]:
    """RGB images from a stream of binary PPMs ("P6\\n<w> <h>\\n255\\n" + w * h * 3 bytes each)."""
    while stream.readline().strip() == b'P6':
        width, height = (int(n) for n in stream.readline().split())
        stream.readline()  # the maximum value, 255
        data = stream.read(width * height * 3)
        if len(data) < width * height * 3:
            return
        yield Image.frombytes('RGB', (width, height), data)


def decode_video(path: Path, size: int = FRAME_SIZE) -> Iterator[Image.Image]:
    """The frames of a video file with the shorter side scaled to `size`, piped from ffmpeg."""
    command = [find_ffmpeg(), '-hide_banner', '-nostdin', '-v', 'error', '-i', str(path),
               '-map', '0:v:0', '-vf', scale_filter(size), '-f', 'image2pipe', '-c:v', 'ppm',
               '-pix_fmt', 'rgb24', 'pipe:1']
    n_frames = 0
    # stderr to a file: a pipe that nobody reads could fill up and stall ffmpeg
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
        try:
            for frame in read_ppm_frames(process.stdout):
                n_frames += 1
                yield frame
        finally:
            process.stdout.close()
            if process.poll() is None:
                process.kill()
            returncode = process.wait()
        if returncode != 0 or n_frames == 0:
            stderr.seek(0)
            message = last_error_line(stderr.read(), path) if returncode else 'no video frames'
            raise UserError(f'ffmpeg cannot read {path}: {message}')


def read_frame_folder(folder: Path) -> Iterator[Image.Image]:
    """The frames `image_00001.jpg, ...` of a frame folder, in order."""
    n_frames = get_n_frames(folder)
    if n_frames == 0:
        raise UserError(f'{folder} is a folder without image_00001.jpg ... frames')
    load = ImageLoaderPIL()  # a missing or corrupt frame is a UserError that names it
    for index in range(1, n_frames + 1):
        yield load(folder / image_name_formatter(index))


def read_frames(path: Path, crop: Compose) -> List[Image.Image]:
    """The cropped frames of a frame folder or video file."""
    frames = read_frame_folder(path) if path.is_dir() else decode_video(path)
    return [crop(frame) for frame in frames]


def video_id(path: Path) -> str:
    """The id main.py's datasets give the video: the frame folder's name or the file's stem."""
    return path.name if path.is_dir() else path.stem


def make_clips(frames: List[Image.Image], temporal_transform, to_array) -> Iterator[np.ndarray]:
    """Clips [C, T, H, W] of the frame indices the temporal transform gives (1-based)."""
    for indices in temporal_transform(list(range(1, len(frames) + 1))):
        yield np.stack([to_array(frames[i - 1]) for i in indices], axis=1)


def average_scores(clips: Iterator[np.ndarray], logits: LogitsFn,
                   batch_size: int) -> Tuple[np.ndarray, int]:
    """(mean softmax over the clips [n_classes], number of clips), `batch_size` clips a call."""
    scores, batch = [], []
    for clip in clips:
        batch.append(clip)
        if len(batch) == batch_size:
            scores.extend(inference.softmax(logits(np.stack(batch))))  # [N, C, T, H, W] in
            batch = []
    if batch:
        scores.extend(inference.softmax(logits(np.stack(batch))))
    return np.mean(scores, axis=0), len(scores)


class VideoClassifier:
    """Preprocessing of model_info.json + a logits function: top-k classes of a video."""

    def __init__(self, info: dict, logits: LogitsFn, batch_size: int):
        if info['input_type'] != 'rgb':
            raise UserError(f'the model takes {info["input_type"]} input; videos give RGB frames')
        opt = argparse.Namespace(input_type='rgb', value_scale=info['value_scale'],
                                 mean=info['mean'], std=info['std'], no_mean_norm=False,
                                 no_std_norm=False, sample_t_stride=info['sample_t_stride'])
        # main.get_inference_utils' center crop, applied once per frame instead of once per clip
        self.crop = Compose([Resize(info['sample_size']), CenterCrop(info['sample_size'])])
        self.to_array = get_spatial_transform(opt, [])
        self.temporal_transform = get_temporal_transform(
            opt, SlidingWindow(info['sample_duration'], info['inference_stride']))
        self.class_names = dict(enumerate(info['class_names']))
        self.logits = logits
        self.batch_size = batch_size

    def __call__(self, path: Path, topk: int) -> Tuple[List[dict], int]:
        """([{label, score}, ...] best first, number of clips) of one video file or frame folder."""
        frames = read_frames(path, self.crop)
        clips = make_clips(frames, self.temporal_transform, self.to_array)
        scores, n_clips = average_scores(clips, self.logits, self.batch_size)
        return inference.get_video_results(scores, self.class_names, topk), n_clips


def load_exported(folder: Path, use_gpu: bool) -> Tuple[dict, LogitsFn]:
    """(model_info.json, Paddle Inference predictor) of a folder written by export_model."""
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        raise UserError(f'--model {folder}: no {INFO_FILE} there; export the model with '
                        'python -m util_scripts.export_model')
    try:
        info = json.loads(info_path.read_text())
        predictor = inference.Predictor(folder / PROGRAM_PREFIX, use_gpu=use_gpu)
    except (json.JSONDecodeError, FileNotFoundError) as e:
        raise UserError(f'--model {folder}: {e}') from e
    return info, predictor


def load_checkpoint(weights: Path, args: argparse.Namespace) -> Tuple[dict, LogitsFn]:
    """(model_info of the run's options, logits function) of a checkpoint, as main.py infers."""
    if args.opts is None:
        raise UserError(f'--model {weights} is not a folder written by export_model; with a '
                        'checkpoint (.pdparams) pass --opts RUN/opts.json')
    opt = parse_model_opts([], args.opts, 'python -m util_scripts.predict_video')
    class_names = class_names_of(opt, args.annotation_path, args.opts)
    model = build_model(opt, weights)
    logits = inference.make_logits_fn(model, random_clip(input_shape(opt)))
    return model_info(opt, class_names, weights), logits


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m util_scripts.predict_video',
        description='Top-k classes of videos (files or frame folders) with an exported model '
                    'or a checkpoint.')
    parser.add_argument('inputs', nargs='+', type=Path, metavar='INPUT',
                        help='video file (read with ffmpeg) or frame folder (image_00001.jpg ...)')
    parser.add_argument('--model', type=Path, required=True,
                        help='folder written by export_model, or a checkpoint (.pdparams) '
                             'with --opts')
    parser.add_argument('--opts', type=Path, default=None,
                        help="opts.json of the checkpoint's run (its model and preprocessing)")
    parser.add_argument('--annotation_path', type=Path, default=None,
                        help='with a checkpoint: annotation json whose "labels" are the class '
                             'names (default: the one opts.json names)')
    parser.add_argument('--topk', type=int, default=5,
                        help='classes shown and written per video (<= 0: all)')
    parser.add_argument('--output', type=Path, default=None,
                        help='result json to write (main.py --inference format)')
    parser.add_argument('--batch_size', type=positive_int, default=8,
                        help='clips per forward pass')
    parser.add_argument('--no_cuda', action='store_true', help='run on the CPU even with a GPU')
    return parser.parse_args(argv)


def video_inputs(paths: List[Path]) -> Dict[str, Path]:
    """Video id -> input, checked before the model loads: every input exists, and no two share
    an id (they would overwrite each other in the json)."""
    ids = {}
    for path in paths:
        if not path.exists():
            raise UserError(f'{path} not found')
        other = ids.setdefault(video_id(path), path)
        if other != path:
            raise UserError(f'{other} and {path} have the same video id {video_id(path)!r}')
    return ids


def format_results(results: List[dict]) -> str:
    return '  '.join(f'{r["label"]} {r["score"]:.4f}' for r in results)


def main(argv=None) -> None:
    args = parse_args(argv)
    inputs = video_inputs(args.inputs)
    device = get_device(args.no_cuda)
    paddle.set_device(device)
    if args.model.is_dir():
        info, logits = load_exported(args.model, use_gpu=device == 'gpu')
    else:
        info, logits = load_checkpoint(args.model, args)
    classify = VideoClassifier(info, logits, args.batch_size)
    topk = args.topk if args.topk > 0 else len(info['class_names'])

    results = {}
    for name, path in inputs.items():
        results[name], n_clips = classify(path, topk)
        print(f'{path} ({n_clips} clips): {format_results(results[name])}')
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({'results': results}))
        print(f'{len(results)} videos -> {args.output}')


if __name__ == '__main__':
    run_cli(main)
