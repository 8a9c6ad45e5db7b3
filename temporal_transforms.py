"""Temporal transforms: lists of 1-based frame indices in, a list (one clip) or a list of clips out.

They reproduce the reference's choices exactly (same output for the same input and the same state of
Python's `random`), quirks included, with two fixes: no transform modifies the list it is given, and
TemporalEvenCrop works with `n_samples=1`. An empty input gives an empty output instead of an
exception.
"""
from __future__ import annotations

import math
import random

Clip = list[int]


def loop_pad(frame_indices: Clip, size: int) -> Clip:
    """Repeat `frame_indices` cyclically until it holds `size` indices; longer (or empty) lists come
    back as copies."""
    n = len(frame_indices)
    if n == 0 or n >= size:
        return list(frame_indices)
    return [frame_indices[i % n] for i in range(size)]


def _windows(frame_indices: Clip, size: int, stride: int,
             max_clips: int | None = None) -> list[Clip]:
    """Clips of `size` consecutive frame numbers starting at every `stride`-th entry of
    `frame_indices`.

    As in the reference, a clip is `range(begin, begin + size)` built from the start value, not a
    slice of the list, and it is cut at the last frame; the first clip that comes out short is
    loop-padded and ends the list.
    """
    last = frame_indices[-1] if frame_indices else 0
    clips = []
    for begin in frame_indices[::stride]:
        if max_clips is not None and len(clips) >= max_clips:
            break
        clip = list(range(begin, min(last + 1, begin + size)))
        if len(clip) < size:
            clips.append(loop_pad(clip, size))
            break
        clips.append(clip)
    return clips


class Compose:
    """Apply transforms in order; once one returns a list of clips, apply the remaining ones to each
    clip."""

    def __init__(self, transforms: list):
        self.transforms = transforms

    def __call__(self, frame_indices: list) -> list:
        for i, t in enumerate(self.transforms):
            if frame_indices and isinstance(frame_indices[0], list):
                rest = Compose(self.transforms[i:])
                return [rest(clip) for clip in frame_indices]
            frame_indices = t(frame_indices)
        return frame_indices

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.transforms})'


class LoopPadding:
    """Pad a clip shorter than `size` by cycling through it:
    [1, 2, 3] -> [1, 2, 3, 1, 2] for size 5."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, frame_indices: Clip) -> Clip:
        return loop_pad(frame_indices, self.size)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'


class TemporalBeginCrop:
    """The first `size` frames, loop-padded if the video is shorter."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, frame_indices: Clip) -> Clip:
        return loop_pad(frame_indices[:self.size], self.size)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'


class TemporalCenterCrop:
    """`size` frames starting `size // 2` before the middle entry (`len // 2`), loop-padded if
    short."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, frame_indices: Clip) -> Clip:
        begin = max(0, len(frame_indices) // 2 - self.size // 2)
        return loop_pad(frame_indices[begin:begin + self.size], self.size)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'


class TemporalRandomCrop:
    """`size` frames from a random start, loop-padded if the video is shorter.

    The start is `random.randint(0, max(0, n - size - 1))`, as in the reference: the last possible
    window (start `n - size`) is never drawn. One draw is made even when there is no choice, so the
    `random` state advances exactly as the reference's does.
    """

    def __init__(self, size: int):
        self.size = size

    def __call__(self, frame_indices: Clip) -> Clip:
        rand_end = max(0, len(frame_indices) - self.size - 1)
        begin = random.randint(0, rand_end)
        return loop_pad(frame_indices[begin:begin + self.size], self.size)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'


class TemporalEvenCrop:
    """Up to `n_samples` clips of `size` frames with starts spread evenly over the video.

    The starts are every `stride`-th entry,
    `stride = max(1, ceil((n - 1 - size) / (n_samples - 1)))`, and each clip is
    `range(start, start + size)` cut at the last frame (see `_windows`); a short clip is loop-padded
    and is the last one, so short videos give fewer than `n_samples` clips. With `n_samples=1`
    (where the reference divides by zero) the result is the one clip starting at the first frame:
    the first start is always the first frame, and it is the only clip taken whatever the stride.
    """

    def __init__(self, size: int, n_samples: int = 1):
        if n_samples < 1:
            raise ValueError(f'TemporalEvenCrop: n_samples must be >= 1, got {n_samples}')
        self.size = size
        self.n_samples = n_samples

    def __call__(self, frame_indices: Clip) -> list[Clip]:
        stride = 1
        if self.n_samples > 1:
            stride = max(1, math.ceil((len(frame_indices) - 1 - self.size) / (self.n_samples - 1)))
        return _windows(frame_indices, self.size, stride, self.n_samples)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, n_samples={self.n_samples})'


class SlidingWindow:
    """Clips of `size` frames starting at every `stride`-th entry (stride 0 means `size`), until the
    video ends.

    Each clip is `range(start, start + size)` cut at the last frame; the first short clip is
    loop-padded and is the last one (see `_windows`).
    """

    def __init__(self, size: int, stride: int = 0):
        if stride < 0:
            raise ValueError(f'SlidingWindow: stride must be >= 0, got {stride}')
        self.size = size
        self.stride = stride if stride > 0 else size

    def __call__(self, frame_indices: Clip) -> list[Clip]:
        return _windows(frame_indices, self.size, self.stride)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, stride={self.stride})'


class TemporalSubsampling:
    """Every `stride`-th frame, starting with the first."""

    def __init__(self, stride: int):
        if stride < 1:
            raise ValueError(f'TemporalSubsampling: stride must be >= 1, got {stride}')
        self.stride = stride

    def __call__(self, frame_indices: Clip) -> Clip:
        return frame_indices[::self.stride]

    def __repr__(self) -> str:
        return f'{type(self).__name__}(stride={self.stride})'


class Shuffle:
    """Cut the clip into blocks of `block_size` frames (the last may be shorter) and shuffle the
    blocks."""

    def __init__(self, block_size: int):
        if block_size < 1:
            raise ValueError(f'Shuffle: block_size must be >= 1, got {block_size}')
        self.block_size = block_size

    def __call__(self, frame_indices: Clip) -> Clip:
        blocks = [frame_indices[i:i + self.block_size]
                  for i in range(0, len(frame_indices), self.block_size)]
        random.shuffle(blocks)
        return [index for block in blocks for index in block]

    def __repr__(self) -> str:
        return f'{type(self).__name__}(block_size={self.block_size})'


def get_temporal_transform(opt, last) -> Compose:
    """Every --sample_t_stride-th frame, then `last` (the crop or sliding window)."""
    transform = [TemporalSubsampling(opt.sample_t_stride)] if opt.sample_t_stride > 1 else []
    return Compose(transform + [last])
