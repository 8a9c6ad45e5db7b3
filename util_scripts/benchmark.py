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

When PyTorch is importable, the same jobs run with a PyTorch 3D ResNet of the reference's layout
(written below) and the reference's data pipeline (PIL decode + torchvision's PIL operations and
tensor conversion, written below with torch ops on one thread, as in PyTorch's DataLoader
workers), and `vs torch` is Paddle's clips/s over PyTorch's.
`--quick` (tiny shapes, one repeat, one subprocess per framework) only checks that all paths run.
"""
import argparse
import contextlib
import ctypes
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

import environment
from utils import UserError, run_cli

ROOT = Path(__file__).resolve().parents[1]
RESULT_TAG = 'BENCHMARK_RESULT '
N_CLASSES = 400  # Kinetics-400, the reference's default
FRAME_SIZE = (320, 240)  # (width, height) of UCF-101 / HMDB-51 / Kinetics frames after resizing
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


# The profile job's columns: a training step's milliseconds by where they go. oneDNN's verbose
# mode times each primitive it runs (convolutions, the reorders between plain and blocked
# layouts or float32 and bfloat16, pooling...); the rest of the step is the framework's own
# kernels (BN, ReLU, additions; PyTorch's max pooling and autocast's casts), the optimizer and
# Python.
PROFILE_GROUPS = ['conv forward', 'conv backward data', 'conv backward weights', 'reorders',
                  'other oneDNN']
PROFILE_COLUMNS = PROFILE_GROUPS + ['outside oneDNN']
_CONVOLUTION_GROUPS = {'forward_training': 'conv forward', 'forward_inference': 'conv forward',
                       'backward_data': 'conv backward data',
                       'backward_weights': 'conv backward weights'}


def onednn_verbose_times(lines) -> tuple:
    """Milliseconds and calls of the primitives that oneDNN's verbose `exec` lines report
    (oneDNN 3.x: `onednn_verbose,[v1,primitive,]exec,ENGINE,KIND,IMPLEMENTATION,PROP_KIND,...,
    TIME`), summed by PROFILE_GROUPS: two dicts."""
    times, calls = dict.fromkeys(PROFILE_GROUPS, 0.0), dict.fromkeys(PROFILE_GROUPS, 0)
    for line in lines:
        fields = line.strip().split(',')
        if not fields[0].endswith('_verbose') or 'exec' not in fields[:4]:
            continue
        at = fields.index('exec')
        kind, prop = fields[at + 2], fields[at + 4]
        if kind == 'convolution':
            group = _CONVOLUTION_GROUPS.get(prop, 'other oneDNN')
        else:
            group = 'reorders' if kind == 'reorder' else 'other oneDNN'
        times[group] += float(fields[-1])
        calls[group] += 1
    return times, calls


def profile_steps(step: Callable[[], object], case: dict, verbose) -> dict:
    """A training step's milliseconds (median of `repeats` calls after `warmup` ones), and the
    milliseconds and calls of oneDNN's primitives by group (means over `repeats` more calls,
    from the verbose lines that the library prints on this process's stdout while `verbose()`
    is entered: sent to a file meanwhile). The step is timed without the verbose mode, which
    slows it (PyTorch's R3D-50 step by 13% in one run); the rest of the step is what oneDNN's
    groups leave of it."""
    step_ms = statistics.median(time_calls(step, case['warmup'], case['repeats'])['seconds'])
    with tempfile.TemporaryFile('w+') as capture:
        sys.stdout.flush()
        stdout = os.dup(1)
        os.dup2(capture.fileno(), 1)
        try:
            with verbose():
                for _ in range(case['repeats']):
                    step()
        finally:  # oneDNN flushes each line; C's stdout buffer, should a build not
            ctypes.CDLL(None).fflush(None)
            os.dup2(stdout, 1)
            os.close(stdout)
        capture.seek(0)
        times, calls = onednn_verbose_times(capture)
    groups = {group: ms / case['repeats'] for group, ms in times.items()}
    groups['outside oneDNN'] = step_ms * 1e3 - sum(groups.values())
    return dict(step_ms=step_ms * 1e3, groups=groups,
                calls={group: n / case['repeats'] for group, n in calls.items()})


def paddle_model(case: dict):
    import paddle
    from models.resnet import generate_model
    paddle.seed(0)
    return generate_model(case['depth'], n_classes=N_CLASSES)


def random_batch(case: dict, seed: int = 0):
    """Clips [N, 3, T, H, W] and labels [N], as numpy arrays."""
    rng = np.random.default_rng(seed)
    shape = [case['batch_size'], 3, case['sample_duration'], case['sample_size'],
             case['sample_size']]
    return (rng.standard_normal(shape, dtype=np.float32),
            rng.integers(0, N_CLASSES, case['batch_size']))


def paddle_flops_per_clip(model, case: dict) -> float:
    """Multiply-adds x 2 of the Conv3D and Linear layers for one clip."""
    import paddle
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


def paddle_train_step(case: dict):
    """A training step of our R3D on random clips (a call), and its FLOPs per clip."""
    import paddle
    import paddle.nn.functional as F
    model = paddle_model(case)
    flops = paddle_flops_per_clip(model, case)
    optimizer = paddle.optimizer.Momentum(0.1, momentum=0.9, parameters=model.parameters(),
                                          weight_decay=1e-3)
    clips, labels = random_batch(case)
    clips, labels = paddle.to_tensor(clips), paddle.to_tensor(labels)
    model.train()
    precision = paddle_precision(case)

    def step():
        with precision():
            loss = F.cross_entropy(model(clips), labels)
        optimizer.clear_grad()
        loss.backward()
        optimizer.step()
        return float(loss)
    return step, 3 * flops


def paddle_train(case: dict) -> dict:
    step, flops = paddle_train_step(case)
    return dict(time_calls(step, case['warmup'], case['repeats']), flops_per_clip=flops)


@contextlib.contextmanager
def paddle_onednn_verbose():
    """oneDNN's verbose mode (a line per primitive run, with its time) in models.onednn's
    library."""
    from models import onednn
    if onednn.library() is None:  # the profile's row says why
        raise RuntimeError(f'no oneDNN to profile: {onednn.load_error() or "not loaded"}')
    with onednn.verbose():
        yield


def paddle_profile(case: dict) -> dict:
    return profile_steps(paddle_train_step(case)[0], case, paddle_onednn_verbose)


def paddle_infer(case: dict) -> dict:
    import inference
    model = paddle_model(case)
    flops = paddle_flops_per_clip(model, case)
    clips, _ = random_batch(case)
    logits = inference.make_logits_fn(model, clips, case['backend'])
    precision = paddle_precision(case)

    def forward():
        with precision():
            return logits(clips)
    return dict(time_calls(forward, case['warmup'], case['repeats']), flops_per_clip=flops)


def paddle_precision(case: dict):
    """The context of `--amp bfloat16` on CPU (training.autocast), or none for float32."""
    import training
    return lambda: training.autocast(case['dtype'] if case['dtype'] == 'bfloat16' else None)


def paddle_matmul(case: dict) -> dict:
    """The faster of Paddle's `a @ b` (MKL; on AMD its AVX2 path) and oneDNN's matmul (the
    library the training convolutions run on, AVX-512 where the processor has it)."""
    import paddle
    n = case['matmul_size']
    a, b = paddle.randn([n, n]), paddle.randn([n, n])
    results = [time_calls(lambda: (a @ b).numpy(), 1, max(3, case['repeats']))]
    onednn_call = onednn_matmul(a, b)
    if onednn_call is not None:
        results.append(time_calls(onednn_call, 1, max(3, case['repeats'])))
    return dict(min(results, key=lambda r: min(r['seconds'])), flops=2 * n ** 3)


def onednn_matmul(a, b):
    """A call computing a @ b with oneDNN's matmul primitive (models.onednn's library), or None."""
    import paddle
    from models import onednn
    library = onednn.library()
    if library is None:
        return None
    plan = onednn.MatmulPlan(library, a.shape, b.shape)
    c = paddle.empty([a.shape[0], b.shape[1]], dtype='float32')

    def call():
        plan.run(a.data_ptr(), b.data_ptr(), c.data_ptr())
        return c
    return call


# A PyTorch 3D ResNet of the reference's layout (conv1 7x7x7 stride (1, 2, 2), max pool, shortcut
# 'B'), written for this benchmark from the paper's description.
def torch_resnet(depth: int):
    import torch.nn as nn

    def conv_bn(c_in, c_out, kernel, stride=1):
        return [nn.Conv3d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                nn.BatchNorm3d(c_out)]

    class Block(nn.Module):
        def __init__(self, c_in, planes, stride, bottleneck):
            super().__init__()
            c_out = planes * (4 if bottleneck else 1)
            if bottleneck:
                layers = (conv_bn(c_in, planes, 1) + [nn.ReLU()]
                          + conv_bn(planes, planes, 3, stride) + [nn.ReLU()]
                          + conv_bn(planes, c_out, 1))
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


def torch_train_step(case: dict):
    torch = torch_setup(case)
    model = torch_resnet(case['depth']).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    clips, labels = (torch.from_numpy(a) for a in random_batch(case))
    precision = torch_precision(torch, case)

    def step():
        with precision:
            loss = torch.nn.functional.cross_entropy(model(clips), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss)
    return step


def torch_train(case: dict) -> dict:
    return time_calls(torch_train_step(case), case['warmup'], case['repeats'])


def torch_profile(case: dict) -> dict:
    import torch
    step = torch_train_step(case)
    return profile_steps(step, case, lambda: torch.backends.mkldnn.verbose(
        torch.backends.mkldnn.VERBOSE_ON))


def torch_infer(case: dict) -> dict:
    torch = torch_setup(case)
    model = torch_resnet(case['depth']).eval()
    clips = torch.from_numpy(random_batch(case)[0])

    precision = torch_precision(torch, case)

    def forward():
        with torch.no_grad(), precision:
            return model(clips).float().numpy()
    return time_calls(forward, case['warmup'], case['repeats'])


def torch_precision(torch, case: dict):
    """PyTorch's CPU mixed precision for bfloat16 rows (autocast), else nothing."""
    if case['dtype'] == 'bfloat16':
        return torch.autocast('cpu', dtype=torch.bfloat16)
    return contextlib.nullcontext()


def torch_matmul(case: dict) -> dict:
    torch = torch_setup(case)
    n = case['matmul_size']
    a, b = torch.randn(n, n), torch.randn(n, n)
    return dict(time_calls(lambda: a @ b, 1, max(3, case['repeats'])), flops=2 * n ** 3)


def write_videos(folder: Path, n_videos: int, n_frames: int, size) -> Path:
    """Frame folders of smooth moving colour gradients with mild noise, and their annotation json
    (each video in the training subset, and again, by its `video_path`, in the validation one)."""
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
        annotations = {'label': 'c', 'segment': [1, n_frames + 1]}
        database[f'v{v}'] = {'subset': 'training', 'annotations': annotations}
        database[f'v{v}_val'] = {'subset': 'validation', 'annotations': annotations,
                                 'video_path': str(video)}
    annotation = folder / 'data.json'
    annotation.write_text(json.dumps({'labels': ['c'], 'database': database}))
    return annotation


def data_options(case: dict, video_path, annotation_path, result_path):
    """main.py's options for the data sets (opts.parse_opts + resolve_model_input, as get_opt)."""
    from opts import parse_opts, resolve_model_input
    opt = parse_opts(['--video_path', str(video_path), '--annotation_path', str(annotation_path),
                      '--result_path', str(result_path), '--dataset', case['dataset'],
                      '--file_type', case['file_type'], '--sample_size', str(case['sample_size']),
                      '--sample_duration', str(case['sample_duration'])])
    resolve_model_input(opt)
    return opt


def project_dataset(opt, pipeline: str = 'train'):
    """main.py's training or validation data set, built as main.get_train_utils and
    main.get_val_utils build them."""
    from datasets import get_training_data, get_validation_data
    from spatial_transforms import get_train_spatial_transform, get_val_spatial_transform
    from temporal_transforms import (TemporalCenterCrop, TemporalEvenCrop, TemporalRandomCrop,
                                     get_temporal_transform)
    if pipeline == 'train':
        t_crop = TemporalRandomCrop if opt.train_t_crop == 'random' else TemporalCenterCrop
        return get_training_data(opt.video_path, opt.annotation_path, opt.dataset,
                                 opt.input_type, opt.file_type, get_train_spatial_transform(opt),
                                 get_temporal_transform(opt, t_crop(opt.sample_duration)))
    data, _ = get_validation_data(opt.video_path, opt.annotation_path, opt.dataset,
                                  opt.input_type, opt.file_type, get_val_spatial_transform(opt),
                                  get_temporal_transform(opt, TemporalEvenCrop(
                                      opt.sample_duration, opt.n_val_samples)))
    return data


def project_clips(data, fast_path: bool) -> Callable[[int], int]:
    """Video i's sample from our data set (fast path on or off); returns its number of clips."""
    def sample(i):
        data.fast_path = fast_path
        clips, _ = data[i]
        return 1 if isinstance(clips, np.ndarray) else len(clips)
    return sample


def reference_clips(case: dict, opt, data, pipeline: str) -> Callable[[int], int]:
    """The reference's loading and transforms of the clips `data` makes of video i (the same
    frames; for the same state of Python's `random`, the same crops and flips); returns the
    number of clips. As the reference runs them: its VideoLoader (a path.exists() and a PIL
    decode + convert('RGB') per frame; hdf5: Image.open of the bytes, decoded by the first
    transform), then per frame torchvision's PIL crop / resize / flip, to_tensor, ScaleValue
    (in place) and F.normalize (a clone, mean and std made tensors per call), then
    torch.stack(...).permute(1, 0, 2, 3)."""
    from PIL import Image
    from spatial_transforms import _center_offset, random_resized_crop_box, resized_size
    torch = torch_setup(case)
    torch.set_num_threads(1)  # as in the workers of PyTorch's DataLoader, which set it so
    size, scale, mean, std = opt.sample_size, opt.value_scale, list(opt.mean), list(opt.std)
    crop_scale = (opt.train_crop_min_scale, 1.0)
    crop_ratio = (opt.train_crop_min_ratio, 1 / opt.train_crop_min_ratio)

    def load(video_path, indices):
        if opt.file_type == 'hdf5':
            import h5py
            with h5py.File(video_path, 'r') as f:
                video = f['video']
                return [Image.open(io.BytesIO(video[i - 1])) for i in indices if i <= len(video)]
        frames = []
        for i in indices:
            path = video_path / f'image_{i:05d}.jpg'
            if path.exists():
                with path.open('rb') as f, Image.open(f) as img:
                    frames.append(img.convert('RGB'))
        return frames

    def to_tensor(img):  # torchvision.transforms.functional.to_tensor
        arr = torch.from_numpy(np.array(img, np.uint8, copy=True))
        arr = arr.view(img.size[1], img.size[0], len(img.getbands()))
        return arr.permute((2, 0, 1)).contiguous().to(dtype=torch.get_default_dtype()).div(255)

    def normalize(tensor):  # torchvision.transforms.functional.normalize, inplace=False
        tensor = tensor.clone()
        m = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device)
        s = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device)
        if (s == 0).any():
            raise ValueError('std 0')
        return tensor.sub_(m.view(-1, 1, 1)).div_(s.view(-1, 1, 1))

    def clip(frames):
        flip = pipeline == 'train' and not opt.no_hflip and random.random() < 0.5
        box = None
        out = []
        for img in frames:
            if pipeline == 'train':
                if box is None:
                    box = random_resized_crop_box(*img.size, crop_scale, crop_ratio)
                top, left, h, w = box
                img = img.crop((left, top, left + w, top + h)).resize((size, size),
                                                                     Image.BILINEAR)
                if flip:
                    img = img.transpose(Image.FLIP_LEFT_RIGHT)
            else:
                img = img.resize(resized_size(*img.size, size), Image.BILINEAR)
                left, top = _center_offset(img.size[0], size), _center_offset(img.size[1], size)
                img = img.crop((left, top, left + size, top + size))
            tensor = to_tensor(img)
            tensor *= scale
            out.append(normalize(tensor))
        return torch.stack(out, 0).permute(1, 0, 2, 3)

    def sample(i):
        indices = data.temporal_transform(data.data[i]['frame_indices'])
        clips = [indices] if pipeline == 'train' else indices
        video_path = data.data.video_path(i)
        return len([clip(load(video_path, c)) for c in clips])
    return sample


def data_pipelines(case: dict) -> dict:
    """Clips/s of main.py's training and validation data sets, fast path on and off, and of the
    reference's pipeline for the same clips: repeats interleaved in this one process, each
    repeat of each side starting from the same random state."""
    result, base_rss = {}, rss_mb()
    with tempfile.TemporaryDirectory() as folder:
        if case['video_path'] is None:
            annotation = write_videos(Path(folder), case['n_videos'], case['n_frames'],
                                      case['frame_size'])
            opt = data_options(case, Path(folder) / 'jpg', annotation, folder)
        else:
            opt = data_options(case, case['video_path'], case['annotation_path'], folder)
        for pipeline in ('train', 'val'):
            data = project_dataset(opt, pipeline)
            videos = random.Random(0).sample(range(len(data)), min(len(data), case['n_videos']))
            sides = {'ours': project_clips(data, True), 'plain': project_clips(data, False)}
            if case['reference'] and opt.file_type != 'video':
                sides['reference'] = reference_clips(case, opt, data, pipeline)
            per_repeat = max(1, case['clips_per_repeat'] // (1 if pipeline == 'train'
                                                             else opt.n_val_samples))
            times = {name: [] for name in sides}
            clips = {name: [] for name in sides}
            for repeat in range(case['warmup'] + case['repeats']):
                chosen = [videos[(repeat * per_repeat + j) % len(videos)]
                          for j in range(per_repeat)]
                for name, sample in sides.items():
                    random.seed(repeat)
                    start = time.perf_counter()
                    n = sum(sample(i) for i in chosen)
                    if repeat >= case['warmup']:
                        times[name].append(time.perf_counter() - start)
                        clips[name].append(n)
            result[pipeline] = {name: [c / s for c, s in zip(clips[name], times[name])]
                                for name in sides}
    return dict(result, base_rss=base_rss)


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
        data = project_dataset(data_options(dict(case, dataset='ucf101', file_type='jpg'),
                                            Path(folder) / 'jpg', annotation, folder))
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
    ('paddle', 'profile'): paddle_profile, ('torch', 'profile'): torch_profile,
    ('paddle', 'matmul'): paddle_matmul, ('paddle', 'data'): data_pipelines,
    ('torch', 'train'): torch_train, ('torch', 'infer'): torch_infer,
    ('torch', 'matmul'): torch_matmul,
    ('paddle', 'loader_memory'): loader_memory,
}


def run_cases_here(cases: List[dict]) -> None:
    """Subprocess side: measure each case and print one tagged json line of results."""
    results = []
    if any(case['impl'] == 'paddle' for case in cases):
        environment.setup()  # as main.py does; child_env's variables win
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

# instruction sets that decide the speed of the convolutions, as /proc/cpuinfo names them
ISA_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_bf16')


def cpu_description() -> str:
    """'MODEL (flags: ...)' from /proc/cpuinfo, or the platform's word for the processor."""
    try:
        info = Path('/proc/cpuinfo').read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(':', 1) for line in info.splitlines()[:40] if ':' in line)
    model = fields.get('model name\t', '').strip() or platform.machine()
    flags = set(fields.get('flags\t\t', '').split())
    return f'{model} ({" ".join(f for f in ISA_FLAGS if f in flags) or "no AVX2"})'


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


def run_subprocess(cases: List[dict], env: dict) -> List[dict]:
    """Run `cases` in one fresh interpreter; an error dict per case if it dies."""
    command = [sys.executable, '-m', 'util_scripts.benchmark', '--cases', json.dumps(cases)]
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


def make_cases(args, with_torch: bool) -> List[dict]:
    shape = dict(batch_size=args.batch_size, sample_duration=args.sample_duration,
                 sample_size=args.sample_size, warmup=args.warmup, repeats=args.repeats,
                 threads=args.threads)
    impls = ['paddle', 'torch'] if with_torch else ['paddle']
    shape['dtype'] = 'float32'
    cases = []
    for depth in args.model_depth:
        for dtype in args.dtypes:
            precise = dict(shape, dtype=dtype)
            for job in ('train', 'profile'):  # a training step: timed, and taken apart
                if job in args.jobs:
                    cases.append(dict(precise, job=job, impl='paddle', depth=depth,
                                      backend='dygraph'))
                    if with_torch and torch_runs(dtype, args.quick):
                        cases.append(dict(precise, job=job, impl='torch', depth=depth,
                                          backend='eager' if dtype == 'float32' else 'autocast'))
            if 'infer' in args.jobs:
                cases += [dict(precise, job='infer', impl='paddle', depth=depth, backend=b)
                          for b in (('dygraph', 'onednn') if dtype == 'float32' else
                                    ('dygraph',))]
                if with_torch and torch_runs(dtype, args.quick):
                    cases.append(dict(precise, job='infer', impl='torch', depth=depth,
                                      backend='eager' if dtype == 'float32' else 'autocast'))
    if 'data' in args.jobs:
        cases.append(dict(shape, job='data', impl='paddle', depth=None, backend='pipelines',
                          n_videos=4 if args.video_path is None else args.data_videos,
                          n_frames=max(args.sample_duration * 2, 8), frame_size=args.frame_size,
                          clips_per_repeat=args.clips_per_repeat, reference=with_torch,
                          video_path=args.video_path, annotation_path=args.annotation_path,
                          file_type=args.file_type, dataset=args.dataset))
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
        env = child_env(args.threads, args.mkl_fix and impl == 'paddle')
        for i, result in zip(indices, run_subprocess([cases[i] for i in indices], env)):
            results[i] = result
            status = result.get('error', 'ok')
            print(f'  {cases[i]["job"]} {impl} {cases[i]["backend"]} '
                  f'{cases[i]["depth"] or ""}: {status}', file=sys.stderr, flush=True)
    return results


def clips_per_second(case: dict, result: dict) -> List[float]:
    clips = result.get('clips_per_call', case['batch_size'])
    return [clips / s for s in result['seconds']]


NOT_IN_TABLE = ('matmul', 'loader_memory', 'data', 'profile')  # jobs with tables of their own


def make_rows(cases: List[dict], results: List[dict]) -> List[dict]:
    """Table rows with clips/s (median and range), GFLOP/s, % of the matmul peak, ratio to torch."""
    peaks = [r['flops'] / min(r['seconds']) / 1e9
             for c, r in zip(cases, results) if c['job'] == 'matmul' and 'error' not in r]
    peak = max(peaks, default=None)
    torch_speed = {}
    rows = []
    for case, result in zip(cases, results):
        if case['job'] in NOT_IN_TABLE:
            continue
        row = dict(job=case['job'], model=f'R3D-{case["depth"]}' if case['depth'] else '-',
                   impl=f'{case["impl"]} {case["backend"]}', dtype=case['dtype'],
                   error=result.get('error'), peak_rss=result.get('peak_rss'))
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
                torch_speed[case['job'], case['depth'], case['dtype']] = row['speed']
        rows.append(row)
    for row, case in zip(rows, [c for c in cases if c['job'] not in NOT_IN_TABLE]):
        reference = torch_speed.get((case['job'], case['depth'], case['dtype']))
        if reference and row.get('speed') and case['impl'] == 'paddle':
            row['ratio'] = row['speed'] / reference
    for case, result in zip(cases, results):
        if case['job'] == 'data':
            rows += data_rows(result)
    return rows, peak


def data_rows(result: dict) -> List[dict]:
    """The training pipeline's rows of the data job in the main table: ours and the
    reference's (the data table has the rest)."""
    base = dict(job='data', model='-', error=result.get('error'),
                peak_rss=result.get('peak_rss'))
    if 'peak_rss' in result and 'base_rss' in result:
        base['step_rss'] = result['peak_rss'] - result['base_rss']
    if base['error'] is not None:
        return [dict(base, impl='paddle project')]
    rows = []
    for side, impl in (('ours', 'paddle project'), ('reference', 'torch reference')):
        speeds = result['train'].get(side)
        if speeds:
            rows.append(dict(base, impl=impl, speed=statistics.median(speeds), low=min(speeds),
                             high=max(speeds)))
    if len(rows) == 2:
        rows[0]['ratio'] = rows[0]['speed'] / rows[1]['speed']
    return rows


def format_table(rows: List[dict]) -> str:
    header = ['job', 'model', 'impl', 'dtype', 'clips/s', 'range', 'vs torch', 'GFLOP/s',
              '% peak', 'peak RSS MB', 'job RSS MB']
    lines = []
    for r in rows:
        dtype = r.get('dtype', '')
        if r['error']:
            lines.append([r['job'], r['model'], r['impl'], dtype, 'error: ' + r['error']]
                         + [''] * 6)
            continue
        lines.append([r['job'], r['model'], r['impl'], dtype, f'{r["speed"]:.2f}',
                      f'{r["low"]:.2f}-{r["high"]:.2f}',
                      f'{r["ratio"]:.2f}x' if 'ratio' in r else '',
                      f'{r["gflops"]:.0f}' if 'gflops' in r else '',
                      f'{100 * r["of_peak"]:.0f}%' if 'of_peak' in r else '',
                      f'{r["peak_rss"]:.0f}', f'{r["step_rss"]:.0f}'])
    return markdown_table(header, lines)


def format_profile(cases: List[dict], results: List[dict]) -> str:
    """The profile job's table: where a training step's milliseconds go, ours beside
    PyTorch's."""
    lines = []
    for case, result in zip(cases, results):
        if case['job'] != 'profile':
            continue
        cells = [f'R3D-{case["depth"]}', case['dtype'], f'{case["impl"]} {case["backend"]}']
        if 'error' in result:
            cells += [result['error']] + [''] * len(PROFILE_COLUMNS)
        else:
            cells += [f'{result["step_ms"]:.0f}', *(f'{result["groups"][column]:.0f}'
                                                    for column in PROFILE_COLUMNS)]
        lines.append(cells)
    return markdown_table(['model', 'dtype', 'impl', 'step ms', *PROFILE_COLUMNS], lines)


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


DATA_PIPELINES = {'train': 'training: random resized crop + flip',
                  'val': 'validation: resize + center crop'}


def format_data(case: dict, result: dict) -> str:
    """Clips/s per process of our training and validation pipelines (fast path on and off)
    and of the reference's, with the ratios."""
    if case['video_path'] is None:
        frames = '{}x{} jpg, the benchmark\'s frames'.format(*case['frame_size'])
    else:
        frames = f'{case["video_path"]} ({case["file_type"]})'
    title = (f'data, clips/s per process ([3, {case["sample_duration"]}, {case["sample_size"]}, '
             f'{case["sample_size"]}]; {frames})')
    if 'error' in result:
        return markdown_table([title], [['error: ' + result['error']]])
    header = [title, 'reference', 'ours', 'vs reference', 'ours, fast path off', 'vs reference']
    lines = []
    for pipeline, name in DATA_PIPELINES.items():
        speeds = {side: statistics.median(v) for side, v in result[pipeline].items()}
        ref = speeds.get('reference')

        def cell(side):
            return [f'{speeds[side]:.1f}', f'{speeds[side] / ref:.2f}x' if ref else '']
        lines.append([name, f'{ref:.1f}' if ref else 'n/a'] + cell('ours') + cell('plain'))
    return markdown_table(header, lines)


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
        run_cases_here(json.loads(args.cases))
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
        if case['job'] == 'loader_memory':
            print(format_loader_memory(case, result))
        if case['job'] == 'data':
            print(format_data(case, result))
    if 'profile' in args.jobs:
        print(format_profile(cases, results))
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
