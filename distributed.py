"""Data parallelism on paddle.distributed.launch: what `--distributed` changes.

launch starts one process per device (`--nproc_per_node`) on each node (`--nnodes`) and tells
each its rank in environment variables. With `--distributed` each process then:

- loads its own shard of the training batches (datasets.data_loader.SourceBatchSampler, one
  order for all, drawn anew each epoch, each process computing its own positions only) and of
  the evaluation videos (`RankShard`: no padding);
- trains its model under paddle.DataParallel, which averages the gradients in backward;
- averages its BatchNorm running statistics with the others' at the end of each epoch
  (`average_batch_norm_stats`), or syncs the batch statistics on GPU with --batchnorm_sync;
- logs sums over all processes (`all_sum`), so that every log holds the same numbers;
- leaves opts.json, logs, checkpoints and the inference json to rank 0 (`is_master_node`).
"""
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import paddle
import paddle.distributed as dist

from environment import launched_world
from model import track_unbiased_variance
from utils import UserError

MAIN_SCRIPT = Path(__file__).resolve().parent / 'main.py'


def resolve_distributed(opt, argv, device: str, environ=os.environ) -> None:
    """Set `dist_rank`, `world_size` (the number of processes) and `is_master_node` (rank 0).

    The processes of a data-parallel run are paddle.distributed.launch's. `--distributed` without
    it starts launch in this process's place, one process per GPU, as the reference spawns one
    per GPU; `--world_size` and `--dist_url` become launch's `--nnodes` and `--master`.
    """
    world = launched_world(environ)
    if world is None:
        if opt.distributed:
            argv = sys.argv[1:] if argv is None else argv
            n_gpus = paddle.device.cuda.device_count() if device == 'gpu' else 0
            command = launch_command(opt, argv, n_gpus, environ)
            print('starting', ' '.join(command), flush=True)
            os.execv(command[0], command)
        opt.dist_rank, opt.world_size, opt.is_master_node = 0, 1, True
        return
    rank, size = world
    if size > 1 and not opt.distributed:
        raise UserError(f'paddle.distributed.launch started {size} processes: add --distributed '
                        '(without it each would train a model of its own)')
    nodes = int(environ.get('PADDLE_NNODES', 1))
    if opt.world_size > 1 and opt.world_size != nodes:
        raise UserError(f'--world_size {opt.world_size}, but paddle.distributed.launch started '
                        f'{nodes} node(s) (its --nnodes)')
    opt.dist_rank, opt.world_size, opt.is_master_node = rank, size, rank == 0


def launch_command(opt, argv, n_gpus: int, environ=os.environ) -> list:
    """The paddle.distributed.launch command that runs main.py with `argv` on `n_gpus` GPUs."""
    if n_gpus == 0:
        raise UserError('--distributed: no GPU to start a process on; start the processes with '
                        'paddle.distributed.launch (gloo on CPU), e.g. python -m '
                        f'paddle.distributed.launch --nproc_per_node 2 {MAIN_SCRIPT} '
                        f'{" ".join(argv)}')
    command = [sys.executable, '-m', 'paddle.distributed.launch', '--nproc_per_node', str(n_gpus),
               '--log_dir', str(opt.result_path / 'log')]
    if opt.world_size > 1:
        master = re.fullmatch(r'(?:tcp://)?([^:/]+:\d+)/?', opt.dist_url)
        if master is None:
            raise UserError(f'--dist_url {opt.dist_url}: expected tcp://host:port')
        command += ['--nnodes', str(opt.world_size), '--master', master.group(1)]
        if 'OMPI_COMM_WORLD_RANK' in environ:  # started by mpirun, as the reference expects
            command += ['--rank', environ['OMPI_COMM_WORLD_RANK']]
    return command + [str(MAIN_SCRIPT)] + list(argv)


def init_distributed(device: str, environ=os.environ) -> None:
    """Join the process group on `device` ('cpu' or 'gpu', main.py's own decision).

    Paddle picks the collective backend from PADDLE_DISTRI_BACKEND, which launch sets to gloo
    only when it sees no GPU; left at 'auto' on a CUDA build, init_parallel_env takes NCCL and
    puts the process on its GPU, whatever --no_cuda said. So a CPU run asks for gloo itself.
    On GPU, init_parallel_env also selects this process's GPU.
    """
    if device == 'cpu':
        environ['PADDLE_DISTRI_BACKEND'] = 'gloo'
    dist.init_parallel_env()
    if device == 'cpu':
        paddle.set_device('cpu')


def all_sum(values: Iterable[float]) -> np.ndarray:
    """Element-wise sums of `values` over the processes of a data-parallel run (float64); the
    values themselves in a single process. Every process must call it, with as many values."""
    values = np.asarray(list(values), dtype='float64')
    if dist.get_world_size() == 1:
        return values
    tensor = paddle.to_tensor(values)
    dist.all_reduce(tensor)
    return tensor.numpy()


def average_batch_norm_stats(model) -> None:
    """Set every BatchNorm layer's running mean and variance to their means over the processes.

    Without SyncBatchNorm each process tracks them on its own shard. The running averages are
    linear in the batch statistics, so averaging them at the end of an epoch gives what tracking
    the mean of the processes' batch statistics at every step would have given.
    """
    world = dist.get_world_size()
    if world == 1:
        return
    stats = [t for layer in model.sublayers()  # Paddle's BatchNorm layers, SyncBatchNorm too
             if hasattr(layer, '_mean') and hasattr(layer, '_variance')
             for t in (layer._mean, layer._variance)]
    with paddle.no_grad():
        flat = paddle.concat([t.reshape([-1]) for t in stats])
        dist.all_reduce(flat)
        flat = flat / world
        offset = 0
        for t in stats:
            n = int(t.numel())
            t.set_value(flat[offset:offset + n].reshape(t.shape))
            offset += n


def sync_batch_norm(model, device: str):
    """--batchnorm_sync: SyncBatchNorm layers on GPU. Paddle has no CPU kernel for them: there
    the BatchNorm layers stay, and their running statistics are averaged every epoch."""
    if device == 'gpu':
        return track_unbiased_variance(paddle.nn.SyncBatchNorm.convert_sync_batchnorm(model))
    warnings.warn('--batchnorm_sync: Paddle has no SyncBatchNorm on CPU; training goes on with '
                  'BatchNorm per process (running statistics averaged across processes every '
                  'epoch)')
    return model


def is_lost_peer(error: BaseException) -> bool:
    """Whether `error` is a collective operation's failure (gloo, NCCL) on losing a process."""
    return isinstance(error, RuntimeError) and bool(
        re.search(r'gloo|nccl|connection (closed|reset)', str(error), re.IGNORECASE))


class RankShard(paddle.io.Sampler):
    """Indices rank, rank + world_size, ... of a dataset of `n` samples: one process's share of
    an evaluation, each sample seen once in all (no padding, unlike DistributedBatchSampler)."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.indices = range(rank, n, world_size)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
