"""Write the HMDB-51 annotation json of each of the three official splits.

    python -m util_scripts.hmdb51_json ANNOT_DIR VIDEO_DIR DST_DIR [--n_jobs N]

ANNOT_DIR holds the split files `<class>_test_split{1,2,3}.txt`, whose lines are
"<video>.avi <id>" with id 1 = training, 2 = testing (written as `validation`), 0 = unused.
Classes are the sorted class names of those files. VIDEO_DIR holds the frame folders of
generate_video_jpgs, or the videos `<class>/<video>.avi` (decoded to count their frames).
Writes `DST_DIR/hmdb51_{1,2,3}.json`.
"""
import argparse
import re
from pathlib import Path
from typing import Dict, List, Optional

from utils import UserError, run_cli
from .utils import (add_n_jobs_argument, add_segments, check_dst_dir, new_entry, read_lines,
                    require_dir, write_annotation)

N_SPLITS = 3
SPLIT_FILE = re.compile(r'(?P<label>.+)_test_split(?P<split>\d+)\.txt')
SUBSETS = {'1': 'training', '2': 'validation'}


def list_split_files(dir_path: Path) -> List[re.Match]:
    matches = [SPLIT_FILE.fullmatch(p.name) for p in sorted(dir_path.iterdir())]
    matches = [m for m in matches if m]
    if not matches:
        raise UserError(f'no <class>_test_split<N>.txt files in {dir_path}')
    return matches


def get_labels(dir_path: Path) -> List[str]:
    return sorted({m['label'] for m in list_split_files(dir_path)})


def convert_csv_to_dict(dir_path: Path, split_index: int) -> Dict[str, dict]:
    """Database entries of one split, gathered from the split file of every class."""
    database = {}
    for match in list_split_files(dir_path):
        if int(match['split']) != split_index:
            continue
        path = dir_path / match.string
        for line_number, line in enumerate(read_lines(path), 1):
            fields = line.split()
            if len(fields) != 2 or fields[1] not in ('0', '1', '2'):
                raise UserError(f'{path} line {line_number}: expected "<video>.avi <0|1|2>", '
                                f'got {line!r}')
            if fields[1] in SUBSETS:
                database[Path(fields[0]).stem] = new_entry(SUBSETS[fields[1]], match['label'])
    if not database:
        raise UserError(f'no videos for split {split_index} in {dir_path}')
    return database


def convert_hmdb51_csv_to_json(dir_path: Path, split_index: int, video_dir_path: Path,
                               dst_json_path: Path, n_jobs: Optional[int] = None) -> None:
    labels = get_labels(dir_path)
    database = convert_csv_to_dict(dir_path, split_index)
    n_missing = add_segments(database, video_dir_path, n_jobs=n_jobs)
    write_annotation(dst_json_path, labels, database, n_missing)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util_scripts.hmdb51_json',
                                     description='Make HMDB-51 annotation json files.')
    parser.add_argument('dir_path', type=Path,
                        help='directory of the <class>_test_split{1,2,3}.txt files')
    parser.add_argument('video_path', type=Path,
                        help='directory of the jpg frame folders <class>/<video>/, or of the '
                             'videos <class>/<video>.avi')
    parser.add_argument('dst_dir_path', type=Path,
                        help='directory of the json files (created if missing)')
    add_n_jobs_argument(parser)
    args = parser.parse_args(argv)

    require_dir(args.dir_path, 'annotation directory')
    require_dir(args.video_path, 'video directory')
    check_dst_dir(args.dst_dir_path, 'hmdb51_{1,2,3}.json')
    for split in range(1, N_SPLITS + 1):
        convert_hmdb51_csv_to_json(args.dir_path, split, args.video_path,
                                   args.dst_dir_path / f'hmdb51_{split}.json', args.n_jobs)


if __name__ == '__main__':
    run_cli(main)
