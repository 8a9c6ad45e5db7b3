"""Check that every video of an annotation json can be read as the datasets will read it.

    python -m util_scripts.verify_dataset --annotation_path A.json --video_path DIR
        [--file_type jpg|hdf5|video] [--sample_duration N] [--subset training] [--n_jobs N]

Each video of the annotation (of `--subset`, default all) is found where the datasets look for
it (`DIR/<label>/<video_id>` and its file type's layout, `DIR/test/` for unlabelled videos, or
the json's own "video_path") and every frame of it is decoded. One line is printed per problem:

    missing         no frame folder / hdf5 file / video file
    frame count     the video has a different number of frames than its segment says (or
                    fewer than the segment's last frame), or frame files of the segment are
                    missing
    undecodable     frames that do not decode (named), or a file that cannot be opened
    short           fewer frames than --sample_duration (training pads a clip by looping)

then a summary line. The exit status is 1 when anything is wrong, 0 when every video is fine.
Videos are checked on --n_jobs processes, with a progress bar.
"""
import argparse
import io
import multiprocessing
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from tqdm import tqdm

from utils import UserError, run_cli

KINDS = ('missing', 'frame count', 'undecodable', 'short')
MAX_NAMED = 5  # frames named in one line; the rest are counted


def not_decoding(names: List[str], prefix: str = '') -> str:
    """"2 frames do not decode: image_00004.jpg, image_00007.jpg"."""
    if len(names) == 1:
        return f'1 frame does not decode: {prefix}{names[0]}'
    return f'{len(names)} frames do not decode: {prefix}{name_frames(names)}'


def name_frames(names: List[str]) -> str:
    text = ', '.join(names[:MAX_NAMED])
    if len(names) > MAX_NAMED:
        text += f' and {len(names) - MAX_NAMED} more'
    return text


def count_problem(n_frames: int, start: int, end: int) -> Optional[str]:
    """The frame count against a segment [start, end): equal for a whole-video segment
    (starting at 1), covering it otherwise."""
    if (start == 1 and n_frames != end - 1) or end - 1 > n_frames:
        return (f'has {n_frames} frames, its segment [{start}, {end}] says '
                f'{"frames up to " if start != 1 else ""}{end - 1}')
    return None


def decode_jpeg(data, mode: str = 'RGB') -> Optional[str]:
    """Why an encoded image does not decode, or None."""
    from PIL import Image
    try:
        with Image.open(data) as img:
            img.convert(mode)
    except Exception as e:  # PIL raises many kinds for damaged files
        return str(e) or type(e).__name__
    return None


def check_jpg(path: Path, start: int, end: int) -> List[Tuple[str, str]]:
    from datasets.loader import image_name_formatter
    names = set(os.listdir(path))
    n_frames = sum(1 for name in names if name.startswith('image_') and name.endswith('.jpg'))
    problems = []
    problem = count_problem(n_frames, start, end)
    if problem:
        problems.append(('frame count', problem))
    absent, bad = [], []
    for k in range(start, end):
        name = image_name_formatter(k)
        if name not in names:
            absent.append(name)
        else:
            with (path / name).open('rb') as f:
                if decode_jpeg(f):
                    bad.append(name)
    if absent and not problem:
        problems.append(('frame count', f'frames of its segment are missing: '
                                        f'{name_frames(absent)}'))
    if bad:
        problems.append(('undecodable', not_decoding(bad)))
    return problems


def check_hdf5(path: Path, start: int, end: int) -> List[Tuple[str, str]]:
    import h5py
    try:
        f = h5py.File(path, 'r')
    except OSError as e:
        return [('undecodable', f'cannot be opened: {e}')]
    with f:
        if 'video' not in f:
            return [('undecodable', 'has no dataset "video"')]
        frames = f['video']
        problems = []
        problem = count_problem(len(frames), start, end)
        if problem:
            problems.append(('frame count', problem))
        bad = [str(k) for k in range(max(start, 1), min(end, len(frames) + 1))
               if decode_jpeg(io.BytesIO(frames[k - 1].tobytes()))]
        if bad:
            problems.append(('undecodable', not_decoding(bad, 'frame ' if len(bad) == 1
                                                         else 'frames ')))
    return problems


READ_CHUNK = 64  # frames of a video file decoded per read: the memory of one chunk


def check_video(path: Path, start: int, end: int) -> List[Tuple[str, str]]:
    from datasets.video_reader import VideoReadError, VideoReader
    try:
        reader = VideoReader(path)
    except VideoReadError as e:
        return [('undecodable', str(e))]
    bad = []
    try:  # as the loader reads clips, a chunk at a time: every frame of the video
        for first in range(1, reader.n_frames + 1, READ_CHUNK):
            frames = reader.read(range(first, min(first + READ_CHUNK, reader.n_frames + 1)),
                                 as_array=True)
            bad += sorted(k for k, frame in frames.items() if isinstance(frame, str))
        n_decoded = reader.decodable - sum(1 for k in bad if k <= reader.decodable)
    finally:
        reader.close()
    problems = []
    if n_decoded == 0:
        return [('undecodable', 'no frame decodes')]
    problem = count_problem(n_decoded, start, end)
    if problem:
        problems.append(('frame count', problem))
    if bad:
        problems.append(('undecodable', not_decoding([str(k) for k in bad],
                                                     'frame ' if len(bad) == 1 else 'frames ')))
    return problems


CHECKS = {'jpg': check_jpg, 'hdf5': check_hdf5, 'video': check_video}


def check(task) -> List[Tuple[str, str]]:
    """[(kind, problem)] of one video: (file type, path, start, end, sample_duration)."""
    file_type, path, start, end, sample_duration = task
    try:
        problems = CHECKS[file_type](Path(path), start, end)
    except OSError as e:
        problems = [('undecodable', f'cannot be read: {e}')]
    if end - start < sample_duration:
        problems.append(('short', f'is shorter than --sample_duration {sample_duration}: '
                                  f'{max(end - start, 0)} frames'))
    return problems


def list_videos(annotation_path: Path, video_path: Path, file_type: str,
                subset: Optional[str]) -> Tuple[list, str]:
    """([(video_id, its path or None when it is not there, the path to name, start, end)],
    what a video is: 'frame folder', ...), in the order of the json."""
    from datasets import get_loader_and_formatter
    from datasets.annotation import TEST_LABEL, _Listings, read_json_database
    _, layout = get_loader_and_formatter('rgb', file_type)
    listings = _Listings(layout)
    videos = []

    def add(video_id, value):
        if not isinstance(value, dict):
            raise UserError(f'{annotation_path}: video {video_id} is not a json object')
        if subset is not None and value.get('subset') != subset:
            return
        annotation = value.get('annotations', {})
        if not isinstance(annotation, dict) or 'segment' not in annotation:
            raise UserError(f'{annotation_path}: video {video_id} has no "segment"')
        start, end = (int(x) for x in annotation['segment'][:2])
        if start == 0 and end > 0:  # the reference's hdf5 segment [0, n]: frames 1..n
            start, end = 1, end + 1
        label = annotation.get('label', TEST_LABEL)
        if 'video_path' in value:
            path = Path(value['video_path'])
            found = path if listings.exists(path) else None
        else:
            path = Path(layout(video_path, label, video_id))
            variant = listings.variant(video_path, label, video_id)
            found = None if variant is None else layout.path(video_path, label, video_id,
                                                             variant)
        videos.append((video_id, None if found is None else str(found), str(path), start, end))

    read_json_database(annotation_path, add)
    return videos, layout.what


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util_scripts.verify_dataset',
                                     description='Check every video of an annotation json.')
    parser.add_argument('--annotation_path', type=Path, required=True)
    parser.add_argument('--video_path', type=Path, required=True,
                        help='directory of the videos, as main.py --video_path')
    parser.add_argument('--file_type', default='jpg', choices=['jpg', 'hdf5', 'video'])
    parser.add_argument('--sample_duration', type=int, default=0,
                        help='report videos with fewer frames (default 0: none)')
    parser.add_argument('--subset', choices=['training', 'validation', 'testing'],
                        help='check only this subset (default: every video)')
    parser.add_argument('--n_jobs', type=int, default=os.cpu_count() or 1,
                        help='processes (default: one per CPU core)')
    args = parser.parse_args(argv)
    if args.n_jobs < 1:
        raise UserError(f'--n_jobs must be positive, got {args.n_jobs}')
    if not args.video_path.is_dir():
        raise UserError(f'video directory not found: {args.video_path}')
    if args.file_type == 'hdf5':
        try:
            import h5py  # noqa: F401
        except ImportError as e:
            raise UserError('--file_type hdf5 needs h5py: pip install h5py') from e
    if args.file_type == 'video':
        from datasets.video_reader import import_av
        import_av()

    videos, what = list_videos(args.annotation_path, args.video_path, args.file_type,
                               args.subset)
    counts = dict.fromkeys(KINDS, 0)
    n_bad = 0

    def report(video_id, path, problems):
        nonlocal n_bad
        if problems:
            n_bad += 1
        for kind, problem in problems:
            counts[kind] += 1
            tqdm.write(f'{video_id} ({path}): {problem}')

    tasks = [(args.file_type, found, start, end, args.sample_duration)
             for _, found, _, start, end in videos if found is not None]
    present = [(video_id, found) for video_id, found, _, _, _ in videos if found is not None]
    for video_id, found, path, start, end in videos:
        if found is None:  # nothing to count: not "shorter" than anything
            report(video_id, path, [('missing', f'no {what}')])
    context = multiprocessing.get_context('fork')
    with context.Pool(args.n_jobs) if args.n_jobs > 1 else _Inline() as pool:
        results = pool.imap(check, tasks, chunksize=4)
        for (video_id, path), problems in tqdm(zip(present, results), total=len(tasks),
                                               unit='video', file=sys.stderr):
            report(video_id, path, problems)

    if n_bad:
        found = ', '.join(f'{counts[k]} {k}' for k in KINDS if counts[k])
        print(f'{len(videos)} videos checked: {n_bad} with problems ({found})')
        sys.exit(1)
    print(f'{len(videos)} videos checked: all readable, frame counts as annotated'
          + (f', none shorter than {args.sample_duration} frames' if args.sample_duration
             else ''))


class _Inline:
    """A pool of no processes (`--n_jobs 1`)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap(fn, items, chunksize=1):
        return map(fn, items)


if __name__ == '__main__':
    run_cli(main)
