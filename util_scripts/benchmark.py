"""Clips per second and peak memory of training, inference and the data pipeline, beside PyTorch.

    python -m util_scripts.benchmark [--model_depth 18 50] [--batch_size 8] [--sample_duration 16]
        [--sample_size 112] [--repeats 5] [--jobs train infer data loader_memory] [--threads N]
        [--quick]

Every measurement runs in a subprocess of its own, so that its peak RSS (getrusage) is its own;
the subprocess sets the math threads, the MKL switch, huge pages and the mmap threshold for
Paddle before it imports Paddle or PyTorch, the way main.py does (PyTorch runs as its users run
it). Rows:

    train   one SGD step (forward, cross-entropy, backward, momentum step) on random clips
    infer   logits of random clips in eval mode without gradients; GFLOP/s counts the
            multiply-adds of the convolutions and the classifier (x2), against the matmul peak:
            the faster of MKL's (Paddle's and PyTorch's `@`; on AMD, its AVX2 path) and
            oneDNN's (AVX-512 where the processor has it), 2048^3 float32
    data    one training clip per process: 16 JPEG frames (320x240, written to a temporary
            folder) -> random resized crop -> flip -> normalized array [C, T, H, W]
    loader_memory (only when asked for with --jobs) peak memory of each of 5 epochs of main.py's
            training loader with 4 worker processes over --loader_videos such clips, and its
            growth from epoch 2 to 5

When PyTorch is importable, the same jobs run with a PyTorch 3D ResNet of the reference's layout
(written below) and the reference's data pipeline (PIL decode + torchvision's PIL operations and
tensor conversion, written below with torch ops), and `vs torch` is Paddle's clips/s over PyTorch's.
`--quick` (tiny shapes, one repeat, one subprocess per framework) only checks that all paths run.
"""
import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from environment import fix_mmap_threshold, with_huge_pages
from utils import UserError, run_cli

ROOT = Path(__file__).resolve().parents[1]
RESULT_TAG = 'BENCHMARK_RESULT '
N_CLASSES = 400  # Kinetics-400, the reference's default
FRAME_SIZE = (320, 240)  # (width, height) of the frames of UCF-101 / HMDB-51 / Kinetics after resizing
MATMUL_SIZE = 2048
LOADER_WORKERS, LOADER_EPOCHS = 4, 5  # the loader_memory job


# ----------------------------------------------------------------------------------------------
# measurements (run in the subprocess)

def rss_mb() -> float:
    """Current resident set size in MiB."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_calls(fn: Callable[[], object], warmup: int, repeats: int) -> Dict[str, object]:
    """Seconds of `repeats` calls after `warmup` calls, with the RSS before the first call."""
    base = rss_mb()
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return {'seconds': seconds, 'base_rss': base}


def import_paddle():
    with contextlib.redirect_stderr(io.StringIO()):  # Paddle cautions about thread counts > 1
        import paddle
    return paddle


def paddle_model(case: dict):
    paddle = import_paddle()
    from models.resnet import generate_model
    paddle.seed(0)
    return generate_model(case['depth'], n_classes=N_CLASSES)


def random_batch(case: dict, seed: int = 0):
    """Clips [N, 3, T, H, W] and labels [N], as numpy arrays."""
    rng = np.random.default_rng(seed)
    shape = [case['batch_size'], 3, case['sample_duration'], case['sample_size'], case['sample_size']]
    return (rng.standard_normal(shape, dtype=np.float32),
            rng.integers(0, N_CLASSES, case['batch_size']))


def paddle_flops_per_clip(model, case: dict) -> float:
    """Multiply-adds x 2 of the Conv3D and Linear layers for one clip."""
    paddle = import_paddle()
    total = [0]

    def count(layer, inputs, output):
        if isinstance(layer, paddle.nn.Conv3D):
            weight = layer.weight.shape  # [out, in / groups, kT, kH, kW]
            total[0] += 2 * int(np.prod(output.shape)) * int(np.prod(weight[1:]))
        else:
            total[0] += 2 * int(np.prod(output.shape)) * layer.weight.shape[0]
    hooks = [layer.register_forward_post_hook(count) for layer in model.sublayers()
             if isinstance(layer, (paddle.nn.Conv3D, paddle.nn.Linear))]
    clips, _ = random_batch(dict(case, batch_size=1))
    model.eval()  # the callers set the mode they measure
    with paddle.no_grad():
        model(paddle.to_tensor(clips))
    for hook in hooks:
        hook.remove()
    return total[0]


def paddle_train(case: dict) -> dict:
    paddle = import_paddle()
    import paddle.nn.functional as F
    model = paddle_model(case)
    flops = paddle_flops_per_clip(model, case)
    optimizer = paddle.optimizer.Momentum(0.1, momentum=0.9, parameters=model.parameters(),
                                          weight_decay=1e-3)
    clips, labels = random_batch(case)
    clips, labels = paddle.to_tensor(clips), paddle.to_tensor(labels)
    model.train()

    def step():
        loss = F.cross_entropy(model(clips), labels)
        optimizer.clear_grad()
        loss.backward()
        optimizer.step()
        return float(loss)
    return dict(time_calls(step, case['warmup'], case['repeats']), flops_per_clip=3 * flops)


def paddle_infer(case: dict) -> dict:
    import inference
    model = paddle_model(case)
    flops = paddle_flops_per_clip(model, case)
    clips, _ = random_batch(case)
    logits = inference.make_logits_fn(model, clips, case['backend'])
    return dict(time_calls(lambda: logits(clips), case['warmup'], case['repeats']),
                flops_per_clip=flops)


def paddle_matmul(case: dict) -> dict:
    """The faster of Paddle's `a @ b` (MKL; on AMD its AVX2 path) and oneDNN's matmul (the
    library the training convolutions run on, AVX-512 where the processor has it)."""
    paddle = import_paddle()
    n = case['matmul_size']
    a, b = paddle.randn([n, n]), paddle.randn([n, n])
    results = [time_calls(lambda: (a @ b).numpy(), 1, max(3, case['repeats']))]
    onednn_call = onednn_matmul(a, b)
    if onednn_call is not None:
        results.append(time_calls(onednn_call, 1, max(3, case['repeats'])))
    return dict(min(results, key=lambda r: min(r['seconds'])), flops=2 * n ** 3)


def onednn_matmul(a, b):
    """A call computing a @ b with oneDNN's matmul primitive (models.onednn's library), or None."""
    import ctypes

    import paddle
    from models import onednn
    library = onednn.library()
    if library is None:
        return None
    plain_2d = 3  # dnnl_ab
    descs = [library.desc(t.shape, plain_2d) for t in (a, b, a)]
    pd = ctypes.c_void_p()
    library.call('dnnl_matmul_primitive_desc_create', ctypes.byref(pd), library.engine,
                 descs[0], descs[1], None, descs[2], None)
    primitive = library.primitive(pd)
    c = paddle.empty(a.shape, dtype='float32')
    memories = {name: library.memory(desc, t.data_ptr())
                for name, desc, t in zip(('src', 'weights', 'dst'), descs, (a, b, c))}

    def call():
        library.execute(primitive, memories)
        library.call('dnnl_stream_wait', library.stream)
        return c  # oneDNN writes into c: it must live as long as the call does
    return call


# A PyTorch 3D ResNet of the reference's layout (conv1 7x7x7 stride (1, 2, 2), max pool, shortcut
# 'B'), written for this benchmark from the paper's description.
def torch_resnet(depth: int):
    import torch.nn as nn

    def conv_bn(c_in, c_out, kernel, stride=1):
        return [nn.Conv3d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm3d(c_out)]

    class Block(nn.Module):
        def __init__(self, c_in, planes, stride, bottleneck):
            super().__init__()
            c_out = planes * (4 if bottleneck else 1)
            if bottleneck:
                layers = (conv_bn(c_in, planes, 1) + [nn.ReLU()] + conv_bn(planes, planes, 3, stride)
                          + [nn.ReLU()] + conv_bn(planes, c_out, 1))
            else:
                layers = conv_bn(c_in, planes, 3, stride) + [nn.ReLU()] + conv_bn(planes, planes, 3)
            self.body = nn.Sequential(*layers)
            self.shortcut = (nn.Sequential(*conv_bn(c_in, c_out, 1, stride))
                             if stride != 1 or c_in != c_out else nn.Identity())

        def forward(self, x):
            return (self.body(x) + self.shortcut(x)).relu()

    bottleneck = depth >= 50
    blocks = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3],
              101: [3, 4, 23, 3]}[depth]
    layers = [nn.Conv3d(3, 64, 7, (1, 2, 2), 3, bias=False), nn.BatchNorm3d(64), nn.ReLU(),
              nn.MaxPool3d(3, 2, 1)]
    c_in = 64
    for stage, (planes, n) in enumerate(zip([64, 128, 256, 512], blocks)):
        for i in range(n):
            layers.append(Block(c_in, planes, 2 if stage > 0 and i == 0 else 1, bottleneck))
            c_in = planes * (4 if bottleneck else 1)
    layers += [nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(c_in, N_CLASSES)]
    return nn.Sequential(*layers)


def torch_setup(case: dict):
    import torch
    torch.set_num_threads(case['threads'])
    torch.manual_seed(0)
    return torch


def torch_train(case: dict) -> dict:
    torch = torch_setup(case)
    model = torch_resnet(case['depth']).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    clips, labels = (torch.from_numpy(a) for a in random_batch(case))

    def step():
        loss = torch.nn.functional.cross_entropy(model(clips), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss)
    return time_calls(step, case['warmup'], case['repeats'])


def torch_infer(case: dict) -> dict:
    torch = torch_setup(case)
    model = torch_resnet(case['depth']).eval()
    clips = torch.from_numpy(random_batch(case)[0])

    def forward():
        with torch.no_grad():
            return model(clips).numpy()
    return time_calls(forward, case['warmup'], case['repeats'])


def torch_matmul(case: dict) -> dict:
    torch = torch_setup(case)
    n = case['matmul_size']
    a, b = torch.randn(n, n), torch.randn(n, n)
    return dict(time_calls(lambda: a @ b, 1, max(3, case['repeats'])), flops=2 * n ** 3)


def write_videos(folder: Path, n_videos: int, n_frames: int, size) -> Path:
    """Frame folders of smooth moving colour gradients with mild noise, and their annotation json."""
    from PIL import Image
    rng = np.random.default_rng(0)
    width, height = size
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    database = {}
    for v in range(n_videos):
        video = folder / 'jpg' / 'c' / f'v{v}'
        video.mkdir(parents=True)
        for t in range(1, n_frames + 1):
            channels = [128 + 100 * np.sin((x * (c + 1) + y * (3 - c) + 7 * t + 50 * v) / 40)
                        for c in range(3)]
            img = np.stack(channels, axis=-1) + rng.normal(0, 6, (height, width, 3))
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(video / f'image_{t:05d}.jpg',
                                                                    quality=90)
        database[f'v{v}'] = {'subset': 'training',
                             'annotations': {'label': 'c', 'segment': [1, n_frames + 1]}}
    annotation = folder / 'data.json'
    annotation.write_text(json.dumps({'labels': ['c'], 'database': database}))
    return annotation


def clip_reader(case: dict, fn: Callable[[int], object]) -> Callable[[], None]:
    """A call that makes `case['clips_per_repeat']` clips, cycling over the videos."""
    counter = [0]

    def read():
        for _ in range(case['clips_per_repeat']):
            fn(counter[0] % case['n_videos'])
            counter[0] += 1
    return read


def project_dataset(case: dict, folder: Path, annotation: Path):
    """This project's training data set and pipeline, built by main.py's functions."""
    from datasets import get_training_data
    from opts import parse_opts
    from spatial_transforms import (RandomHorizontalFlip, RandomResizedCrop, get_mean_std,
                                    get_spatial_transform)
    from temporal_transforms import TemporalRandomCrop, get_temporal_transform
    opt = parse_opts(['--video_path', str(folder / 'jpg'), '--annotation_path', str(annotation),
                      '--result_path', str(folder), '--sample_size', str(case['sample_size']),
                      '--sample_duration', str(case['sample_duration'])])
    opt.mean, opt.std = get_mean_std(opt.value_scale, dataset=opt.mean_dataset)
    crop = [RandomResizedCrop(opt.sample_size, (opt.train_crop_min_scale, 1.0),
                              (opt.train_crop_min_ratio, 1.0 / opt.train_crop_min_ratio))]
    spatial = get_spatial_transform(opt, crop, [RandomHorizontalFlip()])
    temporal = get_temporal_transform(opt, TemporalRandomCrop(opt.sample_duration))
    return get_training_data(opt.video_path, opt.annotation_path, opt.dataset, 'rgb', 'jpg',
                             spatial, temporal)


def project_data(case: dict, folder: Path, annotation: Path) -> Callable[[], None]:
    data = project_dataset(case, folder, annotation)
    return clip_reader(case, lambda i: data[i])


def reference_data(case: dict, folder: Path, annotation: Path) -> Callable[[], None]:
    """The reference's pipeline: PIL decode of whole frames, then torchvision's PIL-backend crop,
    resize and flip and its to_tensor / normalize, as torch operations."""
    from PIL import Image
    torch = torch_setup(case)
    from spatial_transforms import KINETICS_MEAN, KINETICS_STD, random_resized_crop_box
    mean = torch.tensor(KINETICS_MEAN).view(3, 1, 1)
    std = torch.tensor(KINETICS_STD).view(3, 1, 1)
    size, duration = case['sample_size'], case['sample_duration']

    def load(path):
        with path.open('rb') as f, Image.open(f) as img:
            return img.convert('RGB')

    def to_tensor(img):  # torchvision.transforms.functional.to_tensor
        arr = torch.from_numpy(np.array(img, np.uint8, copy=True))
        return arr.view(img.size[1], img.size[0], 3).permute(2, 0, 1).contiguous().float().div(255)

    def clip(i):
        video = folder / 'jpg' / 'c' / f'v{i}'
        n_frames = len(list(video.iterdir()))
        begin = random.randint(0, max(0, n_frames - duration))
        frames = [load(video / f'image_{t + 1:05d}.jpg') for t in range(begin, begin + duration)]
        top, left, h, w = random_resized_crop_box(*frames[0].size, (0.25, 1.0), (0.75, 1 / 0.75))
        flip = random.random() < 0.5
        out = []
        for img in frames:
            img = img.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
            if flip:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            out.append(to_tensor(img).sub_(mean).div_(std))
        return torch.stack(out, 0).permute(1, 0, 2, 3)  # [C, T, H, W]
    return clip_reader(case, clip)


def data_pipeline(case: dict) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        annotation = write_videos(Path(folder), case['n_videos'], case['n_frames'], case['frame_size'])
        make = project_data if case['impl'] == 'paddle' else reference_data
        read = make(case, Path(folder), annotation)
        result = time_calls(read, 1, case['repeats'])
    return dict(result, clips_per_call=case['clips_per_repeat'])


def process_tree_pss_mb(pid: int) -> float:
    """Proportional set size of a process and its descendants in MiB (shared pages split)."""
    total = 0
    try:
        with open(f'/proc/{pid}/smaps_rollup') as f:
            total += next(int(line.split()[1]) for line in f if line.startswith('Pss:')) / 1024
        with open(f'/proc/{pid}/task/{pid}/children') as f:
            children = [int(child) for child in f.read().split()]
    except (OSError, StopIteration):  # the process ended meanwhile
        return total
    return total + sum(process_tree_pss_mb(child) for child in children)


class PeakMemory:
    """While active, samples this process's RSS and its process tree's PSS every 10 ms; keeps the
    peaks."""

    def __enter__(self):
        self.rss = self.pss = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.done.wait(0.01):
            self.rss = max(self.rss, rss_mb())
            self.pss = max(self.pss, process_tree_pss_mb(os.getpid()))

    def __exit__(self, *exc_info):
        self.done.set()
        self.thread.join()


def loader_memory(case: dict) -> dict:
    """Peak memory of each epoch of main.py's training loader with `case['workers']` workers."""
    from datasets.data_loader import make_data_loader
    from utils import epoch_seed
    with tempfile.TemporaryDirectory() as folder:
        annotation = write_videos(Path(folder), case['n_videos'], case['n_frames'],
                                  case['frame_size'])
        data = project_dataset(case, Path(folder), annotation)
        opt = argparse.Namespace(n_threads=case['workers'], manual_seed=1, distributed=False)
        loader = make_data_loader(data, case['batch_size'], True, opt)
        result = {'main_rss': [], 'tree_pss': [], 'seconds': []}
        for epoch in range(1, case['epochs'] + 1):
            loader.seeder.seed = epoch_seed(opt.manual_seed, epoch)
            start = time.perf_counter()
            with PeakMemory() as peak:
                for _ in loader:
                    pass
            result['seconds'].append(time.perf_counter() - start)
            result['main_rss'].append(peak.rss)
            result['tree_pss'].append(peak.pss)
    return dict(result, base_rss=0.0)


MEASURES = {
    ('paddle', 'train'): paddle_train, ('paddle', 'infer'): paddle_infer,
    ('paddle', 'matmul'): paddle_matmul, ('paddle', 'data'): data_pipeline,
    ('torch', 'train'): torch_train, ('torch', 'infer'): torch_infer,
    ('torch', 'matmul'): torch_matmul, ('torch', 'data'): data_pipeline,
    ('paddle', 'loader_memory'): loader_memory,
}


def run_cases_here(cases: List[dict]) -> None:
    """Subprocess side: measure each case and print one tagged json line of results."""
    results = []
    if any(case['impl'] == 'paddle' for case in cases):
        fix_mmap_threshold()  # as main.py does (environment.set_cpu_math_env)
    for case in cases:
        random.seed(0)
        try:
            result = MEASURES[case['impl'], case['job']](case)
        except Exception as e:  # a failed path is reported in its row; the others still run
            result = {'error': f'{type(e).__name__}: {e}'.splitlines()[0][:200]}
        result['peak_rss'] = peak_rss_mb()
        results.append(result)
    print(RESULT_TAG + json.dumps(results), flush=True)


# ----------------------------------------------------------------------------------------------
# orchestration (the parent process)

def is_amd() -> bool:
    try:
        return 'AuthenticAMD' in Path('/proc/cpuinfo').read_text()
    except OSError:
        return False


def child_env(threads: int, mkl_fix: bool, huge_pages: bool) -> dict:
    """Environment of a measuring subprocess: set before it imports Paddle or PyTorch."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    env.pop('MKL_DEBUG_CPU_TYPE', None)
    if mkl_fix:
        env['MKL_DEBUG_CPU_TYPE'] = '5'  # MKL's AVX2 kernels on AMD instead of its slow generic path
    if huge_pages:  # as main.py starts (environment.with_huge_pages)
        with_huge_pages(env)
    return env


def run_subprocess(cases: List[dict], env: dict) -> List[dict]:
    """Run `cases` in one fresh interpreter; an error dict per case if it dies."""
    command = [sys.executable, '-m', 'util_scripts.benchmark', '--cases', json.dumps(cases)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (done.stderr.strip().splitlines() or ['no output'])[-1][:200]
    return [{'error': f'exit {done.returncode}: {tail}'} for _ in cases]


def make_cases(args, with_torch: bool) -> List[dict]:
    shape = dict(batch_size=args.batch_size, sample_duration=args.sample_duration,
                 sample_size=args.sample_size, warmup=args.warmup, repeats=args.repeats,
                 threads=args.threads)
    impls = ['paddle', 'torch'] if with_torch else ['paddle']
    cases = []
    for depth in args.model_depth:
        if 'train' in args.jobs:
            cases.append(dict(shape, job='train', impl='paddle', depth=depth, backend='dygraph'))
            if with_torch:
                cases.append(dict(shape, job='train', impl='torch', depth=depth, backend='eager'))
        if 'infer' in args.jobs:
            cases += [dict(shape, job='infer', impl='paddle', depth=depth, backend=b)
                      for b in ('dygraph', 'onednn')]
            if with_torch:
                cases.append(dict(shape, job='infer', impl='torch', depth=depth, backend='eager'))
    if 'data' in args.jobs:
        n_frames = max(args.sample_duration * 2, 8)
        cases += [dict(shape, job='data', impl=impl, depth=None, n_videos=4, n_frames=n_frames,
                       frame_size=args.frame_size, clips_per_repeat=args.clips_per_repeat,
                       backend='project' if impl == 'paddle' else 'reference')
                  for impl in impls]
    if 'infer' in args.jobs or 'train' in args.jobs:
        cases += [dict(shape, job='matmul', impl=impl, depth=None, matmul_size=args.matmul_size,
                       backend='')
                  for impl in impls]
    if 'loader_memory' in args.jobs:
        cases.append(dict(shape, job='loader_memory', impl='paddle', depth=None,
                          backend=f'{LOADER_WORKERS} workers', workers=LOADER_WORKERS,
                          epochs=LOADER_EPOCHS, n_videos=args.loader_videos,
                          n_frames=max(args.sample_duration * 2, 8), frame_size=args.frame_size))
    return cases


def run_cases(cases: List[dict], args) -> List[dict]:
    """Each case in its own subprocess, or (--quick) all cases of a framework in one."""
    results = [None] * len(cases)
    groups = {}
    for i, case in enumerate(cases):
        key = case['impl'] if args.quick else i
        groups.setdefault(key, []).append(i)
    for indices in groups.values():
        impl = cases[indices[0]]['impl']
        env = child_env(args.threads, args.mkl_fix and impl == 'paddle', impl == 'paddle')
        for i, result in zip(indices, run_subprocess([cases[i] for i in indices], env)):
            results[i] = result
            status = result.get('error', 'ok')
            print(f'  {cases[i]["job"]} {impl} {cases[i]["backend"]} '
                  f'{cases[i]["depth"] or ""}: {status}', file=sys.stderr, flush=True)
    return results


def clips_per_second(case: dict, result: dict) -> List[float]:
    clips = result.get('clips_per_call', case['batch_size'])
    return [clips / s for s in result['seconds']]


def make_rows(cases: List[dict], results: List[dict]) -> List[dict]:
    """Table rows with clips/s (median and range), GFLOP/s, % of the matmul peak, ratio to torch."""
    peaks = [r['flops'] / min(r['seconds']) / 1e9
             for c, r in zip(cases, results) if c['job'] == 'matmul' and 'error' not in r]
    peak = max(peaks, default=None)
    torch_speed = {}
    rows = []
    for case, result in zip(cases, results):
        if case['job'] in ('matmul', 'loader_memory'):
            continue
        row = dict(job=case['job'], model=f'R3D-{case["depth"]}' if case['depth'] else '-',
                   impl=f'{case["impl"]} {case["backend"]}', error=result.get('error'),
                   peak_rss=result.get('peak_rss'))
        if row['error'] is None:
            speeds = clips_per_second(case, result)
            row.update(speed=statistics.median(speeds), low=min(speeds), high=max(speeds),
                       step_rss=result['peak_rss'] - result['base_rss'])
            flops = result.get('flops_per_clip')
            if flops is None:  # torch rows: the same architecture as Paddle's of that depth
                flops = next((r.get('flops_per_clip') for c, r in zip(cases, results)
                              if c['job'] == case['job'] and c['depth'] == case['depth']
                              and r.get('flops_per_clip')), None)
            if flops and case['job'] != 'data':
                row['gflops'] = row['speed'] * flops / 1e9
                if peak:
                    row['of_peak'] = row['gflops'] / peak
            if case['impl'] == 'torch':
                torch_speed[case['job'], case['depth']] = row['speed']
        rows.append(row)
    for row, case in zip(rows, [c for c in cases if c['job'] not in ('matmul', 'loader_memory')]):
        reference = torch_speed.get((case['job'], case['depth']))
        if reference and row.get('speed') and case['impl'] == 'paddle':
            row['ratio'] = row['speed'] / reference
    return rows, peak


def format_table(rows: List[dict]) -> str:
    header = ['job', 'model', 'impl', 'clips/s', 'range', 'vs torch', 'GFLOP/s', '% peak',
              'peak RSS MB', 'job RSS MB']
    lines = []
    for r in rows:
        if r['error']:
            lines.append([r['job'], r['model'], r['impl'], 'error: ' + r['error']] + [''] * 6)
            continue
        lines.append([r['job'], r['model'], r['impl'], f'{r["speed"]:.2f}',
                      f'{r["low"]:.2f}-{r["high"]:.2f}',
                      f'{r["ratio"]:.2f}x' if 'ratio' in r else '',
                      f'{r["gflops"]:.0f}' if 'gflops' in r else '',
                      f'{100 * r["of_peak"]:.0f}%' if 'of_peak' in r else '',
                      f'{r["peak_rss"]:.0f}', f'{r["step_rss"]:.0f}'])
    return markdown_table(header, lines)


def markdown_table(header: List[str], lines: List[list]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]
    out = ['| ' + ' | '.join(h.ljust(w) for h, w in zip(header, widths)) + ' |',
           '|' + '|'.join('-' * (w + 2) for w in widths) + '|']
    out += ['| ' + ' | '.join(str(x).ljust(w) for x, w in zip(line, widths)) + ' |'
            for line in lines]
    return '\n'.join(out)


def format_loader_memory(case: dict, result: dict) -> str:
    """Peak memory of each epoch of the loader_memory job, and its growth from epoch 2 on."""
    title = (f'loader, {case["workers"]} workers, {case["n_videos"]} clips/epoch')
    if 'error' in result:
        return markdown_table([title], [['error: ' + result['error']]])
    epochs = len(result['seconds'])
    header = [title] + [f'epoch {e}' for e in range(1, epochs + 1)] + [f'growth 2->{epochs}']
    lines = []
    for name, key in (('peak RSS MB, main process', 'main_rss'),
                      ('peak PSS MB, main + workers', 'tree_pss')):
        values = result[key]
        lines.append([name] + [f'{v:.0f}' for v in values]
                     + [f'{100 * (values[-1] / values[1] - 1):+.1f}%'])
    lines.append(['seconds'] + [f'{v:.1f}' for v in result['seconds']] + [''])
    return markdown_table(header, lines)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model_depth', nargs='+', type=int, default=[18, 50])
    p.add_argument('--batch_size', type=int, default=8)
    p.add_argument('--sample_duration', type=int, default=16)
    p.add_argument('--sample_size', type=int, default=112)
    p.add_argument('--repeats', type=int, default=5, help='timed calls after warm-up; median shown')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--jobs', nargs='+', choices=['train', 'infer', 'data', 'loader_memory'],
                   default=['train', 'infer', 'data'],
                   help=f'loader_memory: peak memory of each of {LOADER_EPOCHS} epochs of the '
                        f'training loader with {LOADER_WORKERS} workers')
    p.add_argument('--loader_videos', type=int, default=128,
                   help='clips per epoch of the loader_memory job')
    p.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)),
                   help='math threads of Paddle and PyTorch (default: the usable cores)')
    p.add_argument('--no_mkl_fix', dest='mkl_fix', action='store_false',
                   help='do not set MKL_DEBUG_CPU_TYPE=5 for Paddle (set by default on AMD)')
    p.add_argument('--no_torch', action='store_true', help='skip PyTorch even if installed')
    p.add_argument('--quick', action='store_true',
                   help='tiny shapes, one repeat, one subprocess per framework: a smoke test')
    p.add_argument('--cases', help=argparse.SUPPRESS)  # the subprocess's work, as json
    return p


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    if args.cases is not None:
        run_cases_here(json.loads(args.cases))
        return
    if min(args.batch_size, args.sample_duration, args.sample_size, args.repeats, args.threads) < 1:
        raise UserError('--batch_size, --sample_duration, --sample_size, --repeats and --threads '
                        'must be >= 1')
    args.mkl_fix = args.mkl_fix and is_amd()
    args.frame_size, args.clips_per_repeat, args.matmul_size = FRAME_SIZE, 8, MATMUL_SIZE
    if args.quick:
        args.model_depth, args.batch_size, args.sample_duration, args.sample_size = [10], 2, 4, 32
        args.repeats, args.warmup = 1, 1
        args.frame_size, args.clips_per_repeat, args.matmul_size = (64, 48), 2, 256
        args.loader_videos = 8
    with_torch = not args.no_torch and importlib.util.find_spec('torch') is not None
    cases = make_cases(args, with_torch)
    load = os.getloadavg()[0]
    print(f'{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} usable '
          f'cores, {args.threads} math threads, MKL_DEBUG_CPU_TYPE=5: {args.mkl_fix}, load '
          f'average {load:.2f}; input [{args.batch_size}, 3, {args.sample_duration}, '
          f'{args.sample_size}, {args.sample_size}]', file=sys.stderr)
    results = run_cases(cases, args)
    rows, peak = make_rows(cases, results)
    if rows:
        print(format_table(rows))
    for case, result in zip(cases, results):
        if case['job'] == 'loader_memory':
            print(format_loader_memory(case, result))
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
    if 'loader_memory' in args.jobs:
        notes.append('loader memory: peaks sampled every 10 ms while an epoch of batches is read '
                     '(no model); PSS splits the pages the forked workers share with the main '
                     'process')
    notes.append(f'load average before the run: {load:.2f}, after: {os.getloadavg()[0]:.2f}')
    print('\n'.join(notes))


if __name__ == '__main__':
    run_cli(main)
