"""Time and memory of building the training dataset of a Kinetics-size annotation.

    python -m util_scripts.benchmark_annotation DIR [--n_videos 700000] [--n_frames 300]
        [--n_classes 700] [--file_type jpg]

Writes (once; kept for the next run) a synthetic annotation json of `--n_videos` videos of
`--n_frames` frames in `--n_classes` classes, 90% training, and the videos' frame folders (empty:
only their names are looked at) or files under DIR, then builds
`datasets.get_training_data(...)` in a fresh process and prints the seconds it took and the
increase of the process's peak resident memory over its resident memory before the call.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def write_data(folder: Path, n_videos: int, n_frames: int, n_classes: int, file_type: str):
    annotation = folder / f'annotation_{n_videos}.json'
    tree = folder / file_type
    if annotation.exists() and (tree / '.complete').exists():
        return annotation, tree
    labels = [f'class {i:03d}' for i in range(n_classes)]
    suffix = {'jpg': '', 'hdf5': '.hdf5', 'video': '.mp4'}[file_type]
    for label in labels:
        (tree / label).mkdir(parents=True, exist_ok=True)
    with annotation.open('w') as f:
        f.write('{"labels": ' + json.dumps(labels) + ', "database": {')
        for i in range(n_videos):
            video_id = f'{i:011d}_{i % 1000:06d}_{i % 1000 + 10:06d}'  # Kinetics' id length
            label = labels[i % n_classes]
            subset = 'validation' if i % 10 == 0 else 'training'
            entry = {'subset': subset, 'annotations': {'label': label,
                                                       'segment': [1, n_frames + 1]}}
            f.write(('' if i == 0 else ', ') + json.dumps(video_id) + ': ' + json.dumps(entry))
            path = tree / label / f'{video_id}{suffix}'
            if file_type == 'jpg':
                path.mkdir(exist_ok=True)
            else:
                path.touch()
        f.write('}}')
    (tree / '.complete').touch()
    return annotation, tree


def resident_mb() -> float:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def measure(annotation: Path, tree: Path, file_type: str) -> None:
    """Run in the fresh process: build the dataset, print seconds and memory as json."""
    import datasets
    before = resident_mb()
    start = time.perf_counter()
    data = datasets.get_training_data(tree, annotation, 'kinetics', 'rgb', file_type)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({'videos': len(data), 'seconds': round(seconds, 2),
                      'peak_increase_mb': round(peak - before, 1),
                      'resident_increase_mb': round(resident_mb() - before, 1)}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util_scripts.benchmark_annotation')
    parser.add_argument('dir', type=Path)
    parser.add_argument('--n_videos', type=int, default=700_000)
    parser.add_argument('--n_frames', type=int, default=300)
    parser.add_argument('--n_classes', type=int, default=700)
    parser.add_argument('--file_type', default='jpg', choices=['jpg', 'hdf5', 'video'])
    parser.add_argument('--measure', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    annotation = args.dir / f'annotation_{args.n_videos}.json'
    tree = args.dir / args.file_type
    if args.measure:
        measure(annotation, tree, args.file_type)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    write_data(args.dir, args.n_videos, args.n_frames, args.n_classes, args.file_type)
    print(f'data in {args.dir} ({time.perf_counter() - start:.0f} s to write)', file=sys.stderr)
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, '-m', 'util_scripts.benchmark_annotation',
                             str(args.dir), '--n_videos', str(args.n_videos), '--file_type',
                             args.file_type, '--measure'], cwd=repo, capture_output=True,
                            text=True, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    sys.stderr.write(result.stderr)
    print(result.stdout.strip())


if __name__ == '__main__':
    main()
