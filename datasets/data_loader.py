"""The data loaders of main.py: worker processes seeded per epoch, a shard per process."""
import numpy as np
import paddle
from paddle.io.dataloader.collate import default_collate_fn

from distributed import RankShard
from utils import WorkerSeeder


def make_data_loader(dataset, batch_size: int, shuffle: bool, opt, collate_fn=None):
    """A `paddle.io.DataLoader` with `--n_threads` workers seeded per worker and epoch
    (`loader.seeder.seed`, set by the training loop each epoch).

    With --distributed, each process loads its own shard: for training (`shuffle`) a
    DistributedBatchSampler whose order `set_epoch` draws anew, for evaluation a `RankShard`.
    `--n_threads 0` reads the batches in the calling thread (`InProcessLoader`).
    """
    seeder = WorkerSeeder(opt.manual_seed)
    if not opt.distributed:
        sampling = dict(batch_size=batch_size, shuffle=shuffle)
    elif shuffle:
        sampling = dict(batch_sampler=paddle.io.DistributedBatchSampler(
            dataset, batch_size, num_replicas=opt.world_size, rank=opt.dist_rank, shuffle=True))
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
