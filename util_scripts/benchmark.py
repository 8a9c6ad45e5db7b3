"""Clips per second and peak memory of training, inference and the data pipeline, beside PyTorch.

    python -m util_scripts.benchmark [--model_depth 18 50] [--batch_size 8] [--sample_duration 16]
        [--sample_size 112] [--repeats 5] [--jobs train infer data loader_memory profile]
        [--threads N] [--quick] [--video_path DIR --annotation_path A.json
        [--file_type jpg|hdf5|video] [--dataset ucf101] [--data_videos 16]]

Every measurement runs in a subprocess of its own, so that its peak RSS (getrusage) is its own;
the subprocess sets the math threads, the MKL switch and glibc's allocator for Paddle before it
imports Paddle or PyTorch, the way main.py does (PyTorch runs as its users run it). Rows:

    train   one SGD step (forward, cross-entropy, backward, momentum step) on random clips
    infer   logits of random clips in eval mode without gradients; GFLOP/s counts the
            multiply-adds of the convolutions and the classifier (x2), against the matmul peak:
            the faster of MKL's (Paddle's and PyTorch's `@`; on AMD, its AVX2 path) and
            oneDNN's (AVX-512 where the processor has it), 2048^3 float32
    data    clips/s in one process (the training pipeline's in the table above, both in a
            table of their own) of the training and the validation
            data sets main.py builds (main.get_train_utils / get_val_utils: --train_crop random
            = random resized crop + flip; resize + center crop), with the fast path of
            datasets.clip_pipeline and without it, against the reference's pipeline for the
            same clips; the sides take turns, repeat by repeat. Frames: 320x240 JPEGs written
            to a temporary folder, or the data set of --video_path / --annotation_path
            (--file_type video: no reference, which reads frame folders and hdf5 only)
    profile (only when asked for with --jobs) where a training step's time goes, on both
            sides: oneDNN's convolutions (forward, backward data, backward weights), its
            reorders, its other primitives (timed by its verbose mode), and the rest
    loader_memory (only when asked for with --jobs) peak memory of each of 5 epochs of main.py's
            training loader with 4 worker processes over --loader_videos such clips, and its
            growth from epoch 2 to 5

When PyTorch is importable, the same jobs run with the reference's 3D ResNet in PyTorch
(tests/torch_reference.py, the parity tests' model) and the reference's data pipeline (PIL
decode + torchvision's PIL operations and tensor conversion, written with torch ops on one
thread, as in PyTorch's DataLoader workers: `util_scripts.benchmarking.reference`), and
`vs torch` is Paddle's clips/s over PyTorch's. Each job's measurement is a module of
`util_scripts.benchmarking`.
`--quick` (tiny shapes, one repeat, one subprocess per framework) only checks that all paths run.
"""
import argparse
import dataclasses
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import List

import environment
from util_scripts.benchmarking.case import Case, peak_rss_mb
from util_scripts.benchmarking.data import data_pipelines, format_data
from util_scripts.benchmarking.infer import paddle_infer, torch_infer
from util_scripts.benchmarking.loader_memory import (LOADER_EPOCHS, LOADER_WORKERS,
                                                     format_loader_memory, loader_memory)
from util_scripts.benchmarking.machine import cpu_description
from util_scripts.benchmarking.matmul import paddle_matmul, torch_matmul
from util_scripts.benchmarking.tables import format_profile, format_table, make_rows
from util_scripts.benchmarking.train import (PROFILE_COLUMNS, paddle_profile, paddle_train,
                                             torch_profile, torch_train)
from utils import UserError, run_cli

ROOT = Path(__file__).resolve().parents[1]
RESULT_TAG = 'BENCHMARK_RESULT '
FRAME_SIZE = (320, 240)  # (width, height) of UCF-101 / HMDB-51 / Kinetics frames after resizing
MATMUL_SIZE = 2048

# (framework, job) -> the measurement, run in the subprocess
MEASURES = {
    ('paddle', 'train'): paddle_train, ('paddle', 'infer'): paddle_infer,
    ('paddle', 'profile'): paddle_profile, ('torch', 'profile'): torch_profile,
    ('paddle', 'matmul'): paddle_matmul, ('paddle', 'data'): data_pipelines,
    ('torch', 'train'): torch_train, ('torch', 'infer'): torch_infer,
    ('torch', 'matmul'): torch_matmul,
    ('paddle', 'loader_memory'): loader_memory,
}


def run_cases_here(cases: List[Case]) -> None:
    """Subprocess side: measure each case and print one tagged json line of results."""
    results = []
    if any(case.impl == 'paddle' for case in cases):
        environment.setup()  # as main.py does; child_env's variables win
    for case in cases:
        random.seed(0)
        try:
            result = MEASURES[case.impl, case.job](case)
        except Exception as e:  # a failed path is reported in its row; the others still run
            result = {'error': f'{type(e).__name__}: {e}'.splitlines()[0][:200]}
        result['peak_rss'] = peak_rss_mb()
        results.append(result)
    print(RESULT_TAG + json.dumps(results), flush=True)


# ----------------------------------------------------------------------------------------------
# orchestration (the parent process)

def has_bfloat16() -> bool:
    """Whether this CPU runs `--amp bfloat16` (asked in a subprocess: the parent does not
    import Paddle)."""
    code = 'from models import onednn; print(onednn.bfloat16_supported())'
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                            text=True)
    return result.stdout.strip().endswith('True')


def child_env(threads: int, mkl_fix: bool) -> dict:
    """Environment of a measuring subprocess: set before it imports Paddle or PyTorch."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    # 5: MKL's AVX2 kernels on AMD, not its slow generic path; empty: MKL's own choice, as unset
    # (2048^3 matmul on a 2-core EPYC: 177 GFLOP/s with 5, 72 unset, 76 empty)
    env['MKL_DEBUG_CPU_TYPE'] = '5' if mkl_fix else ''
    return env


def run_subprocess(cases: List[Case], env: dict) -> List[dict]:
    """Run `cases` in one fresh interpreter; an error dict per case if it dies."""
    command = [sys.executable, '-m', 'util_scripts.benchmark',
               '--cases', json.dumps([case.to_json() for case in cases])]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (done.stderr.strip().splitlines() or ['no output'])[-1][:200]
    return [{'error': f'exit {done.returncode}: {tail}'} for _ in cases]


def torch_runs(dtype: str, quick: bool) -> bool:
    """Whether PyTorch gets a row: not in bfloat16 with --quick, whose tiny shapes crash its
    bfloat16 convolutions on some CPUs (a segfault, seen on a 2-core AMD EPYC)."""
    return dtype == 'float32' or not quick


def make_cases(args, with_torch: bool) -> List[Case]:
    shape = Case(job='', impl='', batch_size=args.batch_size, sample_duration=args.sample_duration,
                 sample_size=args.sample_size, warmup=args.warmup, repeats=args.repeats,
                 threads=args.threads)
    impls = ['paddle', 'torch'] if with_torch else ['paddle']
    cases = []
    for depth in args.model_depth:
        for dtype in args.dtypes:
            precise = dataclasses.replace(shape, dtype=dtype, depth=depth)
            torch_backend = 'eager' if dtype == 'float32' else 'autocast'
            for job in ('train', 'profile'):  # a training step: timed, and taken apart
                if job in args.jobs:
                    cases.append(dataclasses.replace(precise, job=job, impl='paddle',
                                                     backend='dygraph'))
                    if with_torch and torch_runs(dtype, args.quick):
                        cases.append(dataclasses.replace(precise, job=job, impl='torch',
                                                         backend=torch_backend))
            if 'infer' in args.jobs:
                cases += [dataclasses.replace(precise, job='infer', impl='paddle', backend=b)
                          for b in (('dygraph', 'onednn') if dtype == 'float32' else
                                    ('dygraph',))]
                if with_torch and torch_runs(dtype, args.quick):
                    cases.append(dataclasses.replace(precise, job='infer', impl='torch',
                                                     backend=torch_backend))
    frames = dict(n_frames=max(args.sample_duration * 2, 8), frame_size=args.frame_size)
    if 'data' in args.jobs:
        cases.append(dataclasses.replace(
            shape, job='data', impl='paddle', backend='pipelines',
            n_videos=4 if args.video_path is None else args.data_videos,
            clips_per_repeat=args.clips_per_repeat, reference=with_torch,
            video_path=args.video_path, annotation_path=args.annotation_path,
            file_type=args.file_type, dataset=args.dataset, **frames))
    if 'infer' in args.jobs or 'train' in args.jobs:
        cases += [dataclasses.replace(shape, job='matmul', impl=impl,
                                      matmul_size=args.matmul_size) for impl in impls]
    if 'loader_memory' in args.jobs:
        cases.append(dataclasses.replace(
            shape, job='loader_memory', impl='paddle', backend=f'{LOADER_WORKERS} workers',
            workers=LOADER_WORKERS, epochs=LOADER_EPOCHS, n_videos=args.loader_videos,
            **frames))
    return cases


def run_cases(cases: List[Case], args) -> List[dict]:
    """Each case in its own subprocess, or (--quick) all cases of a framework in one."""
    results = [None] * len(cases)
    groups = {}
    for i, case in enumerate(cases):
        key = case.impl if args.quick else i
        groups.setdefault(key, []).append(i)
    for indices in groups.values():
        impl = cases[indices[0]].impl
        env = child_env(args.threads, args.mkl_fix and impl == 'paddle')
        for i, result in zip(indices, run_subprocess([cases[i] for i in indices], env)):
            results[i] = result
            status = result.get('error', 'ok')
            print(f'  {cases[i].job} {impl} {cases[i].backend} '
                  f'{cases[i].depth or ""}: {status}', file=sys.stderr, flush=True)
    return results


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model_depth', nargs='+', type=int, default=[18, 50])
    p.add_argument('--batch_size', type=int, default=8)
    p.add_argument('--sample_duration', type=int, default=16)
    p.add_argument('--sample_size', type=int, default=112)
    p.add_argument('--repeats', type=int, default=5, help='timed calls after warm-up; median shown')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--jobs', nargs='+',
                   choices=['train', 'infer', 'data', 'loader_memory', 'profile'],
                   default=['train', 'infer', 'data'],
                   help=f'loader_memory: peak memory of each of {LOADER_EPOCHS} epochs of the '
                        f'training loader with {LOADER_WORKERS} workers; profile: where a '
                        'training step\'s time goes (oneDNN\'s primitives by kind, the rest)')
    p.add_argument('--video_path',
                   help='data job: clips of this data set instead of the benchmark\'s frames '
                        '(with --annotation_path)')
    p.add_argument('--annotation_path')
    p.add_argument('--file_type', default='jpg', choices=['jpg', 'hdf5', 'video'])
    p.add_argument('--dataset', default='ucf101', help='--dataset of main.py (video extensions)')
    p.add_argument('--data_videos', type=int, default=16,
                   help='data job over --video_path: videos drawn from each subset')
    p.add_argument('--loader_videos', type=int, default=128,
                   help='clips per epoch of the loader_memory job')
    p.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)),
                   help='math threads of Paddle and PyTorch (default: the usable cores)')
    p.add_argument('--no_mkl_fix', dest='mkl_fix', action='store_false',
                   help='do not set MKL_DEBUG_CPU_TYPE=5 for Paddle (set by default on AMD)')
    p.add_argument('--no_torch', action='store_true', help='skip PyTorch even if installed')
    p.add_argument('--dtypes', nargs='+', choices=['float32', 'bfloat16'], default=None,
                   help='train and infer rows in these precisions (default: float32, and '
                        'bfloat16 where the CPU has it: ours with --amp bfloat16, PyTorch with '
                        'autocast)')
    p.add_argument('--quick', action='store_true',
                   help='tiny shapes, one repeat, one subprocess per framework: a smoke test')
    p.add_argument('--cases', help=argparse.SUPPRESS)  # the subprocess's work, as json
    return p


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    if args.cases is not None:
        run_cases_here([Case.from_json(fields) for fields in json.loads(args.cases)])
        return
    if min(args.batch_size, args.sample_duration, args.sample_size, args.repeats, args.threads) < 1:
        raise UserError('--batch_size, --sample_duration, --sample_size, --repeats and --threads '
                        'must be >= 1')
    if (args.video_path is None) != (args.annotation_path is None):
        raise UserError('--video_path and --annotation_path go together')
    if args.video_path is not None:  # the subprocess runs in the project folder
        args.video_path, args.annotation_path = (str(Path(p).resolve())
                                                 for p in (args.video_path, args.annotation_path))
    args.mkl_fix = args.mkl_fix and environment.is_amd_cpu()
    args.frame_size, args.clips_per_repeat, args.matmul_size = FRAME_SIZE, 16, MATMUL_SIZE
    if args.quick:
        args.model_depth, args.batch_size, args.sample_duration, args.sample_size = [10], 2, 4, 32
        args.repeats, args.warmup = 1, 1
        args.frame_size, args.clips_per_repeat, args.matmul_size = (64, 48), 2, 256
        args.loader_videos = 8
    with_torch = not args.no_torch and importlib.util.find_spec('torch') is not None
    if args.dtypes is None:
        args.dtypes = ['float32'] + (['bfloat16'] if has_bfloat16() else [])
    cases = make_cases(args, with_torch)
    load = os.getloadavg()[0]
    print(f'{cpu_description()}, {len(os.sched_getaffinity(0))} usable '
          f'cores, {args.threads} math threads, MKL_DEBUG_CPU_TYPE=5: {args.mkl_fix}, load '
          f'average {load:.2f}; input [{args.batch_size}, 3, {args.sample_duration}, '
          f'{args.sample_size}, {args.sample_size}]', file=sys.stderr)
    results = run_cases(cases, args)
    rows, peak = make_rows(cases, results)
    if rows:
        print(format_table(rows))
    for case, result in zip(cases, results):
        if case.job == 'loader_memory':
            print(format_loader_memory(case, result))
        if case.job == 'data':
            print(format_data(case, result))
    if 'profile' in args.jobs:
        print(format_profile(cases, results, PROFILE_COLUMNS))
    notes = []
    if rows:
        notes.append(f'clips/s: median of {args.repeats} timed calls after {args.warmup} warm-up '
                     'calls; range: slowest-fastest call')
    if peak:
        notes.append(f'% peak: of the fastest {args.matmul_size}^3 float32 matmul call measured '
                     f'here ({peak:.0f} GFLOP/s); train GFLOP/s count 3x the forward FLOPs')
    if rows:
        notes.append('peak RSS: of the subprocess' + (' (all cases of a framework share one '
                                                      'with --quick)' if args.quick else '')
                     + '; job RSS: its growth from just before the first call')
    if 'data' in args.jobs:
        notes.append(f'data: median of {args.repeats} repeats of {args.clips_per_repeat} clips '
                     'per side after a warm-up one, the sides taking turns in one process '
                     '(the same videos, frames, crops and flips); fast path off: every frame '
                     'through the transforms')
    if 'profile' in args.jobs:
        notes.append(f'profile: milliseconds per training step (median of {args.repeats} calls) '
                     f'and of oneDNN\'s primitives in it (means over {args.repeats} more calls in '
                     'oneDNN\'s verbose mode, which times each primitive it runs); outside '
                     'oneDNN: the rest of the step: the framework\'s other kernels (BN, ReLU, '
                     'additions, PyTorch\'s max pooling and casts), the optimizer, Python')
    if 'loader_memory' in args.jobs:
        notes.append('loader memory: peaks sampled every 10 ms while an epoch of batches is read '
                     '(no model); PSS splits the pages the forked workers share with the main '
                     'process')
    notes.append(f'load average before the run: {load:.2f}, after: {os.getloadavg()[0]:.2f}')
    print('\n'.join(notes))


if __name__ == '__main__':
    run_cli(main)
