"""The loader_memory job: peak memory of each epoch of main.py's training loader with worker
processes, over the benchmark's frames (no model)."""
import argparse
import dataclasses
import os
import tempfile
import threading
import time
from pathlib import Path

from .case import Case, rss_mb
from .data import data_options, project_dataset, write_videos
from .tables import markdown_table

LOADER_WORKERS, LOADER_EPOCHS = 4, 5


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


def loader_memory(case: Case) -> dict:
    """Peak memory of each epoch of main.py's training loader with `case.workers` workers."""
    from datasets.data_loader import make_data_loader
    from utils import epoch_seed
    with tempfile.TemporaryDirectory() as folder:
        annotation = write_videos(Path(folder), case.n_videos, case.n_frames, case.frame_size)
        jpg = dataclasses.replace(case, dataset='ucf101', file_type='jpg')
        data = project_dataset(data_options(jpg, Path(folder) / 'jpg', annotation, folder))
        opt = argparse.Namespace(n_threads=case.workers, manual_seed=1, distributed=False)
        loader = make_data_loader(data, case.batch_size, True, opt)
        result = {'main_rss': [], 'tree_pss': [], 'seconds': []}
        for epoch in range(1, case.epochs + 1):
            loader.seeder.seed = epoch_seed(opt.manual_seed, epoch)
            start = time.perf_counter()
            with PeakMemory() as peak:
                for _ in loader:
                    pass
            result['seconds'].append(time.perf_counter() - start)
            result['main_rss'].append(peak.rss)
            result['tree_pss'].append(peak.pss)
    return dict(result, base_rss=0.0)


def format_loader_memory(case: Case, result: dict) -> str:
    """Peak memory of each epoch of the loader_memory job, and its growth from epoch 2 on."""
    title = f'loader, {case.workers} workers, {case.n_videos} clips/epoch'
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
