"""Write the UCF-101 annotation json of each of the three official splits.

    python -m util_scripts.ucf101_json ANNOT_DIR VIDEO_DIR DST_DIR [--n_jobs N]

ANNOT_DIR holds `classInd.txt` ("1 ApplyEyeMakeup" lines), `trainlist0{1,2,3}.txt`
("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1" lines) and `testlist0{1,2,3}.txt`
("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi" lines). VIDEO_DIR is the output of
generate_video_jpgs (frames are counted there), or the videos themselves,
`<class>/<video>.avi` (each decoded once to count its frames, on N processes: the count
generate_video_jpgs would write, for `--file_type video`). Writes `DST_DIR/ucf101_0{1,2,3}.json`,
one per split whose two lists are in ANNOT_DIR.
"""
import argparse
from pathlib import Path
from typing import Dict, List, Optional

from utils import UserError, run_cli
from .utils import (add_n_jobs_argument, add_segments, check_dst_dir, new_entry, read_lines,
                    require_dir, write_annotation)

N_SPLITS = 3


def load_labels(class_ind_path: Path) -> List[str]:
    """Class names in the order of `classInd.txt` ("<index> <name>" lines)."""
    labels = []
    for line_number, line in enumerate(read_lines(class_ind_path), 1):
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise UserError(f'{class_ind_path} line {line_number}: expected "<index> <class>", '
                            f'got {line!r}')
        labels.append(fields[1])
    return labels


def load_split_list(list_path: Path, subset: str, labels: List[str]) -> Dict[str, dict]:
    """Database entries of one train/test list; the class is the folder part of each path."""
    database = {}
    for line_number, line in enumerate(read_lines(list_path), 1):
        relative_path = line.split()[0]
        if '/' not in relative_path:
            raise UserError(f'{list_path} line {line_number}: expected "<class>/<video>.avi", '
                            f'got {line!r}')
        label = relative_path.split('/')[0]
        if label not in labels:
            raise UserError(f'{list_path} line {line_number}: class {label!r} is not in '
                            'classInd.txt')
        database[Path(relative_path).stem] = new_entry(subset, label)
    return database


def convert_ucf101_csv_to_json(class_ind_path: Path, train_list_path: Path, test_list_path: Path,
                               video_dir_path: Path, dst_json_path: Path,
                               n_jobs: Optional[int] = None) -> None:
    """One split: the training list and the test list (as `validation`) in one json."""
    labels = load_labels(class_ind_path)
    database = load_split_list(train_list_path, 'training', labels)
    database.update(load_split_list(test_list_path, 'validation', labels))
    n_missing = add_segments(database, video_dir_path, n_jobs=n_jobs)
    write_annotation(dst_json_path, labels, database, n_missing)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util_scripts.ucf101_json',
                                     description='Make UCF-101 annotation json files.')
    parser.add_argument('dir_path', type=Path,
                        help='directory with classInd.txt, trainlist0{1,2,3}.txt, '
                             'testlist0{1,2,3}.txt')
    parser.add_argument('video_path', type=Path,
                        help='directory of the jpg frame folders <class>/<video>/, or of the '
                             'videos <class>/<video>.avi')
    parser.add_argument('dst_path', type=Path,
                        help='directory of the json files (created if missing)')
    add_n_jobs_argument(parser)
    args = parser.parse_args(argv)

    require_dir(args.dir_path, 'annotation directory')
    require_dir(args.video_path, 'video directory')
    splits = present_splits(args.dir_path)
    check_dst_dir(args.dst_path, 'ucf101_0{1,2,3}.json')
    for split in splits:
        convert_ucf101_csv_to_json(args.dir_path / 'classInd.txt',
                                   args.dir_path / f'trainlist0{split}.txt',
                                   args.dir_path / f'testlist0{split}.txt',
                                   args.video_path, args.dst_path / f'ucf101_0{split}.json',
                                   args.n_jobs)
    if len(splits) < N_SPLITS:
        print(f'splits {", ".join(map(str, splits))} written (the lists of the others are not '
              f'in {args.dir_path})')


def present_splits(dir_path: Path) -> List[int]:
    """The splits whose trainlist0N.txt and testlist0N.txt are both in `dir_path`; an error
    when none is, or when one of a split's two lists is missing."""
    splits = []
    for split in range(1, N_SPLITS + 1):
        lists = [dir_path / f'{kind}list0{split}.txt' for kind in ('train', 'test')]
        there = [path.is_file() for path in lists]
        if all(there):
            splits.append(split)
        elif any(there):
            raise UserError(f'{lists[there.index(False)]} not found (split {split} needs both '
                            f'{lists[0].name} and {lists[1].name})')
    if not splits:
        raise UserError(f'no split lists (trainlist0N.txt and testlist0N.txt) in {dir_path}')
    return splits


if __name__ == '__main__':
    run_cli(main)
