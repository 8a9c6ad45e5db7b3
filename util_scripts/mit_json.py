"""Write the Moments in Time annotation json.

    python -m util_scripts.mit_json ANNOT_DIR VIDEO_DIR DST_JSON [--n_jobs N]

ANNOT_DIR holds `moments_categories.txt` ("<class>,<index>" lines, in index order),
`trainingSet.csv` and `validationSet.csv` ("<class>/<video>.mp4,<class>,..." rows, no header)
and optionally `testingSet.csv` ("<video>.mp4" rows; those videos live in `VIDEO_DIR/test/`).
VIDEO_DIR holds the frame folders of generate_video_jpgs, or the videos `<class>/<video>.mp4`
(decoded to count their frames).
"""
import argparse
import csv
from pathlib import Path
from typing import Dict, List, Optional

from utils import UserError, run_cli
from .utils import add_n_jobs_argument, add_segments, new_entry, require_dir, write_annotation


def read_rows(csv_path: Path) -> List[List[str]]:
    """The non-empty rows of a csv file without a header."""
    try:
        with csv_path.open(newline='', encoding='utf-8') as f:
            return [row for row in csv.reader(f) if row]
    except FileNotFoundError as e:
        raise UserError(f'file not found: {csv_path}') from e


def convert_csv_to_dict(csv_path: Path, subset: str, labels: List[str]) -> Dict[str, dict]:
    """Database entries of one csv: labelled `<class>/<video>` rows, or bare test `<video>` rows."""
    n_parts = 1 if subset == 'testing' else 2
    database = {}
    for line_number, row in enumerate(read_rows(csv_path), 1):
        parts = row[0].split('/')
        if len(parts) != n_parts or (subset != 'testing' and len(row) < 2):
            expected = '<video>.mp4' if subset == 'testing' else '<class>/<video>.mp4,<class>'
            raise UserError(f'{csv_path} line {line_number}: expected "{expected}", got {row}')
        label = None if subset == 'testing' else row[1]
        if label is not None and label not in labels:
            raise UserError(f'{csv_path} line {line_number}: class {label!r} is not in '
                            'moments_categories.txt')
        database[Path(parts[-1]).stem] = new_entry(subset, label)
    return database


def load_labels(class_file_path: Path) -> List[str]:
    return [row[0] for row in read_rows(class_file_path)]


def convert_mit_csv_to_json(class_file_path: Path, train_csv_path: Path, val_csv_path: Path,
                            test_csv_path: Path, video_dir_path: Path, dst_json_path: Path,
                            n_jobs: Optional[int] = None) -> None:
    labels = load_labels(class_file_path)
    database = convert_csv_to_dict(train_csv_path, 'training', labels)
    database.update(convert_csv_to_dict(val_csv_path, 'validation', labels))
    if test_csv_path.exists():
        database.update(convert_csv_to_dict(test_csv_path, 'testing', labels))
    n_missing = add_segments(database, video_dir_path, n_jobs=n_jobs)
    write_annotation(dst_json_path, labels, database, n_missing)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util_scripts.mit_json',
                                     description='Make the Moments in Time annotation json file.')
    parser.add_argument('dir_path', type=Path,
                        help='directory with moments_categories.txt, trainingSet.csv, '
                             'validationSet.csv (and optionally testingSet.csv)')
    parser.add_argument('video_path', type=Path,
                        help='directory of the jpg frame folders <class>/<video>/, or of the '
                             'videos <class>/<video>.mp4')
    parser.add_argument('dst_path', type=Path, help='path of the json file to write')
    add_n_jobs_argument(parser)
    args = parser.parse_args(argv)

    require_dir(args.dir_path, 'annotation directory')
    require_dir(args.video_path, 'video directory')
    convert_mit_csv_to_json(args.dir_path / 'moments_categories.txt',
                            args.dir_path / 'trainingSet.csv', args.dir_path / 'validationSet.csv',
                            args.dir_path / 'testingSet.csv', args.video_path, args.dst_path,
                            args.n_jobs)


if __name__ == '__main__':
    run_cli(main)
