"""The fast path of the data pipeline: a clip decoded, cropped and normalized as one piece
instead of frame by frame through the spatial transforms.

It covers the transforms main.py builds for training with `--train_crop random` (or
`center`) without `--colorjitter`, and for validation and center-cropped inference (whose
datasets decode whole frames: `VideoDataset.reduced_decoding`):
`Compose([RandomResizedCrop | Resize(int) + CenterCrop, (RandomHorizontalFlip), ToTensor,
(ScaleValue), Normalize])` with bilinear resizing, on RGB frames of a frame folder, an hdf5 file
of JPEGs or a video file (`fast_pipeline` returns None for anything else, which then goes
through the transforms frame by frame). Per clip:

- The random draws are the transforms' own, in the plain path's order (randomize_parameters(),
  then the crop box from the first frame's size, which a JPEG's header gives before it is
  decoded): for the same state of Python's `random` a clip has the same crop and flip.
- A JPEG whose crop box, reduced 2, 4 or 8 times, is still larger than the output is decoded at
  that scale (libjpeg's DCT scaling: the validation crop of a 320x240 frame to 112, half-size)
  and cropped and resized in one `resize(box=...)` of the reduced image; a video-file frame
  (decoded whole by PyAV) is reduced so by Pillow's reduce() (s x s averages). Any other frame
  goes through the transforms' own crop and resize: the plain path's pixels, bit for bit.
- uint8 until the end: the crops [T, H, W, 3] are flipped as a slice, made planar and converted,
  scaled and normalized once for the clip, with the float32 operations of ToTensor, ScaleValue
  and Normalize (equal results).

JPEGs are decoded with simplejpeg when it is installed (libjpeg-turbo, like Pillow's: the same
pixels, with less overhead per frame), else with Pillow (`draft` for the reduced scales).

Tolerance of the reduced scales, against the plain path's full decode + resize, in uint8
levels (mean absolute difference over a crop; largest of any pixel), for 320x240 frames cropped
to 112x112 at half scale (validation; training crops more than 224 high differ alike): demo
frames (make_demo_data + generate_video_jpgs, sharp-edged stripes) 1.0, largest 14; smooth
gradients with noise of std 6 (the benchmark's frames) 0.8, largest 5; a photograph downscaled to
320x240 (matplotlib's grace_hopper.jpg, fine detail) 2.0, largest 46; 1/f noise 4.2, largest 37;
i.i.d. pixel noise, the worst case and no video frame, 8.7, largest 56. The DCT scaling keeps
detail that the plain path's bilinear filter of a 2.1x reduction blurs away, so the difference
grows with fine detail; Pillow's own reduce-then-resize (`reducing_gap=1`) differs as much (2.1
on the photograph). Video files of the demo (reduce()): 0.6, largest 8.
tests/test_fast_pipeline.py checks a mean below 2 (largest below 32) on demo and textured
frames and demo videos, below 5 on 1/f noise.
"""
import io
from typing import Callable, List, Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from spatial_transforms import (BILINEAR, CenterCrop, Compose, Normalize, RandomHorizontalFlip,
                                RandomResizedCrop, Resize, ScaleValue, ToTensor, _center_offset,
                                _pair, resized_size)
from .loader import FrameError, decode_image

try:
    import simplejpeg
except ImportError:  # optional: Pillow decodes then
    simplejpeg = None

REDUCTIONS = (8, 4, 2)  # libjpeg's DCT scalings 1/8, 1/4, 1/2: whole numbers of pixels per block


class FastPipeline:
    """What a covered spatial transform does, taken from its transform objects."""

    def __init__(self, crop: list, flip: Optional[RandomHorizontalFlip], scale: float,
                 normalize: Normalize):
        self.crop = crop  # [RandomResizedCrop] or [Resize, CenterCrop]
        self.flip = flip
        self.scale = scale
        self.mean = np.asarray(normalize.mean, dtype=np.float32).reshape(-1, 1, 1, 1)
        self.std = np.asarray(normalize.std, dtype=np.float32).reshape(-1, 1, 1, 1)
        height, width = _pair(crop[-1].size)
        self.out_size = (width, height)


def fast_pipeline(transform, loader) -> Optional[FastPipeline]:
    """The fast path of `transform` for frames from `loader`, or None when it does not cover
    them exactly (other transforms, other interpolations, loaders that take no `decode`)."""
    if type(transform) is not Compose or not getattr(loader, 'takes_decode', False):
        return None
    ts = list(transform.transforms)
    if ts and type(ts[0]) is RandomResizedCrop:
        crop, ts = ts[:1], ts[1:]
    elif (len(ts) > 1 and type(ts[0]) is Resize and isinstance(ts[0].size, int)
          and type(ts[1]) is CenterCrop):
        crop, ts = ts[:2], ts[2:]
    else:
        return None
    if crop[0].interpolation != BILINEAR:
        return None
    flip = ts.pop(0) if ts and type(ts[0]) is RandomHorizontalFlip else None
    scale = ts[1].s if len(ts) > 1 and type(ts[1]) is ScaleValue else None
    if scale is not None:
        del ts[1]
    if [type(t) for t in ts] != [ToTensor, Normalize] or len(ts[1].mean) != 3:
        return None
    return FastPipeline(crop, flip, 1 if scale is None else scale, ts[1])


class ClipDecoder:
    """One clip of a FastPipeline: `decoder(data, name)` turns a frame (JPEG bytes, or an RGB
    array [H, W, 3] uint8) into its crop [h, w, 3] uint8; `finish(crops)` makes the clip."""

    def __init__(self, pipeline: FastPipeline, transform: Compose, reduce: bool = True):
        self.p = pipeline
        self.transform = transform
        self.reductions = REDUCTIONS if reduce else ()
        self.started = False

    def _geometry(self, width: int, height: int):
        """(crop box (left, top, right, bottom) in the frame's pixels, reduction) for a frame of
        this size; box None (reduction 1) when the crop leaves the frame (padding: plain path)."""
        if not self.started:  # the plain path draws at the first frame, after reading the clip
            self.started = True
            self.transform.randomize_parameters()
        first = self.p.crop[0]
        if type(first) is RandomResizedCrop:
            top, left, h, w = first.get_box(width, height)
            box = (left, top, left + w, top + h)
            if left < 0 or top < 0 or left + w > width or top + h > height:
                return None, 1
        else:
            rw, rh = resized_size(width, height, first.size)
            out_w, out_h = self.p.out_size
            left, top = _center_offset(rw, out_w), _center_offset(rh, out_h)
            if left < 0 or top < 0:
                return None, 1
            box = (left * width / rw, top * height / rh,
                   (left + out_w) * width / rw, (top + out_h) * height / rh)
        out_w, out_h = self.p.out_size
        for s in self.reductions:  # reduced, the box must still be larger than the output: at
            # exactly 1:1 the resize would filter nothing (a 224 crop to 112 from half size
            # differed by 2.4 levels on a photograph, 225 by 2.0)
            if (box[2] - box[0]) / s > out_w and (box[3] - box[1]) / s > out_h:
                return box, s
        return box, 1

    def _crop(self, img: Image.Image, box, s: int) -> np.ndarray:
        """The crop of a full (s 1: the transforms' own operations) or reduced frame."""
        if s == 1:
            for t in self.p.crop:
                img = t(img)
        else:
            img = img.resize(self.p.out_size, BILINEAR, box=tuple(v / s for v in box))
        return np.asarray(img)

    def _crop_array(self, arr: np.ndarray, box, s: int, reduce: bool = False) -> np.ndarray:
        """The crop of a C-contiguous RGB array [H, W, 3]: a frame reduced `s` times, or
        (`reduce`) a whole frame that Pillow's reduce() averages s x s first, as a reduced JPEG
        decode would. A random resized crop of a whole frame hands Pillow only the pixels of its
        box (a strided view, the same pixels as RandomResizedCrop's crop) and resizes them."""
        height, width = arr.shape[:2]
        if s == 1 and box is not None and type(self.p.crop[0]) is RandomResizedCrop:
            left, top, right, bottom = box
            view = arr.reshape(-1)[(top * width + left) * 3:]
            img = Image.frombuffer('RGB', (right - left, bottom - top), view, 'raw', 'RGB',
                                   width * 3, 1)
            return np.asarray(img.resize(self.p.out_size, self.p.crop[0].interpolation))
        img = Image.frombuffer('RGB', (width, height), arr, 'raw', 'RGB', 0, 1)
        if reduce and s > 1:
            img = img.reduce(s)
        return self._crop(img, box, s)

    def __call__(self, data, name) -> np.ndarray:
        if isinstance(data, np.ndarray):  # a video file's frame, already decoded
            return self._crop_array(data, *self._geometry(data.shape[1], data.shape[0]),
                                    reduce=True)
        if simplejpeg is not None:
            crop = self._simplejpeg(data)
            if crop is not None:
                return crop
        return self._pillow(data, name)

    def _simplejpeg(self, data: bytes) -> Optional[np.ndarray]:
        """The crop, or None for data it does not decode (not a JPEG, damaged, CMYK, a libjpeg
        warning): Pillow then decodes it as the plain path does, or reports it."""
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            return None
        box, s = self._geometry(width, height)
        size = (-(-height // s), -(-width // s))
        try:
            arr = simplejpeg.decode_jpeg(data, 'RGB', min_height=size[0], min_width=size[1])
        except ValueError:
            return None
        if arr.shape[:2] != size:
            return None
        return self._crop_array(arr, box, s)

    def _pillow(self, data: bytes, name) -> np.ndarray:
        """Pillow's decoding, at a reduced scale (draft) when the geometry allows; FrameError
        names `name` as loader.decode_image does."""
        try:
            with Image.open(io.BytesIO(data)) as img:
                full = img.size
                box, s = self._geometry(*full)
                if s > 1 and img.format == 'JPEG':
                    img.draft('RGB', (full[0] // s, full[1] // s))
                reduced = img.size
                img.load()
                if img.mode != 'RGB':
                    img = img.convert('RGB')
        except UnidentifiedImageError as e:
            raise FrameError(f'cannot read frame {name}: not an image, or corrupt') from e
        except (OSError, SyntaxError) as e:
            raise FrameError(f'cannot read frame {name}: {e}') from e
        if reduced == full:
            return self._crop(img, box, 1)
        if reduced != (-(-full[0] // s), -(-full[1] // s)):  # another scale than asked for
            return self._crop(decode_image(io.BytesIO(data), 'RGB', name), box, 1)
        return self._crop(img, box, s)

    def finish(self, crops: List[np.ndarray]) -> np.ndarray:
        """[T, h, w, 3] uint8 crops -> the clip [3, T, h, w] float32, flipped and normalized."""
        clip = np.stack(crops)
        if self.p.flip is not None and self.p.flip.random_p < self.p.flip.p:
            clip = clip[:, :, ::-1]
        out = np.divide(np.ascontiguousarray(clip.transpose(3, 0, 1, 2)), np.float32(255),
                        dtype=np.float32)
        if self.p.scale != 1:
            out *= np.float32(self.p.scale)
        np.subtract(out, self.p.mean, out=out, dtype=np.float32)
        out /= self.p.std
        return out


class DecodingLoader:
    """A loader whose frames go through `decode` (a ClipDecoder): the dataset's frame reading
    and bad-frame replacement work on it unchanged."""

    def __init__(self, loader, decode: Callable):
        self.loader, self.decode = loader, decode
        if hasattr(loader, 'load_each'):
            self.load_each = lambda video_path, indices: loader.load_each(video_path, indices,
                                                                          decode)

    def __call__(self, video_path, frame_indices: Sequence[int]) -> list:
        return self.loader(video_path, frame_indices, decode=self.decode)
