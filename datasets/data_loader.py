"""The data loaders of main.py: worker processes seeded per epoch, a shard per process, and the
sources of a merged annotation drawn in the shares `--source_weights` gives them."""
from typing import Optional, Sequence

import numpy as np
import paddle
from paddle.io.dataloader.collate import default_collate_fn

from distributed import RankShard
from utils import UserError, WorkerSeeder

FEISTEL_ROUNDS = 4  # rounds of the keyed permutation; 4 make a pseudo-random permutation


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer (Steele et al. 2014): every output bit depends on every input
    bit (uint64, wrapping)."""
    with np.errstate(over='ignore'):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def permute(positions: np.ndarray, n: int, key: Sequence[int]) -> np.ndarray:
    """The images of `positions` (in [0, n)) under a pseudo-random permutation of range(n)
    chosen by `key`: a Feistel network on the smallest even number of bits that holds n, walked
    until it lands in range (a bijection of range(n), computed for the positions asked for
    only, so a process never holds the order of the whole epoch)."""
    half = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    keys = np.random.SeedSequence(list(key)).generate_state(FEISTEL_ROUNDS, np.uint64)
    x = np.asarray(positions, dtype=np.uint64)
    todo = np.ones(len(x), bool)
    while todo.any():
        y = x[todo]
        left, right = y >> np.uint64(half), y & mask
        for k in keys:
            left, right = right, left ^ (_mix(right + k) & mask)
        x[todo] = (left << np.uint64(half)) | right
        todo = x >= np.uint64(n)
    return x.astype(np.int64)


class SourceBatchSampler(paddle.io.Sampler):
    """The training batches of one process: each epoch a new random order of the epoch's
    samples, cut into batches of `batch_size` per process, process `rank` of `world_size`
    taking every world_size-th (the last, short batch split evenly, padded by repeating the
    first samples as DistributedBatchSampler does). Step t of all processes together is step
    t of one process with batches of world_size * batch_size.

    `sources` (a source number per video, from the dataset's records) and `weights`: the
    epoch has as many samples as there are videos, and source s a share weights[s] / sum of
    them (rounded); its videos in a random order, repeated when the share is larger than the
    source (a video twice before any a third time), a random subset of them when smaller.
    Without weights every video is drawn once per epoch.
    """

    def __init__(self, sources: np.ndarray, batch_size: int, rank: int = 0,
                 world_size: int = 1, weights: Optional[Sequence[float]] = None):
        sources = np.asarray(sources)
        n_sources = len(weights) if weights is not None else int(sources.max(initial=0)) + 1
        self.sizes = np.bincount(sources, minlength=n_sources).astype(np.int64)
        # a merged annotation lists its sources one after the other: then no order is kept
        self.order = None if np.all(sources[1:] >= sources[:-1]) else \
            np.argsort(sources, kind='stable').astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        n = int(self.sizes.sum())
        if weights is None:
            self.draws = self.sizes.copy()
        else:
            share = np.asarray(weights, dtype=np.float64) * (self.sizes > 0)
            self.draws = np.round(n * share / share.sum()).astype(np.int64)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.epoch_seed = 0

    def set_epoch(self, seed: int) -> None:
        """Draw the next epoch's order from `seed` (the same in every process)."""
        self.epoch_seed = int(seed)

    def epoch_length(self) -> int:
        return int(self.draws.sum())

    def positions(self) -> np.ndarray:
        """This process's positions in the epoch's order (padded to a multiple of world_size)."""
        length, world, batch = self.epoch_length(), self.world_size, self.batch_size
        total = -(-length // world) * world
        full, per_step = total // (world * batch), world * batch
        own = (np.arange(full)[:, None] * per_step + self.rank * batch
               + np.arange(batch)[None, :]).reshape(-1)
        last = (total - full * per_step) // world
        tail = full * per_step + self.rank * last + np.arange(last)
        return np.concatenate([own, tail]) % max(length, 1)

    def indices(self) -> np.ndarray:
        """The dataset indices of this process's samples, in order."""
        length = self.epoch_length()
        if length == 0:
            return np.zeros(0, np.int64)
        q = permute(self.positions(), length, [self.epoch_seed, 0])
        ends = np.cumsum(self.draws)
        source = np.searchsorted(ends, q, side='right')
        j = q - (ends - self.draws)[source]
        sizes = self.sizes[source]
        repeat, within = j // sizes, j % sizes
        video = np.empty(len(q), np.int64)
        for s, r in set(zip(source.tolist(), repeat.tolist())):  # a permutation per pass
            chosen = (source == s) & (repeat == r)
            video[chosen] = self.starts[s] + permute(within[chosen], int(self.sizes[s]),
                                                     [self.epoch_seed, 1, s, r])
        return video if self.order is None else self.order[video]

    def __iter__(self):
        indices = self.indices().tolist()
        for i in range(0, len(indices), self.batch_size):
            yield indices[i:i + self.batch_size]

    def __len__(self) -> int:
        n = len(self.positions())
        return -(-n // self.batch_size)


def source_weights(dataset, weights: Optional[Sequence[float]]) -> Optional[list]:
    """`--source_weights`, checked against the sources of the dataset's annotation."""
    if weights is None:
        return None
    names = dataset.data.source_names
    if not names:
        raise UserError('--source_weights: the annotation has no "sources" (write a merged one '
                        'with python -m util_scripts.merge_json)')
    if len(weights) != len(names):
        raise UserError(f'--source_weights gives {len(weights)} weights; the annotation has '
                        f'{len(names)} sources ({", ".join(names)})')
    return list(weights)


def make_data_loader(dataset, batch_size: int, shuffle: bool, opt, collate_fn=None):
    """A `paddle.io.DataLoader` with `--n_threads` workers seeded per worker and epoch
    (`loader.seeder.seed`, set by the training loop each epoch).

    Training (`shuffle`) with --distributed or --source_weights draws its batches with a
    SourceBatchSampler (`loader.batch_sampler.set_epoch` each epoch): each process its shard,
    each source its share. Evaluation with --distributed: a `RankShard` per process.
    `--n_threads 0` reads the batches in the calling thread (`InProcessLoader`).
    """
    seeder = WorkerSeeder(opt.manual_seed)
    weights = source_weights(dataset, getattr(opt, 'source_weights', None)) if shuffle else None
    if shuffle and (opt.distributed or weights is not None):
        sampling = dict(batch_sampler=SourceBatchSampler(
            dataset.data.sources, batch_size, opt.dist_rank, opt.world_size, weights))
    elif not opt.distributed:
        sampling = dict(batch_size=batch_size, shuffle=shuffle)
    else:
        sampling = dict(batch_sampler=paddle.io.BatchSampler(
            sampler=RankShard(len(dataset), opt.dist_rank, opt.world_size),
            batch_size=batch_size))
    if opt.n_threads == 0:
        batch_sampler = sampling.get('batch_sampler') or paddle.io.BatchSampler(
            dataset, batch_size=batch_size, shuffle=shuffle)
        loader = InProcessLoader(dataset, batch_sampler, collate_fn)
    else:
        loader = paddle.io.DataLoader(dataset, num_workers=opt.n_threads, collate_fn=collate_fn,
                                      worker_init_fn=seeder, **sampling)
    loader.seeder = seeder
    return loader


def _to_tensors(batch):
    """The arrays of a collated batch as Paddle tensors, as paddle.io.DataLoader gives them."""
    if isinstance(batch, np.ndarray):
        return paddle.to_tensor(batch)
    if isinstance(batch, (list, tuple)):
        return [_to_tensors(item) for item in batch]
    if isinstance(batch, dict):
        return {key: _to_tensors(value) for key, value in batch.items()}
    return batch


class InProcessLoader:
    """The batches of `batch_sampler` read in the calling thread (`--n_threads 0`).

    paddle.io.DataLoader without workers reads on a thread of its own; when the dataset raises
    there (a bad frame with --strict_data), the main thread waits in C++ for a batch that never
    comes, where no signal handler runs either: the process hangs, deaf to SIGINT and SIGTERM.
    Here the dataset's error is raised where the batch is asked for.
    """

    def __init__(self, dataset, batch_sampler, collate_fn=None):
        self.dataset, self.batch_sampler = dataset, batch_sampler
        self.collate_fn = collate_fn or default_collate_fn

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        for indices in self.batch_sampler:
            yield _to_tensors(self.collate_fn([self.dataset[i] for i in indices]))
