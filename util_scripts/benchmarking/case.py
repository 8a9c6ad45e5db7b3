"""`Case`: one measurement, as the parent process hands it to the subprocess that runs it; and
how calls are timed there."""
import dataclasses
import os
import resource
import time
from typing import Callable, Dict, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Case:
    """What one subprocess measures: `job` of `impl` ('paddle' or 'torch') in `backend`."""
    job: str  # train, infer, profile, matmul, data, loader_memory
    impl: str
    backend: str = ''  # dygraph / onednn / eager / autocast ...: the row's name
    depth: Optional[int] = None  # R3D-depth, for the model jobs
    dtype: str = 'float32'
    batch_size: int = 8
    sample_duration: int = 16
    sample_size: int = 112
    warmup: int = 2
    repeats: int = 5
    threads: int = 1
    matmul_size: int = 2048
    # the data and loader_memory jobs
    n_videos: int = 0
    n_frames: int = 0
    frame_size: Tuple[int, int] = (320, 240)  # (width, height)
    clips_per_repeat: int = 16
    reference: bool = False  # the reference's pipeline too
    video_path: Optional[str] = None  # a data set instead of synthetic frames
    annotation_path: Optional[str] = None
    file_type: str = 'jpg'
    dataset: str = 'ucf101'
    workers: int = 0
    epochs: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, fields: dict) -> 'Case':
        return cls(**dict(fields, frame_size=tuple(fields['frame_size'])))


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
