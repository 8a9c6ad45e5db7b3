"""Spatial transforms: one PIL image (one frame) in; after ToTensor/ToArray a float32 array
[C, H, W].

The classes keep the reference's names and torchvision's geometry and rounding. Randomness comes
from Python's `random` only: `randomize_parameters()` is called once per clip, so every frame of a
clip gets the same crop, flip and colour jitter. RandomResizedCrop draws its box at the first frame
after `randomize_parameters()`, because the box depends on the frame size.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np
from PIL import Image, ImageEnhance

BILINEAR = Image.Resampling.BILINEAR

# Per-channel RGB statistics of the reference (its mean.py), on the [0, 1] scale.
KINETICS_MEAN = (0.4345, 0.4051, 0.3775)
KINETICS_STD = (0.2768, 0.2713, 0.2737)
ACTIVITYNET_MEAN = (0.4477, 0.4209, 0.3906)
ACTIVITYNET_STD = (0.2767, 0.2695, 0.2714)
HALF_MEAN = HALF_STD = (0.5, 0.5, 0.5)
MEAN_STD = {
    'activitynet': (ACTIVITYNET_MEAN, ACTIVITYNET_STD),
    'kinetics': (KINETICS_MEAN, KINETICS_STD),
    '0.5': (HALF_MEAN, HALF_STD),
}


def get_mean_std(value_scale: float, dataset: str) -> tuple[list[float], list[float]]:
    """Mean and std lists of `dataset` ('activitynet', 'kinetics' or '0.5'), multiplied by
    `value_scale`."""
    if dataset not in MEAN_STD:
        raise ValueError(f"unknown mean dataset '{dataset}': choose from {', '.join(MEAN_STD)}")
    mean, std = MEAN_STD[dataset]
    return [m * value_scale for m in mean], [s * value_scale for s in std]


def _name(interpolation) -> str:
    """'BILINEAR' for Image.Resampling.BILINEAR (or 2)."""
    return Image.Resampling(interpolation).name


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int (a square) or an (h, w) sequence."""
    if isinstance(size, int):
        return size, size
    h, w = size
    return h, w


def resized_size(width: int, height: int, size: int | Sequence[int]) -> tuple[int, int]:
    """(width, height) after torchvision's Resize: an int is the shorter side, the longer is
    int(size * long / short)."""
    if not isinstance(size, int):
        h, w = size
        return w, h
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop(img: Image.Image, top: int, left: int, height: int, width: int) -> Image.Image:
    """The height x width window at (top, left); parts outside the image are black."""
    return img.crop((left, top, left + width, top + height))


def _center_offset(length: int, crop_length: int) -> int:
    """torchvision's center-crop offset along one side; a crop longer than the side is
    zero-padded evenly."""
    if crop_length > length:
        return -((crop_length - length) // 2)
    return int(round((length - crop_length) / 2))


def corner_offsets(width: int, height: int, size: int, position: str) -> tuple[int, int]:
    """(top, left) of a size x size crop at 'c' (centre), 'tl', 'tr', 'bl' or 'br'."""
    if position == 'c':
        return int(round((height - size) / 2)), int(round((width - size) / 2))
    top = 0 if position[0] == 't' else height - size
    left = 0 if position[1] == 'l' else width - size
    return top, left


def random_resized_crop_box(width: int, height: int, scale: Sequence[float],
                            ratio: Sequence[float]) -> tuple[int, int, int, int]:
    """(top, left, height, width) drawn with torchvision's RandomResizedCrop algorithm, using
    Python's `random`.

    Up to 10 tries of an area fraction uniform in `scale` and an aspect ratio log-uniform in
    `ratio`; if none fits, the central crop with the aspect ratio clamped into `ratio`.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = random.uniform(scale[0], scale[1]) * area
        aspect_ratio = math.exp(random.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            return random.randint(0, height - h), random.randint(0, width - w), h, w
    in_ratio = width / height
    w, h = width, height
    if in_ratio < min(ratio):
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        w = int(round(h * max(ratio)))
    return (height - h) // 2, (width - w) // 2, h, w


def adjust_hue(img: Image.Image, hue_factor: float) -> Image.Image:
    """Rotate the hue by `hue_factor` turns (in [-0.5, 0.5]) as torchvision does for PIL; gray
    images unchanged."""
    if img.mode in ('L', '1', 'I', 'F'):
        return img
    h, s, v = img.convert('HSV').split()
    # uint8 arithmetic wraps around the hue circle; the shift truncates toward zero like
    # torchvision's np.uint8().
    shift = int(hue_factor * 255) % 256
    h = Image.fromarray(np.asarray(h) + np.uint8(shift))
    return Image.merge('HSV', (h, s, v)).convert(img.mode)


def adjust_brightness(img: Image.Image, factor: float) -> Image.Image:
    """Blend with black: 0 gives black, 1 the original."""
    return ImageEnhance.Brightness(img).enhance(factor)


def adjust_contrast(img: Image.Image, factor: float) -> Image.Image:
    """Blend with the mean gray level: 0 gives a flat gray image, 1 the original."""
    return ImageEnhance.Contrast(img).enhance(factor)


def adjust_saturation(img: Image.Image, factor: float) -> Image.Image:
    """Blend with the grayscale image: 0 gives gray, 1 the original."""
    return ImageEnhance.Color(img).enhance(factor)


def to_array(img: Image.Image) -> np.ndarray:
    """PIL image [H, W, C] -> float32 array [C, H, W]; 8-bit images are divided by 255 into
    [0, 1]."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    chw = arr.transpose(2, 0, 1)  # a view; the one copy below writes a C-contiguous [C, H, W] array
    out = np.empty(chw.shape, dtype=np.float32)
    if arr.dtype == np.uint8:
        return np.divide(chw, np.float32(255), out=out)
    out[...] = chw
    return out


class Compose:
    """Apply transforms in order; `randomize_parameters()` re-draws all of them (call it once
    per clip)."""

    def __init__(self, transforms: list):
        self.transforms = transforms

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def randomize_parameters(self) -> None:
        for t in self.transforms:
            t.randomize_parameters()

    def __repr__(self) -> str:
        inner = ''.join(f'\n    {t!r},' for t in self.transforms)
        return f'{type(self).__name__}([{inner}\n])'


class ToTensor:
    """PIL image -> float32 array [C, H, W] in [0, 1] (no paddle tensor: the loader batches
    arrays)."""

    def __call__(self, img: Image.Image) -> np.ndarray:
        return to_array(img)

    def randomize_parameters(self) -> None:
        pass

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


ToArray = ToTensor


class Normalize:
    """(x - mean) / std per channel of a float array [C, H, W]; returns a new array."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = list(mean)
        self.std = list(std)
        self._mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self._std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        out = np.subtract(arr, self._mean, dtype=np.float32)
        out /= self._std
        return out

    def randomize_parameters(self) -> None:
        pass

    def __repr__(self) -> str:
        return f'{type(self).__name__}(mean={self.mean}, std={self.std})'


class ScaleValue:
    """Multiply an array by `s` (e.g. 255 for models trained on [0, 255] inputs); returns a new
    array unless s == 1."""

    def __init__(self, s: float):
        self.s = s

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        if self.s == 1:
            return arr
        return arr * np.float32(self.s)

    def randomize_parameters(self) -> None:
        pass

    def __repr__(self) -> str:
        return f'{type(self).__name__}(s={self.s})'


class Resize:
    """Resize so the shorter side is `size` (int, torchvision's rounding) or to exactly (h, w)."""

    def __init__(self, size: int | Sequence[int], interpolation=BILINEAR):
        self.size = size
        self.interpolation = interpolation

    def __call__(self, img: Image.Image) -> Image.Image:
        new_size = resized_size(*img.size, self.size)
        if new_size == img.size:
            return img
        return img.resize(new_size, self.interpolation)

    def randomize_parameters(self) -> None:
        pass

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, interpolation={_name(self.interpolation)})'


# The reference's name, from torchvision's deprecated transforms.Scale (the same transform)
Scale = Resize


class CenterCrop:
    """Central crop of `size` (int: square, or (h, w)); torchvision's rounding and zero padding
    of small images."""

    def __init__(self, size: int | Sequence[int]):
        self.size = size

    def __call__(self, img: Image.Image) -> Image.Image:
        h, w = _pair(self.size)
        width, height = img.size
        return crop(img, _center_offset(height, h), _center_offset(width, w), h, w)

    def randomize_parameters(self) -> None:
        pass

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'


CROP_POSITIONS = ('c', 'tl', 'tr', 'bl', 'br')


def _check_positions(positions: Sequence[str]) -> None:
    bad = [p for p in positions if p not in CROP_POSITIONS]
    if bad or not positions:
        raise ValueError(f'crop positions must be among {CROP_POSITIONS}, got {list(positions)}')


class CornerCrop:
    """Square crop of `size` at `crop_position`; with None, a position drawn from
    `crop_positions` per clip."""

    def __init__(self, size: int, crop_position: str | None = None,
                 crop_positions: Sequence[str] = CROP_POSITIONS):
        _check_positions(crop_positions if crop_position is None else [crop_position])
        self.size = size
        self.crop_position = crop_position
        self.crop_positions = tuple(crop_positions)
        self.randomize = crop_position is None
        self.randomize_parameters()

    def __call__(self, img: Image.Image) -> Image.Image:
        top, left = corner_offsets(*img.size, self.size, self.crop_position)
        return crop(img, top, left, self.size, self.size)

    def randomize_parameters(self) -> None:
        if self.randomize:
            self.crop_position = random.choice(self.crop_positions)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, crop_position={self.crop_position!r}, ' \
               f'randomize={self.randomize})'


class MultiScaleCornerCrop:
    """Square crop of side int(shorter side * scale) at a corner or the centre, resized to
    size x size.

    The scale and the position are drawn per clip from `scales` and `crop_positions`.
    """

    def __init__(self, size: int, scales: Sequence[float],
                 crop_positions: Sequence[str] = CROP_POSITIONS, interpolation=BILINEAR):
        _check_positions(crop_positions)
        self.size = size
        self.scales = list(scales)
        self.crop_positions = tuple(crop_positions)
        self.interpolation = interpolation
        self.randomize_parameters()

    def __call__(self, img: Image.Image) -> Image.Image:
        crop_size = int(min(img.size) * self.scale)
        top, left = corner_offsets(*img.size, crop_size, self.crop_position)
        img = crop(img, top, left, crop_size, crop_size)
        return img.resize((self.size, self.size), self.interpolation)

    def randomize_parameters(self) -> None:
        # random.choice makes the same draw as the reference's list[random.randint(0, len - 1)].
        self.scale = random.choice(self.scales)
        self.crop_position = random.choice(self.crop_positions)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, scales={self.scales}, ' \
               f'crop_positions={self.crop_positions}, interpolation={_name(self.interpolation)})'


class RandomResizedCrop:
    """torchvision's RandomResizedCrop with one box per clip: drawn at the first frame after
    randomize_parameters()."""

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), interpolation=BILINEAR):
        if scale[0] > scale[1] or ratio[0] > ratio[1]:
            raise ValueError(f'RandomResizedCrop: scale and ratio must be (min, max), got {scale} '
                             f'and {ratio}')
        self.size = size
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.interpolation = interpolation
        self.randomize_parameters()

    def __call__(self, img: Image.Image) -> Image.Image:
        h, w = _pair(self.size)
        return crop(img, *self.get_box(*img.size)).resize((w, h), self.interpolation)

    def get_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """This clip's (top, left, height, width), drawn for a frame of this size if not yet
        drawn (the fast path of datasets.clip_pipeline draws it from a JPEG header, the same
        draws)."""
        if self.box is None:
            self.box = random_resized_crop_box(width, height, self.scale, self.ratio)
        return self.box

    def randomize_parameters(self) -> None:
        self.box = None  # (top, left, height, width), drawn lazily from the next frame's size

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, scale={self.scale}, ratio={self.ratio}, ' \
               f'interpolation={_name(self.interpolation)})'


class RandomHorizontalFlip:
    """Mirror every frame of a clip with probability `p`."""

    def __init__(self, p: float = 0.5):
        self.p = p
        self.randomize_parameters()

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.random_p < self.p:
            return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img

    def randomize_parameters(self) -> None:
        self.random_p = random.random()

    def __repr__(self) -> str:
        return f'{type(self).__name__}(p={self.p})'


def _jitter_range(name: str, value, center: float,
                  bounds: tuple[float, float]) -> tuple[float, float] | None:
    """torchvision's ColorJitter argument: x -> [center - x, center + x] clipped to `bounds`, or a
    (min, max) pair.

    None when the range is the single point `center` (e.g. x = 0): that adjustment is skipped.
    """
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f'ColorJitter: {name} must be non-negative, got {value}')
        low, high = max(center - value, bounds[0]), center + value
    else:
        low, high = value
    if not bounds[0] <= low <= high <= bounds[1]:
        raise ValueError(f'ColorJitter: {name} range ({low}, {high}) is not within {bounds}')
    if low == high == center:
        return None
    return low, high


class ColorJitter:
    """torchvision's ColorJitter with one draw per clip: brightness, contrast, saturation and hue
    in random order.

    Factors are uniform in [max(0, 1 - x), 1 + x] (hue: a shift uniform in [-hue, hue],
    hue <= 0.5); a 0 skips that adjustment. As in torchvision before 0.8, the factors are drawn in
    that order and the order of application is then shuffled, all with Python's `random`.
    """

    def __init__(self, brightness=0, contrast=0, saturation=0, hue=0):
        inf = float('inf')
        self.brightness = _jitter_range('brightness', brightness, 1.0, (0.0, inf))
        self.contrast = _jitter_range('contrast', contrast, 1.0, (0.0, inf))
        self.saturation = _jitter_range('saturation', saturation, 1.0, (0.0, inf))
        self.hue = _jitter_range('hue', hue, 0.0, (-0.5, 0.5))
        self.randomize_parameters()

    def __call__(self, img: Image.Image) -> Image.Image:
        for adjust, factor in self.adjustments:
            img = adjust(img, factor)
        return img

    def randomize_parameters(self) -> None:
        candidates = ((self.brightness, adjust_brightness), (self.contrast, adjust_contrast),
                      (self.saturation, adjust_saturation), (self.hue, adjust_hue))
        self.adjustments = [(adjust, random.uniform(*rng)) for rng, adjust in candidates
                            if rng is not None]
        random.shuffle(self.adjustments)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(brightness={self.brightness}, contrast={self.contrast}, ' \
               f'saturation={self.saturation}, hue={self.hue})'


class PickFirstChannels:
    """The first `n` channels of an array [C, H, W] (a view), e.g. the x/y planes of an
    optical-flow frame."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        return arr[:self.n]

    def randomize_parameters(self) -> None:
        pass

    def __repr__(self) -> str:
        return f'{type(self).__name__}(n={self.n})'


# Pipelines: what main.py (and the scripts) apply to every frame, by the options.

# Strengths of --colorjitter (the reference passes zeros, which makes its flag a no-op).
COLOR_JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)


def get_normalize_method(mean: Sequence[float], std: Sequence[float], no_mean_norm: bool,
                         no_std_norm: bool) -> Normalize:
    return Normalize([0.0] * len(mean) if no_mean_norm else mean,
                     [1.0] * len(std) if no_std_norm else std)


def get_spatial_transform(opt, crop: Sequence, augment: Sequence = ()) -> Compose:
    """crop + augmentation + ToTensor [+ first 2 channels for flow] + scale + normalize."""
    transform = list(crop) + list(augment) + [ToTensor()]
    if opt.input_type == 'flow':
        transform.append(PickFirstChannels(n=2))
    transform += [ScaleValue(opt.value_scale),
                  get_normalize_method(opt.mean, opt.std, opt.no_mean_norm, opt.no_std_norm)]
    return Compose(transform)


def get_train_spatial_transform(opt) -> Compose:
    """--train_crop, then the flip (unless --no_hflip) and --colorjitter."""
    if opt.train_crop == 'random':
        crop = [RandomResizedCrop(opt.sample_size, (opt.train_crop_min_scale, 1.0),
                                  (opt.train_crop_min_ratio, 1.0 / opt.train_crop_min_ratio))]
    elif opt.train_crop == 'corner':
        scales = [2 ** (-i / 4) for i in range(5)]  # 1, 2^-1/4, ..., 2^-1
        crop = [MultiScaleCornerCrop(opt.sample_size, scales)]
    else:
        crop = [Resize(opt.sample_size), CenterCrop(opt.sample_size)]
    augment = [] if opt.no_hflip else [RandomHorizontalFlip()]
    if opt.colorjitter:
        augment.append(ColorJitter(**COLOR_JITTER))
    return get_spatial_transform(opt, crop, augment)


def get_val_spatial_transform(opt) -> Compose:
    """Shorter side to --sample_size, center crop."""
    return get_spatial_transform(opt, [Resize(opt.sample_size), CenterCrop(opt.sample_size)])


def get_inference_spatial_transform(opt) -> Compose:
    """Shorter side to --sample_size, center crop unless --inference_crop nocrop."""
    crop = [Resize(opt.sample_size)]
    if opt.inference_crop == 'center':
        crop.append(CenterCrop(opt.sample_size))
    return get_spatial_transform(opt, crop)
