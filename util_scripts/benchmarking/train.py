"""The train job (one SGD step on random clips: forward, cross-entropy, backward, momentum
step) and the profile job (where such a step's time goes), on both sides.

The profile's columns: a training step's milliseconds by where they go. oneDNN's verbose mode
times each primitive it runs (convolutions, the reorders between plain and blocked layouts or
float32 and bfloat16, pooling...); the rest of the step is the framework's own kernels (BN,
ReLU, additions; PyTorch's max pooling and autocast's casts), the optimizer and Python.
"""
import contextlib
import ctypes
import os
import statistics
import sys
import tempfile
from typing import Callable

from .case import Case, time_calls
from .workloads import (paddle_flops_per_clip, paddle_model, paddle_precision, random_batch,
                        torch_model, torch_precision, torch_setup)

PROFILE_GROUPS = ['conv forward', 'conv backward data', 'conv backward weights', 'reorders',
                  'other oneDNN']
PROFILE_COLUMNS = PROFILE_GROUPS + ['outside oneDNN']
_CONVOLUTION_GROUPS = {'forward_training': 'conv forward', 'forward_inference': 'conv forward',
                       'backward_data': 'conv backward data',
                       'backward_weights': 'conv backward weights'}


def paddle_train_step(case: Case):
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


def paddle_train(case: Case) -> dict:
    step, flops = paddle_train_step(case)
    return dict(time_calls(step, case.warmup, case.repeats), flops_per_clip=flops)


def torch_train_step(case: Case):
    torch = torch_setup(case)
    model = torch_model(case).train()
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


def torch_train(case: Case) -> dict:
    return time_calls(torch_train_step(case), case.warmup, case.repeats)


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


def profile_steps(step: Callable[[], object], case: Case, verbose) -> dict:
    """A training step's milliseconds (median of `repeats` calls after `warmup` ones), and the
    milliseconds and calls of oneDNN's primitives by group (means over `repeats` more calls,
    from the verbose lines that the library prints on this process's stdout while `verbose()`
    is entered: sent to a file meanwhile). The step is timed without the verbose mode, which
    slows it; the rest of the step is what oneDNN's groups leave of it."""
    step_ms = statistics.median(time_calls(step, case.warmup, case.repeats)['seconds'])
    with tempfile.TemporaryFile('w+') as capture:
        sys.stdout.flush()
        stdout = os.dup(1)
        os.dup2(capture.fileno(), 1)
        try:
            with verbose():
                for _ in range(case.repeats):
                    step()
        finally:  # oneDNN flushes each line; C's stdout buffer, should a build not
            ctypes.CDLL(None).fflush(None)
            os.dup2(stdout, 1)
            os.close(stdout)
        capture.seek(0)
        times, calls = onednn_verbose_times(capture)
    groups = {group: ms / case.repeats for group, ms in times.items()}
    groups['outside oneDNN'] = step_ms * 1e3 - sum(groups.values())
    return dict(step_ms=step_ms * 1e3, groups=groups,
                calls={group: n / case.repeats for group, n in calls.items()})


@contextlib.contextmanager
def paddle_onednn_verbose():
    """oneDNN's verbose mode (a line per primitive run, with its time) in models.onednn's
    library."""
    from models import onednn
    if onednn.library() is None:  # the profile's row says why
        raise RuntimeError(f'no oneDNN to profile: {onednn.load_error() or "not loaded"}')
    with onednn.verbose():
        yield


def paddle_profile(case: Case) -> dict:
    return profile_steps(paddle_train_step(case)[0], case, paddle_onednn_verbose)


def torch_profile(case: Case) -> dict:
    import torch
    step = torch_train_step(case)
    return profile_steps(step, case, lambda: torch.backends.mkldnn.verbose(
        torch.backends.mkldnn.VERBOSE_ON))
