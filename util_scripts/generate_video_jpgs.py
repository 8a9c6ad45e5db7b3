"""Turn every video of a dataset into a folder of jpg frames with ffmpeg.

    python -m util_scripts.generate_video_jpgs SRC DST ucf101 [--n_jobs N] [--fps F] [--size 240]

Layout: `SRC/<class>/<video>.avi` -> `DST/<class>/<video>/image_00001.jpg, ...` (ucf101, hmdb51;
kinetics and mit: `.mp4`, and Kinetics' unlabelled `SRC/test/` is just one more folder);
activitynet reads a flat `SRC/<video>.mp4` -> `DST/<video>/`. Every video file is read,
whatever its extension (.mkv, .webm, ...: the files `--file_type video` reads). Frames have
their shorter side scaled to `--size` (aspect kept, the other side rounded to an even number).

One image is written per decoded frame (ffmpeg's `-fps_mode passthrough`), so `image_0000k.jpg`
is the k-th frame of the video, the frame `--file_type video` reads as frame k, and a video of
variable frame rate is not padded with repeated frames to its nominal rate (ffmpeg's default for
image files). `--fps` resamples to a constant rate instead.

Frames are written to a hidden `.<video>.part` folder that is renamed when ffmpeg has finished,
so a killed run never leaves a folder that looks complete. A folder that already holds as many
frames as the video is skipped; one with fewer (e.g. from an interrupted reference run) is redone.
Unreadable videos are listed at the end and make the exit status 1; the others are converted.
"""
import argparse
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from tqdm import tqdm

from utils import UserError, run_cli
from datasets.video_reader import (DATASET_VIDEO_EXTENSIONS, VideoReadError, VideoReader,
                                   count_frames, list_video_files, scale_expression,
                                   video_extensions)
from .utils import (VideoError, count_resampled_frames, get_n_frames, last_error_line,
                    passthrough_args, require_dir, run_ffmpeg)

DATASETS = tuple(sorted(DATASET_VIDEO_EXTENSIONS))


def list_videos(src: Path, dst: Path, dataset: str) -> List[Tuple[Path, Path]]:
    """(video file, frame folder) pairs: one folder level of classes, none for activitynet.
    A video file is what `--file_type video` reads (any of datasets.video_reader's
    VIDEO_EXTENSIONS; of two files with one stem, the dataset's own extension first)."""
    folders = [src] if dataset == 'activitynet' else sorted(
        p for p in src.iterdir() if p.is_dir() and not p.name.startswith('.'))
    pairs = []
    for folder in folders:
        dst_folder = dst if folder == src else dst / folder.name
        files = list_video_files(folder, video_extensions(dataset))
        pairs += [(folder / name, dst_folder / stem) for stem, name in sorted(files.items())
                  if (folder / name).is_file()]
    return pairs


def scale_filter(size: int) -> str:
    """Shorter side -> `size`; -2 keeps the aspect with an even length (what most codecs want).
    The video loader runs the same filter (datasets/video_reader.py)."""
    return f'scale={scale_expression(size)}'


def has_all_frames(video_path: Path, n_frames: int, fps: Optional[float]) -> bool:
    """Whether `n_frames` extracted frames are every frame of the video.

    Without `fps`, the frames are those datasets.video_reader counts (one per decoded frame):
    a folder with as many frames as the video's packets has them all (the packets are indexed
    without decoding); else the video is decoded to count exactly. With `fps`, ffmpeg counts
    the frames of its resampling."""
    if n_frames == 0:
        return False
    if fps:
        return n_frames >= count_resampled_frames(video_path, fps)
    try:
        reader = VideoReader(video_path)
        reader.close()
        return n_frames >= reader.n_frames or n_frames >= count_frames(video_path)
    except VideoReadError as e:
        raise VideoError(str(e)) from e


def is_complete(video_path: Path, frame_dir: Path, fps: Optional[float]) -> bool:
    """Whether `frame_dir` already holds every frame of the video."""
    return has_all_frames(video_path, get_n_frames(frame_dir), fps)


def extract_frames(video_path: Path, frame_dir: Path, fps: Optional[float], size: int) -> None:
    """Write the frames of a video into the existing folder `frame_dir` as
    `image_00001.jpg, ...`: ffmpeg, one image per decoded frame (resampled to `fps` if given),
    shorter side `size`. Raises VideoError when ffmpeg fails or writes no frame."""
    vf = scale_filter(size) + (f',fps={fps}' if fps else '')
    result = run_ffmpeg(['-v', 'error', '-threads', '1', '-i', video_path, '-map', '0:v:0',
                         '-vf', vf, *passthrough_args(), '-threads', '1',
                         frame_dir / 'image_%05d.jpg'])
    if result.returncode != 0 or get_n_frames(frame_dir) == 0:
        raise VideoError(last_error_line(result.stderr, video_path) if result.returncode
                         else 'no video frames decoded')


def video_process(video_path: Path, frame_dir: Path, fps: Optional[float], size: int) -> str:
    """Extract the frames of one video; returns 'done' or 'skipped', raises VideoError."""
    if frame_dir.is_dir() and is_complete(video_path, frame_dir, fps):
        return 'skipped'
    part_dir = frame_dir.with_name(f'.{frame_dir.name}.part')
    shutil.rmtree(part_dir, ignore_errors=True)
    part_dir.mkdir(parents=True)
    try:
        extract_frames(video_path, part_dir, fps, size)
    except VideoError:
        shutil.rmtree(part_dir, ignore_errors=True)
        raise
    if frame_dir.exists():
        shutil.rmtree(frame_dir)
    part_dir.rename(frame_dir)
    return 'done'


def convert_all(pairs: List[Tuple[Path, Path]], process: Callable[[Path, Path], str],
                n_jobs: int, errors: tuple = (VideoError,)) -> Tuple[dict, List[str]]:
    """`process(source, destination)` of every pair on `n_jobs` threads (each runs one ffmpeg):
    counts of its answers ('done', 'skipped') and of `errors`, and the failures' messages."""
    counts = {'done': 0, 'skipped': 0, 'failed': 0}
    failures = []
    executor = ThreadPoolExecutor(max_workers=n_jobs)
    try:
        futures = {executor.submit(process, source, destination): source
                   for source, destination in pairs}
        for future in tqdm(as_completed(futures), total=len(futures), unit='video'):
            try:
                counts[future.result()] += 1
            except errors as e:
                counts['failed'] += 1
                failures.append(f'{futures[future]}: {e}')
    finally:
        # On Ctrl-C, drop the queued videos instead of waiting for all of them.
        executor.shutdown(wait=True, cancel_futures=True)
    return counts, sorted(failures)


def job_options(args) -> Tuple[int, Optional[float]]:
    """(threads, frame rate or None) of --n_jobs and --fps, after checking --size and --n_jobs."""
    if args.size < 1:
        raise UserError(f'--size must be positive, got {args.size}')
    if args.n_jobs == 0 or args.n_jobs < -1:
        raise UserError(f'--n_jobs must be -1 or positive, got {args.n_jobs}')
    return ((os.cpu_count() or 1) if args.n_jobs == -1 else args.n_jobs,
            args.fps if args.fps > 0 else None)


def report(n_videos: int, counts: dict, failures: List[str], output: str, failed: str) -> None:
    """Print the failures and a summary line; one error line when any video failed."""
    for failure in failures:
        print(f'failed: {failure}', file=sys.stderr)
    print(f'{n_videos} videos: {counts["done"]} done, {counts["skipped"]} skipped '
          f'(already complete), {counts["failed"]} failed; {output}')
    if failures:
        raise UserError(f'{len(failures)} of {n_videos} videos {failed} (listed above)')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m util_scripts.generate_video_jpgs',
                                     description='Extract jpg frames of videos with ffmpeg.')
    parser.add_argument('dir_path', type=Path, help='directory of the videos')
    parser.add_argument('dst_path', type=Path, help='directory of the frame folders (created)')
    parser.add_argument('dataset', choices=DATASETS,
                        help='decides the folder layout and the extension looked for first '
                             '(.avi or .mp4; any video file is read)')
    parser.add_argument('--n_jobs', type=int, default=-1,
                        help='parallel ffmpeg processes; -1 (default): one per CPU core')
    parser.add_argument('--fps', type=float, default=-1,
                        help='frame rate of the frames; -1 (default): the original rate')
    parser.add_argument('--size', type=int, default=240, help='length of the shorter side')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    n_jobs, fps = job_options(args)
    pairs = list_videos(require_dir(args.dir_path, 'video directory'), args.dst_path, args.dataset)
    if not pairs:
        layout = '<video>' if args.dataset == 'activitynet' else '<class>/<video>'
        raise UserError(f'no videos found in {args.dir_path} '
                        f'({args.dataset} expects {layout}'
                        f'{DATASET_VIDEO_EXTENSIONS[args.dataset]} or another video file)')
    args.dst_path.mkdir(parents=True, exist_ok=True)
    counts, failures = convert_all(
        pairs, lambda video, frame_dir: video_process(video, frame_dir, fps, args.size), n_jobs)
    report(len(pairs), counts, failures, f'frames in {args.dst_path}',
           'could not be read by ffmpeg')


if __name__ == '__main__':
    run_cli(main)
