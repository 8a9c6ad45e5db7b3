"""Small helpers of the loops and scripts: errors and signals (and how often a run reads them),
meters and logs, seeds, VisualDL."""
import csv
import math
import os
import random
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from environment import keep_freed_memory


class UserError(Exception):
    """A mistake in the user's input (a path, an option, a file):
    shown as one line, no traceback."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run; the message says what to do next."""

    def __init__(self, signum: int, message: str = ''):
        super().__init__(message or f'interrupted by {signal.Signals(signum).name}')
        self.signum = signum


class StopSignals:
    """While active, SIGINT and SIGTERM ask the run to stop; `watch(loader)` stops it at the next
    batch by raising `Interrupted`. A second signal raises at once, unless `repeat_raises` is
    False (paddle.distributed.launch signals its processes several times, then kills them).

    Stopping between batches, rather than wherever the signal lands, leaves Paddle's data loader
    in a state that shuts its worker processes down cleanly.
    """

    def __init__(self, repeat_raises: bool = True):
        self.repeat_raises = repeat_raises

    def __enter__(self):
        self.signum = None
        self.previous = {s: signal.signal(s, self._request)
                         for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        return False

    def _request(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        elif self.repeat_raises:
            raise Interrupted(signum)

    def check(self) -> None:
        """Raise `Interrupted` if a signal arrived."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def check_together(self) -> None:
        """`check()` for all processes of a data-parallel run at once: when any of them has been
        signalled, all raise `Interrupted` at the same batch. A process that stopped alone would
        leave the others waiting in the gradient all-reduce of the next backward pass, which
        aborts them when it fails."""
        import paddle
        import paddle.distributed as dist
        if dist.get_world_size() == 1:
            return self.check()
        signum = paddle.to_tensor([self.signum or 0], dtype='int64')
        dist.all_reduce(signum, op=dist.ReduceOp.MAX)
        signum = int(signum.numpy()[0])
        if signum != 0:
            raise Interrupted(self.signum or signum)

    def watch(self, loader, together: bool = False) -> 'WatchedLoader':
        """`loader` checked before each batch and at its end. `together` (training loaders of a
        data-parallel run, whose processes take the same number of batches): `check_together`,
        an all-reduce and a read from the device, so before every `default_read_interval()`-th
        batch only, as the training loop reads its figures, and at the end."""
        if together:
            return WatchedLoader(loader, self.check_together, default_read_interval())
        return WatchedLoader(loader, self.check)


class WatchedLoader:
    """A data loader whose iteration calls `check()` before every `every`-th batch (the first
    too) and at its end."""

    def __init__(self, loader, check: Callable[[], None], every: int = 1):
        self.loader = loader
        self.dataset = getattr(loader, 'dataset', None)
        self.check = check
        self.every = every

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i % self.every == 0:
                self.check()
            yield batch
        self.check()


# Batches whose figures (the training loss and accuracy, the data-parallel stop signal) are read
# from a GPU at once: one transfer and one all-reduce per interval instead of several per step.
# A data-parallel run stops within this many batches of a signal (paddle.distributed.launch
# kills its processes 30 s after it signals them: Controller.stop, pod.stop(timeout=30)).
READ_INTERVAL = 10


def default_read_interval() -> int:
    """Batches per read of figures from the device: `READ_INTERVAL` on a GPU; 1 on the CPU,
    where reading costs nothing."""
    import paddle
    return 1 if paddle.device.get_device() == 'cpu' else READ_INTERVAL


def run_cli(main: Callable[[], object]) -> None:
    """Run a command-line entry point; a `UserError` ends it with one `error:` line and exit status
    1, an interrupt with one line and 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    try:
        main()
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        print(str(e) or 'interrupted', file=sys.stderr)
        sys.exit(128 + getattr(e, 'signum', signal.SIGINT))


class LoaderErrors:
    """Catch a UserError raised in a data-loader worker.

    Paddle re-raises a worker's exception in its reader thread (printing a traceback) and then
    fails the main loop with a SystemError. While this is active, the thread's UserError is kept
    quiet and `reraise()` turns the SystemError back into the worker's one-line message.
    """

    def __enter__(self):
        self.errors = []
        self.previous = threading.excepthook
        threading.excepthook = self._hook
        return self

    def _hook(self, args):
        if isinstance(args.exc_value, UserError):
            self.errors.append(args.exc_value)
        else:
            self.previous(args)

    def __exit__(self, exc_type, exc_value, traceback):
        threading.excepthook = self.previous
        if exc_type is SystemError and self.errors:
            # the worker's traceback is in the message; its last line is the original error,
            # after its class name
            error = self.errors[0]
            lines = [line for line in str(error).splitlines() if line.strip()]
            raise UserError(lines[-1].split(f'{type(error).__name__}: ', 1)[-1]) from exc_value
        return False


class AverageMeter:
    """Running sum, count and average of a scalar."""

    def __init__(self):
        self.val = 0.0
        self.sum = 0.0
        self.count = 0
        self.avg = 0.0

    def update(self, val: float, n: int = 1) -> None:
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count


@dataclass
class BestScores:
    """The best validation accuracy and the lowest validation loss so far, with their epochs."""
    acc: float = -math.inf
    acc_epoch: int = 0
    loss: float = math.inf
    loss_epoch: int = 0

    def update(self, epoch: int, loss: float, acc: float) -> None:
        if acc > self.acc:
            self.acc, self.acc_epoch = acc, epoch
        if loss < self.loss:
            self.loss, self.loss_epoch = loss, epoch

    def __str__(self) -> str:
        return (f'best val acc {self.acc:.3f} (epoch {self.acc_epoch}), lowest val loss '
                f'{self.loss:.4f} (epoch {self.loss_epoch})')


class Logger:
    """Tab-separated log with a header row, flushed after every row (the reference's format).

    `append=True` keeps the rows of an earlier run (used when resuming), dropping those of
    epochs >= `drop_from_epoch` so that a resumed epoch is logged exactly once.
    """

    def __init__(self, path: Path, header: Iterable[str], append: bool = False,
                 drop_from_epoch: int = None):
        self.header = list(header)
        rows = []
        if append and path.exists():
            with path.open(newline='') as f:
                rows = [r for r in csv.DictReader(f, delimiter='\t')
                        if drop_from_epoch is None or int(r['epoch']) < drop_from_epoch]
        self.log_file = path.open('w', newline='')
        self.writer = csv.writer(self.log_file, delimiter='\t')
        self.writer.writerow(self.header)
        for row in rows:
            self.writer.writerow([row.get(col) or '' for col in self.header])  # new columns: ''
        self.log_file.flush()

    def log(self, values: Mapping[str, object]) -> None:
        self.writer.writerow([values[col] for col in self.header])
        self.log_file.flush()

    def close(self) -> None:
        self.log_file.close()


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and Paddle's generators."""
    import numpy as np
    import paddle
    random.seed(seed)
    np.random.seed(seed % 2**32)
    paddle.seed(seed)


def epoch_seed(manual_seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of one epoch (of one process of a data-parallel run): a resumed run draws the same
    crops and order as an uninterrupted one, and the processes draw different crops."""
    return manual_seed + 1000003 * epoch + 7000003 * rank


def exit_quietly(signum, frame) -> None:
    os._exit(0)


class WorkerSeeder:
    """`worker_init_fn` for `paddle.io.DataLoader`:
    distinct Python/NumPy seeds per worker and epoch.

    Workers are forked when an epoch's iteration starts, so they see the `seed` set just before.
    Ctrl-C sends SIGINT to every process of the group: workers ignore it, and the main process
    stops the loader, which ends them. On SIGTERM (a kill of the group, or multiprocessing ending
    them at exit) they exit at once with status 0: no traceback, and no "worker killed" error
    in the main process.
    """

    def __init__(self, seed: int = 0):
        self.seed = seed  # set per epoch (and process) by the training loop

    def __call__(self, worker_id: int) -> None:
        import numpy as np
        keep_freed_memory()  # inherited when forked; not when started by spawn or forkserver
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, exit_quietly)
        seed = self.seed + 7919 * (worker_id + 1)
        random.seed(seed)
        np.random.seed(seed % 2**32)


# VisualDL writes records from a background thread every flush_secs (default 120): a run that is
# killed keeps all but the last few seconds of its curves.
VDL_FLUSH_SECONDS = 5


def open_writer(log_dir: Path):
    """VisualDL's LogWriter into `log_dir` (`--tensorboard`); without VisualDL, a UserError saying
    how to get it. Tags: train/loss, train/acc, train/lr, val/loss, val/acc, train_iter/loss."""
    try:
        from visualdl import LogWriter
    except ImportError as e:
        raise UserError('--tensorboard writes VisualDL logs and needs VisualDL: '
                        'pip install visualdl') from e
    return LogWriter(logdir=str(log_dir), flush_secs=VDL_FLUSH_SECONDS)
