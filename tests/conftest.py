"""Shared fixtures: tiny frame-folder data sets written on the fly."""
import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from environment import set_cpu_math_env  # noqa: E402

set_cpu_math_env()  # before NumPy and Paddle load
warnings.filterwarnings('ignore', message='No ccache found')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line('filterwarnings', 'ignore:No ccache found')
    config.addinivalue_line('filterwarnings',
                            'ignore:When training, we now always track global mean')


def relative(actual, expected) -> float:
    """Largest absolute difference, relative to the largest magnitude of `expected`."""
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def read_log(path) -> list:
    """The rows of a tab-separated log (train.log, val.log, train_batch.log) as dicts."""
    with open(path, newline='') as f:
        return list(csv.DictReader(f, delimiter='\t'))


def bar_video(direction: int, n_frames: int, size: int, rng: np.random.Generator) -> list:
    """Frames of a bright horizontal bar on noise, moving up (-1) or down (+1) one row a frame.

    One frame does not tell the directions apart; the order of frames does. A horizontal flip
    keeps the direction, so the classes survive the default training augmentation.
    """
    start = int(rng.integers(0, size))
    height = size // 4
    frames = []
    for t in range(n_frames):
        img = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        top = (start + direction * 2 * t) % size
        rows = [(top + k) % size for k in range(height)]
        img[rows] = 230
        frames.append(Image.fromarray(img))
    return frames


def write_frames(folder: Path, frames) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(frames, start=1):
        img.save(folder / f'image_{i:05d}.jpg', quality=90)


def make_motion_dataset(root: Path, n_train: int = 16, n_val: int = 8, n_frames: int = 16,
                        size: int = 32, seed: int = 0) -> tuple:
    """Two classes (`up`, `down`) of jpg frame folders and their annotation json."""
    rng = np.random.default_rng(seed)
    video_path = root / 'jpg'
    database = {}
    for label, direction in (('up', -1), ('down', 1)):
        for subset, count in (('training', n_train), ('validation', n_val)):
            for i in range(count):
                video_id = f'v_{label}_{subset[0]}{i:02d}'
                write_frames(video_path / label / video_id,
                             bar_video(direction, n_frames, size, rng))
                database[video_id] = {'subset': subset, 'annotations': {
                    'label': label, 'segment': [1, n_frames + 1]}}
    annotation_path = root / 'motion.json'
    annotation_path.write_text(json.dumps({'labels': ['up', 'down'], 'database': database}))
    return video_path, annotation_path


def smooth_frames(n_frames: int, width: int, height: int) -> np.ndarray:
    """[T, H, W, 3] frames of soft moving blobs, brighter every frame: JPEG-friendly, and no
    two frames alike, so a frame read in place of another shows."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for t in range(n_frames):
        cx, cy = width * (0.2 + 0.6 * t / n_frames), height * (0.5 + 0.3 * np.sin(t / 4))
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (height / 5) ** 2))
        base = 40 + 4 * t
        frame = np.stack([base + 150 * blob, base + 60 * (x / width), base + 120 * (1 - blob)],
                         axis=-1)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(frames)


def encode(frames: np.ndarray, path: Path, codec_args, extra_args=()) -> None:
    """Encode RGB frames with ffmpeg (`codec_args`, e.g. libx264 with B-frames)."""
    from util_scripts.utils import find_ffmpeg
    _, height, width, _ = frames.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([find_ffmpeg(), '-v', 'error', '-y', '-f', 'rawvideo', '-pix_fmt', 'rgb24',
                    '-s', f'{width}x{height}', '-r', '25', '-i', '-', *codec_args,
                    '-pix_fmt', 'yuv420p', *extra_args, str(path)],
                   input=frames.tobytes(), check=True)


@pytest.fixture
def cpu():
    """Paddle's default device is the CPU during the test: the oneDNN convolutions take host
    memory only (elsewhere they run Paddle's kernel, and a test of them would test nothing)."""
    import paddle
    device = paddle.get_device()
    paddle.set_device('cpu')
    yield
    paddle.set_device(device)


@pytest.fixture(scope='session')
def motion_data(tmp_path_factory):
    """(video_path, annotation_path) of the two-class motion set, made once per test session."""
    return make_motion_dataset(tmp_path_factory.mktemp('motion'))


def count_host_reads(monkeypatch) -> list:
    """A list that gets the method's name at every read of a tensor to the host from now on:
    Tensor.numpy and Tensor.item (float(), int(), np.asarray, tolist and Paddle 2.6's
    set_value(tensor) all call numpy). On a GPU each read waits for the device."""
    import paddle
    reads = []
    for name in ('numpy', 'item'):
        method = getattr(paddle.Tensor, name)

        def spy(self, *args, _method=method, _name=name, **kwargs):
            reads.append(_name)
            return _method(self, *args, **kwargs)
        monkeypatch.setattr(paddle.Tensor, name, spy)
    return reads
