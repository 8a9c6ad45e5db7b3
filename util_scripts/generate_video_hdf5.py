"""Pack the frames of every video of a dataset into one hdf5 file per video.

    python -m util_scripts.generate_video_hdf5 SRC DST {ucf101,hmdb51,kinetics,mit,activitynet}
        [--n_jobs N] [--fps F] [--size 240]

SRC holds either the frame folders of generate_video_jpgs, `SRC/<label>/<video_id>/image_00001.jpg,
...`, or the videos, `SRC/<label>/<video_id>.avi` (ucf101, hmdb51) or `.mp4` (kinetics, mit);
activitynet has no label level. Writes `DST/<label>/<video_id>.hdf5` (the reference's layout): a
dataset `video` of variable-length uint8, element k-1 holding the bytes of the JPEG of frame k,
`image_0000k.jpg`. A frame folder's JPEGs are copied byte for byte; a video's frames are the
JPEGs generate_video_jpgs writes (the same ffmpeg command, `--fps` and `--size` as there;
those options do not apply to frame folders).

Each file is written under a hidden `.<video_id>.hdf5.part` name and renamed when complete, so
a killed run never leaves a file that looks complete. A file that already holds every frame is
skipped (resuming a run); one with fewer, or with empty trailing frames (from an interrupted
reference run), is redone. Videos that cannot be read are listed at the end and make the exit
status 1; the others are converted.
"""
import argparse
import os
import re
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

from utils import UserError, run_cli
from datasets.video_reader import DATASET_VIDEO_EXTENSIONS, list_video_files, video_extensions
from .generate_video_jpgs import (DATASETS, convert_all, extract_frames, has_all_frames,
                                  job_options, report)
from .utils import VideoError, require_dir

FRAME_NAME = re.compile(r'image_(\d+)\.jpg')


def import_h5py():
    try:
        import h5py
    except ImportError as e:
        raise UserError('writing hdf5 files needs h5py: pip install h5py') from e
    return h5py


def list_sources(src: Path, dst: Path, dataset: str) -> List[Tuple[Path, Path]]:
    """(frame folder or video file, hdf5 path) pairs; a frame folder wins over a video of the
    same name."""
    folders = [src] if dataset == 'activitynet' else sorted(
        p for p in src.iterdir() if p.is_dir() and not p.name.startswith('.'))
    pairs = []
    for folder in folders:
        dst_folder = dst if folder == src else dst / folder.name
        sources = {stem: folder / name
                   for stem, name in list_video_files(folder, video_extensions(dataset)).items()}
        sources.update((path.name, path) for path in folder.iterdir()
                       if path.is_dir() and not path.name.startswith('.'))
        pairs += [(source, dst_folder / f'{name}.hdf5') for name, source in sorted(sources.items())]
    return pairs


def frame_files(frame_dir: Path) -> List[Path]:
    """`image_00001.jpg ... image_0000n.jpg` of a frame folder; VideoError if there is none
    or a number is missing (the hdf5 index of frame k is k-1, so gaps cannot be packed)."""
    numbered = {}
    for path in frame_dir.iterdir():
        match = FRAME_NAME.fullmatch(path.name)
        if match:
            numbered[int(match[1])] = path
    if not numbered:
        raise VideoError('no image_*.jpg frames')
    for k in range(1, len(numbered) + 1):
        if k not in numbered:
            raise VideoError(f'frames are not numbered 1 to {len(numbered)}: '
                             f'image_{k:05d}.jpg is missing')
    return [numbered[k] for k in range(1, len(numbered) + 1)]


def hdf5_n_frames(hdf5_path: Path) -> int:
    """Frames of a complete hdf5 video (0 if the file is missing, unreadable or has an empty
    frame, as an interrupted reference run leaves it)."""
    h5py = import_h5py()
    try:
        with h5py.File(hdf5_path, 'r') as f:
            video = f['video']
            n = len(video)
            return n if n and len(video[n - 1]) else 0
    except (OSError, KeyError):
        return 0


def write_hdf5(hdf5_path: Path, frames: List[Path]) -> None:
    """Write the JPEG files `frames` as dataset `video` of `hdf5_path`, through a .part file."""
    import numpy as np
    h5py = import_h5py()
    data = np.empty(len(frames), dtype=object)
    for i, path in enumerate(frames):
        data[i] = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    part = hdf5_path.with_name(f'.{hdf5_path.name}.part')
    hdf5_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with h5py.File(part, 'w') as f:
            f.create_dataset('video', (len(frames),), dtype=h5py.vlen_dtype(np.dtype('uint8')),
                             data=data)
        os.replace(part, hdf5_path)
    finally:
        if part.exists():
            part.unlink()


def video_process(source: Path, hdf5_path: Path, fps: Optional[float], size: int) -> str:
    """Pack one frame folder or video; returns 'done' or 'skipped', raises VideoError."""
    n_done = hdf5_n_frames(hdf5_path) if hdf5_path.exists() else 0
    if source.is_dir():
        frames = frame_files(source)
        if n_done == len(frames):
            return 'skipped'
        write_hdf5(hdf5_path, frames)
        return 'done'
    if n_done and has_all_frames(source, n_done, fps):
        return 'skipped'
    with tempfile.TemporaryDirectory(prefix='generate_video_hdf5_') as tmp:
        extract_frames(source, Path(tmp), fps, size)
        write_hdf5(hdf5_path, frame_files(Path(tmp)))
    return 'done'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m util_scripts.generate_video_hdf5',
                                     description='Pack the JPEG frames of videos into hdf5 files.')
    parser.add_argument('dir_path', type=Path,
                        help='directory of the frame folders of generate_video_jpgs, or of the '
                             'videos')
    parser.add_argument('dst_path', type=Path, help='directory of the hdf5 files (created)')
    parser.add_argument('dataset', choices=DATASETS,
                        help='decides the video extension (.avi or .mp4) and the folder layout')
    parser.add_argument('--n_jobs', type=int, default=-1,
                        help='parallel conversions; -1 (default): one per CPU core')
    parser.add_argument('--fps', type=float, default=-1,
                        help='videos: frame rate of the frames; -1 (default): the original rate')
    parser.add_argument('--size', type=int, default=240,
                        help='videos: length of the shorter side of the frames')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    n_jobs, fps = job_options(args)
    import_h5py()
    pairs = list_sources(require_dir(args.dir_path, 'source directory'), args.dst_path,
                         args.dataset)
    if not pairs:
        layout = '<video>' if args.dataset == 'activitynet' else '<class>/<video>'
        raise UserError(f'no frame folders or videos found in {args.dir_path} ({args.dataset} '
                        f'expects {layout}/ or {layout}{DATASET_VIDEO_EXTENSIONS[args.dataset]})')
    args.dst_path.mkdir(parents=True, exist_ok=True)
    counts, failures = convert_all(
        pairs, lambda source, hdf5_path: video_process(source, hdf5_path, fps, args.size),
        n_jobs, errors=(VideoError, OSError))
    report(len(pairs), counts, failures, f'hdf5 files in {args.dst_path}',
           'could not be converted')


if __name__ == '__main__':
    run_cli(main)
