"""Add each video's frame rate to the ActivityNet annotation json (its segments are in seconds).

    python -m util_scripts.add_fps_into_activitynet_json MP4_DIR JSON [DST_JSON] [--n_jobs N]

Videos are `MP4_DIR/v_<video_id>.mp4` (the crawler's names); `database[<video_id>]["fps"]` is set
from the video header. DST_JSON defaults to JSON itself. Videos that are not in the json are
counted and left out; unreadable ones are listed and make the exit status 1 (the json is still
written with the others).
"""
import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Tuple

from tqdm import tqdm

from utils import UserError, run_cli
from .utils import VideoError, probe_video, require_dir


def read_fps(video_path: Path) -> Tuple[Optional[float], str]:
    """The frame rate in the header, or None and the reason it cannot be read."""
    try:
        fps = probe_video(video_path)['fps']
    except VideoError as e:
        return None, str(e)
    return fps, '' if fps else 'no frame rate in the header'


def load_json(json_path: Path) -> dict:
    try:
        with json_path.open() as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise UserError(f'file not found: {json_path}') from e
    except json.JSONDecodeError as e:
        raise UserError(f'{json_path} is not valid json: {e}') from e
    if not isinstance(data, dict) or not isinstance(data.get('database'), dict):
        raise UserError(f'{json_path} has no "database"')
    return data


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util_scripts.add_fps_into_activitynet_json',
                                     description='Add frame rates to the ActivityNet json.')
    parser.add_argument('video_path', type=Path, help='directory of the v_<id>.mp4 videos')
    parser.add_argument('json_path', type=Path, help='ActivityNet annotation json')
    parser.add_argument('dst_json_path', type=Path, nargs='?',
                        help='where to write the result (default: overwrite JSON)')
    parser.add_argument('--n_jobs', type=int, default=os.cpu_count() or 1,
                        help='parallel ffmpeg processes (default: one per CPU core)')
    args = parser.parse_args(argv)

    data = load_json(args.json_path)
    videos = sorted(p for p in require_dir(args.video_path, 'video directory').iterdir()
                    if p.suffix == '.mp4' and not p.name.startswith('.'))
    database = data['database']
    # The crawler names a video `v_<id>.mp4`; the json knows it as `<id>`.
    ids = {video: video.stem.removeprefix('v_') for video in videos}
    known = [video for video in videos if ids[video] in database]
    with ThreadPoolExecutor(max_workers=max(args.n_jobs, 1)) as executor:
        rates = list(tqdm(executor.map(read_fps, known), total=len(known), unit='video'))
    failures = []
    for video, (fps, reason) in zip(known, rates):
        if fps is None:
            failures.append(f'failed: {video}: {reason}')
        else:
            database[ids[video]]['fps'] = fps

    dst_path = args.dst_json_path or args.json_path
    with dst_path.open('w') as f:
        json.dump(data, f)
    for failure in failures:
        print(failure, file=sys.stderr)
    n_failed = len(failures)
    print(f'wrote {dst_path}: fps of {len(known) - n_failed} videos; '
          f'{len(videos) - len(known)} videos not in {args.json_path.name} left out; '
          f'{n_failed} unreadable')
    if n_failed:
        raise UserError(f'{n_failed} videos could not be read by ffmpeg (listed above)')


if __name__ == '__main__':
    run_cli(main)
