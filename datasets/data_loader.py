"""The data loaders of main.py: worker processes seeded per epoch, a shard per process."""
import paddle

from distributed import RankShard
from utils import WorkerSeeder


def make_data_loader(dataset, batch_size: int, shuffle: bool, opt, collate_fn=None):
    """A `paddle.io.DataLoader` with `--n_threads` workers seeded per worker and epoch
    (`loader.seeder.seed`, set by the training loop each epoch).

    With --distributed, each process loads its own shard: for training (`shuffle`) a
    DistributedBatchSampler whose order `set_epoch` draws anew, for evaluation a `RankShard`.
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
    loader = paddle.io.DataLoader(dataset, num_workers=opt.n_threads, collate_fn=collate_fn,
                                  worker_init_fn=seeder if opt.n_threads > 0 else None,
                                  **sampling)
    loader.seeder = seeder
    return loader
