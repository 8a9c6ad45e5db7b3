"""Write the Kinetics annotation json from the crawler's csv files.

    python -m util_scripts.kinetics_json CSV_DIR N_CLASSES VIDEO_DIR {jpg,hdf5,video} DST_JSON
        [--n_jobs N]

CSV_DIR holds `kinetics-{N_CLASSES}_train.csv` and `_val.csv` (columns label, youtube_id,
time_start, time_end, ...) and optionally `_test.csv` (no label). A video's id is
`<youtube_id>_<time_start:06d>_<time_end:06d>`, the name the crawler gives its file; test videos
live in `VIDEO_DIR/test/`. Classes are in order of first appearance in the training csv.
VIDEO_DIR holds frame folders (jpg), `<video>.hdf5` files (hdf5) or the videos
`<class>/<video>.mp4` (video: decoded to count their frames, on N processes).
"""
import argparse
import csv
from pathlib import Path
from typing import Dict, List, Optional

from utils import UserError, run_cli
from .utils import add_n_jobs_argument, add_segments, new_entry, require_dir, write_annotation


def read_csv(csv_path: Path, columns: List[str]) -> List[dict]:
    """The rows of a csv file with a header, checking that it has `columns`."""
    try:
        with csv_path.open(newline='', encoding='utf-8') as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError as e:
        raise UserError(f'file not found: {csv_path}') from e
    missing = [c for c in columns if rows and c not in rows[0]]
    if not rows or missing:
        raise UserError(f'{csv_path}: expected a header and rows with columns {", ".join(columns)}')
    return rows


def video_id(row: dict, csv_path: Path) -> str:
    try:
        start, end = int(float(row['time_start'])), int(float(row['time_end']))
    except ValueError as e:
        raise UserError(f'{csv_path}: bad time_start/time_end in {row}') from e
    return f'{row["youtube_id"]}_{start:06d}_{end:06d}'


def convert_csv_to_dict(csv_path: Path, subset: str) -> Dict[str, dict]:
    """Database entries of one csv; testing rows have no label."""
    columns = ['youtube_id', 'time_start', 'time_end']
    if subset != 'testing':
        columns.insert(0, 'label')
    return {video_id(row, csv_path): new_entry(subset, row['label'] if 'label' in columns else None)
            for row in read_csv(csv_path, columns)}


def load_labels(train_csv_path: Path) -> List[str]:
    """Class names in order of first appearance (the crawler's csv lists them sorted)."""
    return list(dict.fromkeys(row['label'] for row in read_csv(train_csv_path, ['label'])))


def convert_kinetics_csv_to_json(train_csv_path: Path, val_csv_path: Path, test_csv_path: Path,
                                 video_dir_path: Path, video_type: str,
                                 dst_json_path: Path, n_jobs: Optional[int] = None) -> None:
    labels = load_labels(train_csv_path)
    database = convert_csv_to_dict(train_csv_path, 'training')
    database.update(convert_csv_to_dict(val_csv_path, 'validation'))
    if test_csv_path.exists():
        database.update(convert_csv_to_dict(test_csv_path, 'testing'))
    n_missing = add_segments(database, video_dir_path, video_type, n_jobs)
    write_annotation(dst_json_path, labels, database, n_missing)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util_scripts.kinetics_json',
                                     description='Make the Kinetics annotation json file.')
    parser.add_argument('dir_path', type=Path,
                        help='directory with kinetics-N_train.csv, kinetics-N_val.csv '
                             '(and optionally kinetics-N_test.csv)')
    parser.add_argument('n_classes', type=int, help='400, 600 or 700 (Kinetics-400/600/700)')
    parser.add_argument('video_path', type=Path,
                        help='directory of the videos (jpg frame folders, hdf5 files or video '
                             'files)')
    parser.add_argument('video_type', choices=['jpg', 'hdf5', 'video'],
                        help='how the videos are stored')
    parser.add_argument('dst_path', type=Path, help='path of the json file to write')
    add_n_jobs_argument(parser)
    args = parser.parse_args(argv)

    require_dir(args.dir_path, 'csv directory')
    require_dir(args.video_path, 'video directory')
    prefix = args.dir_path / f'kinetics-{args.n_classes}'
    convert_kinetics_csv_to_json(Path(f'{prefix}_train.csv'), Path(f'{prefix}_val.csv'),
                                 Path(f'{prefix}_test.csv'), args.video_path, args.video_type,
                                 args.dst_path, args.n_jobs)


if __name__ == '__main__':
    run_cli(main)
