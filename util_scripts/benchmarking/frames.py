"""Synthetic videos for the benchmarks: frame folders of smooth moving colour gradients with
mild noise (JPEG, as generate_video_jpgs writes them), which decode and crop like real ones."""
from pathlib import Path
from typing import Tuple

import numpy as np


def write_video(folder: Path, n_frames: int, size: Tuple[int, int], index: int,
                rng: np.random.Generator) -> None:
    """Frames image_00001.jpg ... of video number `index` (its gradients' phase) in `folder`;
    `size` is (width, height)."""
    from PIL import Image
    width, height = size
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(1, n_frames + 1):
        channels = [128 + 100 * np.sin((x * (c + 1) + y * (3 - c) + 7 * t + 50 * index) / 40)
                    for c in range(3)]
        img = np.stack(channels, axis=-1) + rng.normal(0, 6, (height, width, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f'image_{t:05d}.jpg',
                                                                quality=90)
