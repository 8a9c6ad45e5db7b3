"""Time and memory of building the training dataset of a Kinetics-size annotation.

    python -m util_scripts.benchmark_annotation DIR [--n_videos 700000] [--n_frames 300]
        [--n_classes 700] [--file_type jpg]
    python -m util_scripts.benchmark_annotation DIR --merged [--n_videos 1500000]

Writes (once; kept for the next run) a synthetic annotation json of `--n_videos` videos of
`--n_frames` frames in `--n_classes` classes, 90% training, and the videos' frame folders (empty:
only their names are looked at) or files under DIR, then builds
`datasets.get_training_data(...)` in a fresh process and prints the seconds it took and the
increase of the process's peak resident memory over its resident memory before the call.

`--merged`: the annotation is util_scripts.merge_json's merge of two such sources, Kinetics-700
(40% of the videos, 700 classes, video files) and Moments in Time (60%, 339 classes, frame
folders): 1,500,000 videos are K+M's ~1.35 M training videos. Also prints the seconds and memory
of one process's shard of an epoch's order in a 2-process run (SourceBatchSampler).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


# --merged: (name, share of the videos, classes, file type) of each source
MERGED_SOURCES = (('kinetics', 0.4, 700, 'video'), ('mit', 0.6, 339, 'jpg'))


def write_data(folder: Path, n_videos: int, n_frames: int, n_classes: int, file_type: str,
               prefix: str = ''):
    annotation = folder / f'annotation_{n_videos}.json'
    tree = folder / file_type
    if annotation.exists() and (tree / '.complete').exists():
        return annotation, tree
    labels = [f'{prefix}class {i:03d}' for i in range(n_classes)]
    suffix = {'jpg': '', 'hdf5': '.hdf5', 'video': '.mp4'}[file_type]
    for label in labels:
        (tree / label).mkdir(parents=True, exist_ok=True)
    with annotation.open('w') as f:
        f.write('{"labels": ' + json.dumps(labels) + ', "database": {')
        for i in range(n_videos):
            video_id = f'{prefix}{i:011d}_{i % 1000:06d}_{i % 1000 + 10:06d}'  # Kinetics' length
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


def write_merged(folder: Path, n_videos: int, n_frames: int) -> Path:
    """The sources of --merged and their merge (kept for the next run)."""
    from util_scripts import merge_json
    merged = folder / f'merged_{n_videos}.json'
    if merged.exists():
        return merged
    sources = []
    for name, share, n_classes, file_type in MERGED_SOURCES:
        annotation, tree = write_data(folder / name, round(n_videos * share), n_frames,
                                      n_classes, file_type, prefix=f'{name}_')
        sources.append(merge_json.Source(name, annotation, tree,
                                         merge_json.read_labels_first(annotation)))
    start = time.perf_counter()
    merge_json.merge(merged, sources)
    print(f'merged in {time.perf_counter() - start:.0f} s', file=sys.stderr)
    return merged


def measure(annotation: Path, tree: Path, file_type: str) -> None:
    """Run in the fresh process: build the dataset, print seconds and memory as json."""
    import numpy as np

    import datasets
    from datasets.data_loader import SourceBatchSampler
    before = resident_mb()
    start = time.perf_counter()
    data = datasets.get_training_data(tree, annotation, 'kinetics', 'rgb', file_type)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {'videos': len(data), 'seconds': round(seconds, 2), 'peak_mb': round(peak, 1),
              'peak_increase_mb': round(peak - before, 1),
              'resident_increase_mb': round(resident_mb() - before, 1)}
    if data.data.source_names:
        result['sources'] = dict(zip(data.data.source_names,
                                     np.bincount(data.data.sources).tolist()))
        before = resident_mb()
        start = time.perf_counter()
        sampler = SourceBatchSampler(data.data.sources, 128, rank=0, world_size=2,
                                     weights=[1] * len(data.data.source_names))
        sampler.set_epoch(1)
        shard = sampler.indices()
        result['shard_of_2'] = {
            'samples': len(shard), 'seconds': round(time.perf_counter() - start, 2),
            'peak_increase_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                      / 1024 - peak, 1)}
    print(json.dumps(result))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util_scripts.benchmark_annotation')
    parser.add_argument('dir', type=Path)
    parser.add_argument('--n_videos', type=int, default=700_000)
    parser.add_argument('--n_frames', type=int, default=300)
    parser.add_argument('--n_classes', type=int, default=700)
    parser.add_argument('--file_type', default='jpg', choices=['jpg', 'hdf5', 'video'])
    parser.add_argument('--merged', action='store_true',
                        help='a merge_json merge of Kinetics- and MiT-like sources (see above)')
    parser.add_argument('--measure', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.merged:
        annotation, tree = args.dir / f'merged_{args.n_videos}.json', args.dir
    else:
        annotation = args.dir / f'annotation_{args.n_videos}.json'
        tree = args.dir / args.file_type
    if args.measure:
        measure(annotation, tree, args.file_type)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.merged:
        write_merged(args.dir, args.n_videos, args.n_frames)
    else:
        write_data(args.dir, args.n_videos, args.n_frames, args.n_classes, args.file_type)
    print(f'data in {args.dir} ({time.perf_counter() - start:.0f} s to write)', file=sys.stderr)
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, '-m', 'util_scripts.benchmark_annotation',
                             str(args.dir), '--n_videos', str(args.n_videos), '--file_type',
                             args.file_type, '--measure'] + ['--merged'] * args.merged,
                            cwd=repo, capture_output=True,
                            text=True, env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    sys.stderr.write(result.stderr)
    print(result.stdout.strip())


if __name__ == '__main__':
    main()
