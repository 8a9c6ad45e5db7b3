"""Wall time of whole jobs, as a user waits for them: `main.py` beside the reference's loop.

    python -m util_scripts.benchmark_jobs [DIR] [--model_depth 18] [--batch_size 8]
        [--n_threads 2] [--n_train 120] [--n_val 64] [--repeats 3] [--amp bfloat16]

Writes (once; kept in DIR for the next run) a frame tree of `--n_train` training and `--n_val`
validation videos of 320x240 JPEG frames and its annotation json, then times, each in a fresh
process and `--repeats` times (median):

    train      one training epoch (`main.py ... --n_epochs 1 --no_val`), start-up included
    inference  `main.py --no_train --no_val --inference --inference_subset val`: sliding windows
               of every validation video, start-up included

and the same jobs as the reference runs them, written below with PyTorch: its data set (PIL
decode of every frame, torchvision's crop, resize, flip, to_tensor and normalize, as torch
operations), `torch.utils.data.DataLoader` with the same workers and batch, its 3D ResNet
(tests/torch_reference.py), SGD with cross-entropy; inference: its sliding-window clips, center
crop, softmax and average per video (`util_scripts.benchmarking.reference`). Needs PyTorch
(`pip install torch`).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from util_scripts.benchmarking.frames import write_video
from util_scripts.benchmarking.machine import cpu_description

ROOT = Path(__file__).resolve().parents[1]
FRAME_SIZE = (320, 240)
N_FRAMES = 40  # per video: several 16-frame windows for inference
N_CLASSES = 101


def write_tree(folder: Path, n_train: int, n_val: int) -> Path:
    """Frame folders (moving colour gradients with noise) and their annotation json, once."""
    annotation = folder / f'jobs_{n_train}_{n_val}.json'
    if annotation.exists():
        return annotation
    import numpy as np
    rng = np.random.default_rng(0)
    labels = [f'class{c:03d}' for c in range(N_CLASSES)]
    database = {}
    for v in range(n_train + n_val):
        label = labels[v % N_CLASSES]
        write_video(folder / 'jpg' / label / f'v{v:04d}', N_FRAMES, FRAME_SIZE, v, rng)
        database[f'v{v:04d}'] = {'subset': 'training' if v < n_train else 'validation',
                                 'annotations': {'label': label,
                                                 'segment': [1, N_FRAMES + 1]}}
    annotation.write_text(json.dumps({'labels': labels, 'database': database}))
    return annotation


# ----------------------------------------------------------------------------------------------
# the reference's jobs, in PyTorch (run in a subprocess: `--reference_job`)

def reference_job(job: str, folder: Path, annotation: Path, args) -> None:
    import random

    import torch

    from spatial_transforms import KINETICS_MEAN, KINETICS_STD, random_resized_crop_box
    from util_scripts.benchmarking.reference import (center_frames, load_frame, stack,
                                                     torch_resnet, train_clip)

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    size, duration, value_scale = 112, 16, 1
    mean, std = list(KINETICS_MEAN), list(KINETICS_STD)
    data = json.loads(annotation.read_text())
    subset = 'training' if job == 'train' else 'validation'
    videos = [(v, labels['annotations']['label']) for v, labels in data['database'].items()
              if labels['subset'] == subset]
    class_index = {name: i for i, name in enumerate(data['labels'])}

    class TrainSet(torch.utils.data.Dataset):
        def __len__(self):
            return len(videos)

        def __getitem__(self, i):
            video, label = videos[i]
            path = folder / 'jpg' / label / video
            begin = random.randint(0, max(0, N_FRAMES - duration))
            frames = [load_frame(path / f'image_{t + 1:05d}.jpg')
                      for t in range(begin, begin + duration)]
            box = random_resized_crop_box(*frames[0].size, (0.25, 1.0), (0.75, 1 / 0.75))
            flip = random.random() < 0.5
            return (train_clip(frames, size, box, flip, value_scale, mean, std),
                    class_index[label])

    class InferenceSet(torch.utils.data.Dataset):  # SlidingWindow(16, 16), center crop
        def __len__(self):
            return len(videos)

        def __getitem__(self, i):
            video, label = videos[i]
            path = folder / 'jpg' / label / video
            frames = center_frames([load_frame(path / f'image_{t:05d}.jpg')
                                    for t in range(1, N_FRAMES + 1)], size, value_scale, mean,
                                   std)
            clips = []  # its SlidingWindow: a window every stride, the last one looped
            for begin in range(0, N_FRAMES, duration):
                window = frames[begin:begin + duration]
                clips.append(stack([window[i % len(window)] for i in range(duration)]))
            return clips, [video] * len(clips)

    def collate(batch):
        clips = [c for video_clips, _ in batch for c in video_clips]
        return torch.stack(clips), [v for _, ids in batch for v in ids]

    model = torch_resnet(args.model_depth, N_CLASSES)
    if job == 'train':
        loader = torch.utils.data.DataLoader(TrainSet(), batch_size=args.batch_size, shuffle=True,
                                             num_workers=args.n_threads)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        model.train()
        for clips, labels in loader:
            loss = torch.nn.functional.cross_entropy(model(clips), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    else:
        loader = torch.utils.data.DataLoader(InferenceSet(),
                                             batch_size=max(1, args.batch_size // 2),
                                             num_workers=args.n_threads, collate_fn=collate)
        model.eval()
        scores = {}
        with torch.no_grad():
            for clips, ids in loader:
                for video, s in zip(ids, torch.softmax(model(clips), 1)):
                    scores.setdefault(video, []).append(s)
        assert len(scores) == len(videos)


# ----------------------------------------------------------------------------------------------
# orchestration

def ours_command(job: str, folder: Path, annotation: Path, args) -> list:
    command = [sys.executable, str(ROOT / 'main.py'), '--video_path', str(folder / 'jpg'),
               '--annotation_path', str(annotation), '--result_path', str(folder / 'results'),
               '--dataset', 'ucf101', '--n_classes', str(N_CLASSES), '--model', 'resnet',
               '--model_depth', str(args.model_depth), '--batch_size', str(args.batch_size),
               '--n_threads', str(args.n_threads), '--sample_size', '112',
               '--sample_duration', '16', '--n_epochs', '1', '--checkpoint', '100']
    if args.amp:
        command += ['--amp', args.amp]
    if job == 'train':
        return command + ['--no_val']
    return command + ['--no_train', '--no_val', '--inference', '--inference_subset', 'val',
                      '--inference_stride', '16', '--inference_batch_size',
                      str(max(1, args.batch_size // 2))]


def timed(command: list) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, TQDM_DISABLE='1', PYTHONPATH=str(ROOT)))
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f'{" ".join(command[:3])} ... failed:\n{result.stderr[-2000:]}')
    return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog='python -m util_scripts.benchmark_jobs',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('dir', nargs='?', type=Path, default=Path('/tmp/benchmark_jobs'))
    parser.add_argument('--model_depth', type=int, default=18)
    parser.add_argument('--batch_size', type=int, default=8)
    parser.add_argument('--n_threads', type=int, default=2)
    parser.add_argument('--n_train', type=int, default=120)
    parser.add_argument('--n_val', type=int, default=64)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--amp', choices=['bfloat16'], default=None,
                        help='ours with --amp bfloat16 (the reference has no CPU mixed precision)')
    parser.add_argument('--jobs', nargs='+', choices=['train', 'inference'],
                        default=['train', 'inference'])
    parser.add_argument('--reference_job', choices=['train', 'inference'], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    annotation = write_tree(args.dir, args.n_train, args.n_val)
    if args.reference_job:
        return reference_job(args.reference_job, args.dir, annotation, args)
    print(f'{cpu_description()}, {len(os.sched_getaffinity(0))} cores; R3D-{args.model_depth}, '
          f'batch {args.batch_size}, {args.n_threads} loader workers; {args.n_train} training / '
          f'{args.n_val} validation videos of {N_FRAMES} frames {FRAME_SIZE[0]}x{FRAME_SIZE[1]}'
          + (f'; ours with --amp {args.amp}' if args.amp else ''))
    reference = [sys.executable, '-m', 'util_scripts.benchmark_jobs', str(args.dir),
                 '--model_depth', str(args.model_depth), '--batch_size', str(args.batch_size),
                 '--n_threads', str(args.n_threads), '--n_train', str(args.n_train),
                 '--n_val', str(args.n_val), '--reference_job']
    print('| job | ours (s) | reference (s) | ours / reference |\n|---|---|---|---|')
    for job in args.jobs:
        ours, theirs = [], []
        for _ in range(args.repeats):  # alternated, so that both see the same machine
            ours.append(timed(ours_command(job, args.dir, annotation, args)))
            theirs.append(timed(reference + [job]))
        a, b = statistics.median(ours), statistics.median(theirs)
        print(f'| {job} | {a:.1f} ({min(ours):.1f}-{max(ours):.1f}) | {b:.1f} '
              f'({min(theirs):.1f}-{max(theirs):.1f}) | {a / b:.2f}x |', flush=True)


if __name__ == '__main__':
    main()
