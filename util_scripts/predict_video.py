"""Classify videos with an exported model, or with a checkpoint and its run's opts.json.

    python -m util_scripts.predict_video INPUT... --model exported/r3d50 [--topk 5] \
        [--output pred.json] [--timeline] [--timeline_png timeline.png] [--fps F]
    python -m util_scripts.predict_video INPUT... --model results/save_20.pdparams \
        --opts results/opts.json

INPUT is a video file, decoded with PyAV into the frames generate_video_jpgs would write for
it (one per decoded frame, shorter side scaled to 240; no frames are written to disk), or a
frame folder (`image_00001.jpg`, ...). As `main.py --inference` does, each frame is resized
and center-cropped, the video is cut into sliding-window clips of `sample_duration` frames
every `inference_stride` frames, and the softmax scores of the clips are averaged. Prints the
`--topk` classes of every video; `--output` writes the json main.py --inference writes,
`{"results": {video_id: [{"label", "score"}, ...]}}`, where the video id is the file name
without its extension, or the folder name.

`--timeline` adds the scores of every window to that json, under "timeline":

    {video_id: {"fps": 25.0, "windows": [{"segment": [1, 17], "start": 0.0, "end": 0.64,
                                          "result": [{"label", "score"}, ...]}, ...]}}

"segment" is the window's frames [first, last + 1] (1-based, as main.py --inference_no_average
writes them; the last window of a video may be shorter, and is loop-padded to a full clip), and
"start"/"end" are its times in seconds, (first - 1) / fps and last / fps: frame k is shown from
(k - 1) / fps on. The rate is --fps, else for a video file its stream's average frame rate
(frames of a variable-rate video are neither repeated nor dropped, so their times are the
average's). A frame folder has no rate of its own
(generate_video_jpgs keeps each video's rate, or writes --fps F: pass the same --fps here), so
without --fps its "fps", "start" and "end" are null and the frame numbers are the timeline.

A video that cannot be read (a missing or damaged file, a corrupt frame) is reported on one
line and the others are classified: --output holds them, and the exit status is 1.

`--timeline_png FILE` draws, one panel per video, the window scores of the video's best classes
on average (the top-k, at most 5) at each window's centre, in seconds (frames without a rate);
it needs matplotlib (pip install matplotlib).

An exported model (util_scripts.export_model) runs through Paddle Inference: oneDNN on CPU, GPU 0
when Paddle has CUDA and sees a GPU (unless --no_cuda). A checkpoint runs the way main.py runs
inference: oneDNN on CPU, dygraph on GPU. Frames stream through a buffer of the frames the next
windows need (about sample_duration of them), so memory does not grow with a video's length.
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

import environment

environment.setup()  # before Paddle is imported

import numpy as np
import paddle
from PIL import Image
from tqdm import tqdm

import inference
from datasets.loader import ImageLoaderPIL, image_name_formatter
from datasets.video_reader import VideoReadError, VideoReader, open_video
from model import get_device
from opts import positive_float, positive_int
from spatial_transforms import CenterCrop, Compose, Resize, get_spatial_transform
from temporal_transforms import SlidingWindow, loop_pad
from utils import UserError, run_cli

from .export_model import (INFO_FILE, PROGRAM_PREFIX, build_model, class_names_of,
                           input_shape, model_info, parse_model_opts, random_clip)
from .utils import get_n_frames

FRAME_SIZE = 240  # shorter side of the frames, as generate_video_jpgs writes them

LogitsFn = Callable[[np.ndarray], np.ndarray]


def decode_video(path: Path, size: int = FRAME_SIZE) -> Iterator[Image.Image]:
    """The frames of a video file as generate_video_jpgs writes them (shorter side `size`)."""
    try:
        reader = VideoReader(path, size)
    except VideoReadError as e:
        raise UserError(f'cannot read {path}: {e}') from e
    try:
        n = 0
        for n, frame in enumerate(reader.frames(), 1):
            yield frame
        if n == 0:
            raise UserError(f'cannot read {path}: no frame decodes')
    finally:
        reader.close()


def read_frame_folder(folder: Path) -> Iterator[Image.Image]:
    """The frames `image_00001.jpg, ...` of a frame folder, in order."""
    n_frames = get_n_frames(folder)
    if n_frames == 0:
        raise UserError(f'{folder} is a folder without image_00001.jpg ... frames')
    load = ImageLoaderPIL()  # a missing or corrupt frame is a UserError that names it
    for index in range(1, n_frames + 1):
        yield load(folder / image_name_formatter(index))


def read_frames(path: Path) -> Iterator[Image.Image]:
    """The frames of a frame folder or video file, one at a time."""
    return read_frame_folder(path) if path.is_dir() else decode_video(path)


def video_id(path: Path) -> str:
    """The id main.py's datasets give the video: the frame folder's name or the file's stem."""
    return path.name if path.is_dir() else path.stem


def sliding_windows(frames: Iterable, to_array: Callable[[object], np.ndarray], size: int,
                    stride: int, t_stride: int = 1) -> Iterator[Tuple[List[int], np.ndarray]]:
    """([first, last + 1], clip [C, T, H, W]) of each sliding window of a stream of frames.

    The windows are those of `get_temporal_transform` (TemporalSubsampling(t_stride), then
    SlidingWindow(size, stride)) on the frame numbers 1..n, found without knowing n: the window
    starting at frame b (every `t_stride * stride` frames from 1) holds frames b..b+size-1 and is
    complete once a subsampled frame (1, 1 + t_stride, ...) at or after its last has arrived. When
    the stream ends, the next window, if it starts at or before the last subsampled frame, is cut
    there and loop-padded, and ends the list. `to_array` converts each frame used once; only the
    frames from the next window's first on are kept (at most size + t_stride - 1 of them).
    """
    step = t_stride * stride
    kept: Dict[int, np.ndarray] = {}  # frame number -> array, frames >= begin only
    begin = 1  # first frame of the next window
    n = 0
    for n, frame in enumerate(frames, start=1):
        if n >= begin:
            kept[n] = to_array(frame)
        if (n - 1) % t_stride:
            continue  # windows end at subsampled frames only
        while begin + size - 1 <= n:
            yield [begin, begin + size], np.stack([kept[i] for i in range(begin, begin + size)], 1)
            begin += step
            for i in [i for i in kept if i < begin]:
                del kept[i]
    last = 1 + (n - 1) // t_stride * t_stride  # the last subsampled frame
    if n and begin <= last:
        indices = loop_pad(list(range(begin, last + 1)), size)
        yield [begin, last + 1], np.stack([kept[i] for i in indices], axis=1)


class Prediction(NamedTuple):
    scores: np.ndarray  # mean softmax of the windows [n_classes]
    n_clips: int
    segments: List[List[int]]  # [first, last + 1] of each window
    window_scores: Optional[np.ndarray]  # softmax of each window [n_clips, n_classes], if kept


def score_windows(windows: Iterator[Tuple[List[int], np.ndarray]], logits: LogitsFn,
                  batch_size: int, keep_windows: bool) -> Prediction:
    """Softmax of the windows, `batch_size` clips a call: their mean, and each window's scores
    with `keep_windows`. Only one batch of clips is held at a time."""
    total, n_clips, segments, kept, batch = None, 0, [], [], []

    def run(batch):
        nonlocal total, n_clips
        scores = inference.softmax(logits(np.stack(batch)))  # [N, C, T, H, W] in
        total = scores.sum(axis=0, dtype=np.float64) + (0 if total is None else total)
        n_clips += len(scores)
        if keep_windows:
            kept.extend(scores)

    for segment, clip in windows:
        segments.append(segment)
        batch.append(clip)
        if len(batch) == batch_size:
            run(batch)
            batch = []
    if batch:
        run(batch)
    return Prediction((total / n_clips).astype(np.float32), n_clips, segments,
                      np.array(kept) if keep_windows else None)


class VideoClassifier:
    """Preprocessing of model_info.json + a logits function: the scores of a video's windows."""

    def __init__(self, info: dict, logits: LogitsFn, batch_size: int):
        if info['input_type'] != 'rgb':
            raise UserError(f'the model takes {info["input_type"]} input; videos give RGB frames')
        opt = argparse.Namespace(input_type='rgb', value_scale=info['value_scale'],
                                 mean=info['mean'], std=info['std'], no_mean_norm=False,
                                 no_std_norm=False, sample_t_stride=info['sample_t_stride'])
        # main.get_inference_utils' center crop and normalization, applied once per frame
        # instead of once per clip
        self.crop = Compose([Resize(info['sample_size']), CenterCrop(info['sample_size'])])
        self.normalize = get_spatial_transform(opt, [])
        self.size = info['sample_duration']
        self.stride = SlidingWindow(self.size, info['inference_stride']).stride  # 0: size
        self.t_stride = info['sample_t_stride']
        self.class_names = dict(enumerate(info['class_names']))
        self.logits = logits
        self.batch_size = batch_size

    def to_array(self, frame: Image.Image) -> np.ndarray:
        """[C, H, W] of a decoded frame."""
        return self.normalize(self.crop(frame))

    def __call__(self, path: Path, keep_windows: bool = False) -> Prediction:
        """The scores of one video file or frame folder (and of each window)."""
        n_frames = get_n_frames(path) if path.is_dir() else None
        with tqdm(read_frames(path), total=n_frames, desc=video_id(path), unit='frame',
                  leave=False, dynamic_ncols=True, disable=None) as frames:  # no bar off a tty
            windows = sliding_windows(frames, self.to_array, self.size, self.stride,
                                      self.t_stride)
            return score_windows(windows, self.logits, self.batch_size, keep_windows)

    def results(self, scores: np.ndarray, topk: int) -> List[dict]:
        return inference.get_video_results(scores, self.class_names, topk)


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
    parser.add_argument('--timeline', action='store_true',
                        help='also write the top-k classes of every window and its frames and '
                             'times in seconds into the --output json, under "timeline"')
    parser.add_argument('--timeline_png', type=Path, default=None, metavar='FILE',
                        help="draw the top classes' window scores over time into this PNG "
                             '(needs matplotlib)')
    parser.add_argument('--fps', type=positive_float, default=None,
                        help="frame rate of the timeline's times; frames are not resampled "
                             "(default: a video file's own rate; a frame folder has none, so its "
                             'timeline is in frames)')
    parser.add_argument('--batch_size', type=positive_int, default=8,
                        help='clips per forward pass')
    parser.add_argument('--no_cuda', action='store_true', help='run on the CPU even with a GPU')
    args = parser.parse_args(argv)
    if args.timeline and args.output is None:
        parser.error('--timeline writes into the --output json: pass --output')
    return args


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


def frame_rate(path: Path, fps: Optional[float]) -> Optional[float]:
    """--fps, else a video file's average frame rate; None for a frame folder."""
    if fps is not None or path.is_dir():
        return fps
    try:
        container, stream = open_video(path)  # the header only: no index of the packets
    except VideoReadError as e:
        raise UserError(f'cannot read {path}: {e}') from e
    rate = stream.average_rate or stream.guessed_rate
    container.close()
    return float(rate) if rate else None


def timeline(prediction: Prediction, fps: Optional[float], classify: VideoClassifier,
             topk: int) -> dict:
    """{"fps", "windows": [{"segment", "start", "end", "result"}, ...]} of one video."""
    windows = []
    for (first, end), scores in zip(prediction.segments, prediction.window_scores):
        windows.append({'segment': [first, end],
                        'start': None if fps is None else (first - 1) / fps,
                        'end': None if fps is None else (end - 1) / fps,
                        'result': classify.results(scores, topk)})
    return {'fps': fps, 'windows': windows}


def new_figure(n_panels: int):
    """An empty matplotlib Figure for `n_panels` stacked panels (no pyplot: no display needed)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UserError('--timeline_png draws with matplotlib: pip install matplotlib') from e
    return Figure(figsize=(10, 1 + 2.5 * n_panels), dpi=100, layout='constrained')


TIMELINE_CLASSES = 5  # classes drawn per video in --timeline_png


def draw_timelines(figure, predictions: Dict[str, Tuple[Prediction, Optional[float]]],
                   classify: VideoClassifier, topk: int) -> None:
    """One panel per video: the scores of its best classes (on average) at each window's centre,
    against seconds (frames when the rate is unknown)."""
    axes = figure.subplots(len(predictions), 1, squeeze=False)[:, 0]
    for ax, (name, (prediction, fps)) in zip(axes, predictions.items()):
        best = np.argsort(-prediction.scores, kind='stable')[:min(topk, TIMELINE_CLASSES)]
        centres = np.array([(first - 1 + end - 1) / 2 for first, end in prediction.segments])
        x = centres if fps is None else centres / fps
        for index in best:
            ax.plot(x, prediction.window_scores[:, index], marker='.',
                    label=classify.class_names[int(index)])
        ax.set_title(name)
        ax.set_xlabel('frame' if fps is None else 'time (s)')
        ax.set_ylabel('score')
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc='upper right', fontsize='small')


def main(argv=None) -> None:
    args = parse_args(argv)
    inputs = video_inputs(args.inputs)
    figure = new_figure(len(inputs)) if args.timeline_png else None  # matplotlib checked first
    keep_windows = args.timeline or figure is not None
    device = get_device(args.no_cuda)
    paddle.set_device(device)
    if args.model.is_dir():
        info, logits = load_exported(args.model, use_gpu=device == 'gpu')
    else:
        info, logits = load_checkpoint(args.model, args)
    classify = VideoClassifier(info, logits, args.batch_size)
    topk = args.topk if args.topk > 0 else len(info['class_names'])

    results, timelines, predictions, failures = {}, {}, {}, []
    for name, path in inputs.items():
        try:
            prediction = classify(path, keep_windows)
            fps = frame_rate(path, args.fps) if keep_windows else None
        except UserError as e:  # one bad video: reported, the others still classified
            if len(inputs) == 1:
                raise
            failures.append(path)
            print(f'error: {e}', file=sys.stderr)
            continue
        results[name] = classify.results(prediction.scores, topk)
        print(f'{path} ({prediction.n_clips} clips): {format_results(results[name])}')
        if keep_windows:
            predictions[name] = prediction, fps
            timelines[name] = timeline(prediction, fps, classify, topk)
    if args.output is not None:
        output = {'results': results}
        if args.timeline:
            output['timeline'] = timelines
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(output))
        print(f'{len(results)} videos -> {args.output}')
    if figure is not None and predictions:
        draw_timelines(figure, predictions, classify, topk)
        args.timeline_png.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.timeline_png)
        print(f'timeline of {len(predictions)} videos -> {args.timeline_png}')
    if failures:
        raise UserError(f'{len(failures)} of {len(inputs)} videos could not be classified '
                        '(listed above)')


if __name__ == '__main__':
    run_cli(main)
