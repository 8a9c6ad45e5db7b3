"""Helpers shared by the data-preparation scripts: ffmpeg, frame folders, annotation files."""
import argparse
import functools
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Union

from tqdm import tqdm

from utils import UserError

# The label folder of videos without a class (Kinetics' and MiT's test sets), as in the reference.
TEST_LABEL = 'test'


class VideoError(Exception):
    """ffmpeg could not read a video; the message says why (ffmpeg's last error line)."""


@functools.lru_cache(maxsize=1)
def find_ffmpeg() -> str:
    """The ffmpeg on PATH, else the binary bundled with the `imageio-ffmpeg` package."""
    path = shutil.which('ffmpeg')
    if path:
        return path
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as e:
        raise UserError('ffmpeg not found: install it (e.g. apt-get install ffmpeg) '
                        'or `pip install imageio-ffmpeg`') from e


def run_ffmpeg(args: List[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ffmpeg non-interactively with `args`, capturing its output."""
    command = [find_ffmpeg(), '-hide_banner', '-nostdin'] + [str(a) for a in args]
    return subprocess.run(command, capture_output=True, **kwargs)


@functools.lru_cache(maxsize=1)
def passthrough_args() -> List[str]:
    """ffmpeg's options for "write every decoded frame once, no repeats or drops to a constant
    rate": `-fps_mode passthrough` (ffmpeg 5.1 on), `-vsync passthrough` before it."""
    probe = run_ffmpeg(['-v', 'error', '-f', 'lavfi', '-i', 'nullsrc=s=16x16:d=0.04',
                        '-fps_mode', 'passthrough', '-f', 'null', '-'])
    if probe.returncode == 0:
        return ['-fps_mode', 'passthrough']
    return ['-vsync', 'passthrough']


def last_error_line(stderr: bytes, video_path: Path) -> str:
    """ffmpeg's last message about a video, without the path it starts with."""
    lines = [line.strip() for line in stderr.decode('utf-8', 'replace').splitlines()
             if line.strip()]
    if not lines:
        return 'ffmpeg failed without a message'
    return lines[-1].removeprefix(f'{video_path}: ')


def probe_video(video_path: Path) -> Dict[str, Optional[float]]:
    """Duration (s) and frame rate of a video's first video stream, read from its header.

    Either may be None when the header does not say. Raises VideoError when ffmpeg cannot open
    the file or it has no video stream. (`ffmpeg -i` alone, so ffprobe is not needed.)
    """
    result = run_ffmpeg(['-i', video_path])
    text = result.stderr.decode('utf-8', 'replace')
    stream = re.search(r'Stream #.*?: Video: (.*)', text)
    if stream is None:
        raise VideoError(last_error_line(result.stderr, video_path))
    duration = re.search(r'Duration: (\d+):(\d+):(\d+(?:\.\d+)?)', text)
    # "25 fps" is the stream's average rate; "tbr" is ffmpeg's guess when that is missing.
    rate = (re.search(r'([\d.]+)(k?) fps', stream.group(1))
            or re.search(r'([\d.]+)(k?) tbr', stream.group(1)))
    return {
        'duration': (int(duration[1]) * 3600 + int(duration[2]) * 60 + float(duration[3])
                     if duration else None),
        'fps': float(rate[1]) * (1000 if rate[2] else 1) if rate else None,
    }


def count_resampled_frames(video_path: Path, fps: float) -> int:
    """The number of frames ffmpeg's `fps` filter makes of a video (generate_video_jpgs --fps);
    without resampling, datasets.video_reader.count_frames counts a video's frames."""
    result = run_ffmpeg(['-v', 'error', '-i', video_path, '-map', '0:v:0', '-vf', f'fps={fps}',
                         '-f', 'null', '-progress', 'pipe:1', '-nostats', '-'])
    counts = re.findall(rb'^frame=(\d+)', result.stdout, flags=re.MULTILINE)
    if result.returncode != 0 or not counts:
        raise VideoError(last_error_line(result.stderr, video_path))
    return int(counts[-1])


def get_n_frames(video_dir: Path) -> int:
    """Number of `image_*.jpg` files in a frame folder (0 if there is no such folder).

    A count, as the reference does, not the largest index: the loader reads
    `image_00001.jpg ... image_{n}.jpg`, which a folder written by ffmpeg has without gaps.
    """
    if not video_dir.is_dir():
        return 0
    return sum(1 for _ in video_dir.glob('image_*.jpg'))


def get_n_frames_hdf5(video_path: Path) -> int:
    """Number of frames in an hdf5 video (its dataset `video`, the reference's hdf5 layout)."""
    try:
        import h5py
    except ImportError as e:
        raise UserError('reading hdf5 videos needs h5py: pip install h5py') from e
    with h5py.File(video_path, 'r') as f:
        return len(f['video'])


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f'{what} not found: {path}')
    return path


def read_lines(path: Path) -> List[str]:
    """The non-blank lines of a text file, stripped (the UCF-101 lists have CRLF endings)."""
    try:
        text = path.read_text(encoding='utf-8-sig')
    except FileNotFoundError as e:
        raise UserError(f'file not found: {path}') from e
    except UnicodeDecodeError as e:
        raise UserError(f'{path} is not a text file: {e}') from e
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_dst_dir(dst_dir: Path, pattern: str) -> Path:
    """Create the destination folder of per-split json files; a `*.json` name is a likely slip."""
    if dst_dir.suffix == '.json':
        raise UserError(f'{dst_dir}: the destination is a directory; {pattern} are written into it')
    dst_dir.mkdir(parents=True, exist_ok=True)
    return dst_dir


def new_entry(subset: str, label: Optional[str]) -> dict:
    """A database entry; videos without a class (test sets) get empty annotations."""
    return {'subset': subset, 'annotations': {} if label is None else {'label': label}}


# What add_segments looks for under the video directory, by the `video_type` of the scripts.
VIDEO_TYPES = ('auto', 'jpg', 'hdf5', 'video')

# Frame counts of video files already decoded in this process, by (path, size, mtime): the
# per-split json files of UCF-101 and HMDB-51 share their videos.
_decoded_counts: Dict[tuple, Union[int, str]] = {}


def _count_video_frames(path: Path) -> Union[int, str]:
    """The frames a video decodes to, or why it cannot be decoded (for a worker process)."""
    from datasets.video_reader import VideoReadError, count_frames
    try:
        return count_frames(path)
    except VideoReadError as e:
        return str(e)


def count_video_frames(paths: List[Path],
                       n_jobs: Optional[int] = None) -> Dict[Path, Union[int, str]]:
    """{video file: the number of frames it decodes to (what generate_video_jpgs writes), or why
    it does not decode}, decoded on `n_jobs` processes (default: one per CPU core), with a
    progress bar."""
    from datasets.video_reader import import_av
    import_av()  # a missing PyAV is one error line, not one per video
    keys = {}
    for path in paths:
        stat = path.stat()
        keys[path] = (str(path), stat.st_size, stat.st_mtime_ns)
    todo = sorted({path for path in paths if keys[path] not in _decoded_counts})
    n_jobs = min(n_jobs or os.cpu_count() or 1, max(len(todo), 1))
    if todo:
        bar = tqdm(total=len(todo), unit='video', desc='counting frames')
        with bar:
            if n_jobs == 1:
                results = map(_count_video_frames, todo)
            else:
                pool = ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context('fork'))
                results = pool.map(_count_video_frames, todo, chunksize=8)
            try:
                for path, result in zip(todo, results):
                    _decoded_counts[keys[path]] = result
                    bar.update()
            finally:
                if n_jobs > 1:
                    pool.shutdown(wait=True, cancel_futures=True)
    return {path: _decoded_counts[keys[path]] for path in paths}


def add_n_jobs_argument(parser) -> None:
    parser.add_argument('--n_jobs', type=positive_jobs, default=None,
                        help='processes decoding video files to count their frames (default: '
                             'one per CPU core)')


def positive_jobs(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def find_video(folder: Path, video_id: str, video_type: str = 'auto', video_files=None):
    """(kind, path) of a video under its label folder: its frame folder ('jpg'), hdf5 file
    ('hdf5') or video file ('video'), looked for in that order as `video_type` allows;
    (None, None) when there is none. `video_files`: a datasets.layout.VideoFileLayout, whose
    folder listings are kept between calls."""
    if video_files is None:
        from datasets.layout import VideoFileLayout
        video_files = VideoFileLayout()
    if video_type in ('auto', 'jpg') and (folder / video_id).is_dir():
        return 'jpg', folder / video_id
    if video_type in ('auto', 'hdf5') and (folder / f'{video_id}.hdf5').is_file():
        return 'hdf5', folder / f'{video_id}.hdf5'
    if video_type in ('auto', 'video'):
        path = video_files.find(folder, video_id)
        if path is not None:
            return 'video', path
    return None, None


def add_segments(database: Dict[str, dict], video_dir: Path, video_type: str = 'auto',
                 n_jobs: Optional[int] = None) -> int:
    """Give every video its frame range from `video_dir/<label or "test">/<video_id>`: a frame
    folder of generate_video_jpgs (its images counted), an hdf5 file (its frames counted) or a
    video file `<video_id>.avi`, `.mp4`, ... (decoded to count its frames, on `n_jobs`
    processes), whichever is there (`video_type` 'auto'), or only the one kind `video_type`
    names.

    The segment is `[1, n_frames + 1]` (1-based, end exclusive) for every kind: frame k is
    `image_0000k.jpg`, hdf5 index k-1, the k-th frame decoded. (The reference writes `[0,
    n_frames]` for hdf5 and reads index k; the datasets read such segments as `[1, n + 1]`.)
    A video that is not there, or does not decode, keeps `[1, 1]`, which the datasets skip, as
    the reference does. Returns the number of videos not there; those that do not decode are
    listed on stderr.
    """
    from datasets.layout import VideoFileLayout
    if video_type not in VIDEO_TYPES:
        raise ValueError(f'video_type must be one of {VIDEO_TYPES}, not {video_type!r}')
    video_files = VideoFileLayout()
    n_missing, to_decode = 0, {}
    for video_id, entry in database.items():
        folder = video_dir / entry['annotations'].get('label', TEST_LABEL)
        kind, path = find_video(folder, video_id, video_type, video_files)
        if kind == 'hdf5':
            entry['annotations']['segment'] = [1, get_n_frames_hdf5(path) + 1]
        elif kind == 'jpg':
            entry['annotations']['segment'] = [1, get_n_frames(path) + 1]
        else:
            entry['annotations']['segment'] = [1, 1]
            if kind == 'video':
                to_decode[video_id] = path
            else:
                n_missing += 1
    counts = count_video_frames(list(to_decode.values()), n_jobs) if to_decode else {}
    n_failed = 0
    for video_id, path in to_decode.items():
        if isinstance(counts[path], int):
            database[video_id]['annotations']['segment'] = [1, counts[path] + 1]
        else:
            n_failed += 1
            print(f'does not decode: {path}: {counts[path]}', file=sys.stderr)
    if n_failed:
        print(f'warning: {n_failed} of {len(to_decode)} video files do not decode (listed '
              'above); they keep an empty segment and the datasets skip them', file=sys.stderr)
    return n_missing


def write_annotation(dst_path: Path, labels: List[str], database: Dict[str, dict],
                     n_missing: int) -> None:
    """Write an annotation json (README: "Data and annotation format") and say what is in it,
    in one line."""
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    with dst_path.open('w') as f:
        json.dump({'labels': labels, 'database': database}, f)
    subsets = {}
    for entry in database.values():
        subsets[entry['subset']] = subsets.get(entry['subset'], 0) + 1
    counts = ', '.join(f'{n} {subset}' for subset, n in subsets.items())
    print(f'wrote {dst_path}: {len(labels)} classes, {counts} videos')
    if n_missing:
        print(f'warning: {n_missing} of {len(database)} videos have no frame folder or video file '
              'in the video directory; they keep an empty segment and the datasets skip them',
              file=sys.stderr)
