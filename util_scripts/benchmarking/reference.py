"""The reference's side of the benchmarks, in PyTorch: its 3D ResNet and the operations of its
data pipeline as it runs them (PIL decode + convert('RGB') per frame; torchvision's PIL crop,
resize and flip, to_tensor, ScaleValue in place, Normalize on a clone; torch.stack + permute).

Imports PyTorch: only the measuring subprocesses of the PyTorch side import this module.
"""
import importlib.util
from pathlib import Path
from typing import List, Sequence

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def torch_resnet(depth: int, n_classes: int) -> torch.nn.Module:
    """The reference's 3D ResNet-`depth` (conv1 7x7x7 stride (1, 2, 2), max pool, shortcut B):
    tests/torch_reference.py's, the model the parity tests hold ours to."""
    path = ROOT / 'tests' / 'torch_reference.py'
    spec = importlib.util.spec_from_file_location('torch_reference', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build('resnet', depth, n_classes=n_classes)


def load_frame(path: Path) -> Image.Image:
    """The reference's VideoLoader, one frame: PIL decode + convert('RGB')."""
    with path.open('rb') as f, Image.open(f) as img:
        return img.convert('RGB')


def to_tensor(img: Image.Image) -> torch.Tensor:
    """torchvision.transforms.functional.to_tensor: [C, H, W] floats in [0, 1]."""
    arr = torch.from_numpy(np.array(img, np.uint8, copy=True))
    arr = arr.view(img.size[1], img.size[0], len(img.getbands()))
    return arr.permute((2, 0, 1)).contiguous().to(dtype=torch.get_default_dtype()).div(255)


def normalize(tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """torchvision.transforms.functional.normalize, inplace=False."""
    tensor = tensor.clone()
    m = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device)
    s = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device)
    if (s == 0).any():
        raise ValueError('std 0')
    return tensor.sub_(m.view(-1, 1, 1)).div_(s.view(-1, 1, 1))


def frame_tensor(img: Image.Image, value_scale: float, mean, std) -> torch.Tensor:
    """ToTensor, ScaleValue (in place) and Normalize of one frame."""
    tensor = to_tensor(img)
    tensor *= value_scale
    return normalize(tensor, mean, std)


def stack(tensors: List[torch.Tensor]) -> torch.Tensor:
    """Frames [C, H, W] -> the clip [C, T, H, W]."""
    return torch.stack(tensors, 0).permute(1, 0, 2, 3)


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """torchvision's Resize(int): the shorter side to `size`."""
    w, h = img.size
    if w < h:
        return img.resize((size, int(size * h / w)), Image.BILINEAR)
    return img.resize((int(size * w / h), size), Image.BILINEAR)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision's CenterCrop(size)."""
    w, h = img.size
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def train_clip(frames: List[Image.Image], size: int, box, flip: bool, value_scale: float, mean,
               std) -> torch.Tensor:
    """The training clip [C, T, H, W]: each frame cropped to `box` (top, left, height, width:
    the random resized crop's, drawn once per clip), resized to size x size, flipped."""
    top, left, h, w = box
    out = []
    for img in frames:
        img = img.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(frame_tensor(img, value_scale, mean, std))
    return stack(out)


def center_frames(frames: List[Image.Image], size: int, value_scale: float, mean,
                  std) -> List[torch.Tensor]:
    """Validation's and inference's frames: shorter side resized to `size`, center crop."""
    return [frame_tensor(center_crop(resize_shorter(img, size), size), value_scale, mean, std)
            for img in frames]
