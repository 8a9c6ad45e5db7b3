"""Frame loaders: a video is a folder of `image_00001.jpg, ...`, an hdf5 file of encoded frames
or a video file.

Every loader returns one image per requested index or raises `FrameError` for the first frame
that is missing or cannot be decoded; the dataset decides what to do about it. Frame indices
are the annotation's: 1-based, frame k being `image_0000k.jpg` of generate_video_jpgs.

The RGB loaders also take `decode=`, a callable `(data, name) -> frame` that replaces their own
decoding (datasets.clip_pipeline's per-clip decoder): it gets the encoded bytes of a frame file
or hdf5 entry, or the RGB array [H, W, 3] uint8 of a video frame, and raises FrameError for a
frame that does not decode. `takes_decode` says whether a loader accepts it.
"""
import io
import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from utils import UserError


class FrameError(UserError):
    """A frame that is missing or cannot be decoded; the message names the file."""


def image_name_formatter(index: int) -> str:
    return f'image_{index:05d}.jpg'


def decode_image(data, mode: str, name) -> Image.Image:
    """Decode an image file or its bytes into `mode` ('RGB', 'L'); FrameError names `name`."""
    try:
        with Image.open(data) as img:
            return img.convert(mode)
    except UnidentifiedImageError as e:
        raise FrameError(f'cannot read frame {name}: not an image, or corrupt') from e
    except (OSError, SyntaxError) as e:  # PIL raises both for truncated or damaged files
        raise FrameError(f'cannot read frame {name}: {e}') from e


def read_frame_file(path: Path) -> bytes:
    """The bytes of a frame file; FrameError when it is missing."""
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise FrameError(f'frame {path} is missing') from e


class ImageLoaderPIL:
    """Open one image file as RGB."""

    def __call__(self, path: Path) -> Image.Image:
        try:
            f = path.open('rb')
        except FileNotFoundError as e:
            raise FrameError(f'frame {path} is missing') from e
        with f:
            return decode_image(f, 'RGB', path)


class VideoLoader:
    """Load the frames `frame_indices` of a frame folder."""

    def __init__(self, image_name_formatter: Callable[[int], str] = image_name_formatter,
                 image_loader: Callable[[Path], Image.Image] = None):
        self.image_name_formatter = image_name_formatter
        self.image_loader = image_loader or ImageLoaderPIL()

    @property
    def takes_decode(self) -> bool:
        """Only with the default image loader: a custom one may read its files its own way."""
        return type(self.image_loader) is ImageLoaderPIL

    def __call__(self, video_path: Path, frame_indices: Sequence[int],
                 decode: Optional[Callable] = None) -> list:
        paths = [video_path / self.image_name_formatter(i) for i in frame_indices]
        if decode is None:
            return [self.image_loader(path) for path in paths]
        return [decode(read_frame_file(path), path) for path in paths]


def open_hdf5(video_path: Path):
    try:
        import h5py
    except ImportError as e:
        raise UserError('--file_type hdf5 needs h5py: pip install h5py') from e
    try:
        return h5py.File(video_path, 'r')
    except FileNotFoundError as e:
        raise FrameError(f'video {video_path} is missing') from e
    except OSError as e:  # not an hdf5 file, or a damaged one
        raise FrameError(f'cannot read video {video_path}: {e}') from e


def hdf5_frame(frames, k: int, mode: str, video_path: Path, decode: Optional[Callable] = None,
               data=None) -> Image.Image:
    """Frame `k` (1-based, the annotation's numbering) of an hdf5 dataset of encoded images,
    which holds frame k at index k-1 (the reference reads index k: one frame late, and its last
    frame out of range); `decode(bytes, name)` instead of Pillow's decoding when given, `data`
    the frame's bytes when already read."""
    name = f'{k} of {video_path}'
    if not 1 <= k <= len(frames):
        raise FrameError(f'frame {name} is missing: the file has {len(frames)} frames')
    if data is None:
        data = frames[k - 1]
    if decode is not None:
        return decode(np.asarray(data).tobytes(), name)
    return decode_image(io.BytesIO(data), mode, name)


def read_hdf5_frames(frames, frame_indices: Sequence[int]) -> Dict[int, object]:
    """{k: encoded frame k} of the frames held, read in one call (a call per frame costs
    ~0.05 ms of h5py's)."""
    wanted = sorted({k for k in frame_indices if 1 <= k <= len(frames)})
    return dict(zip(wanted, frames[[k - 1 for k in wanted]])) if wanted else {}


class VideoLoaderHDF5:
    """Load frames from an hdf5 file holding encoded images in dataset `video` (frame k at
    index k-1, as generate_video_hdf5 writes them)."""

    takes_decode = True

    def __call__(self, video_path: Path, frame_indices: Sequence[int],
                 decode: Optional[Callable] = None) -> list:
        with open_hdf5(video_path) as f:
            video = f['video']
            data = read_hdf5_frames(video, frame_indices)
            return [hdf5_frame(video, i, 'RGB', video_path, decode, data.get(i))
                    for i in frame_indices]


class VideoLoaderFlowHDF5:
    """Load optical-flow frames (datasets `video_u`, `video_v`, frame k at index k-1) as RGB
    images whose B channel repeats v."""

    def __call__(self, video_path: Path, frame_indices: Sequence[int]) -> List[Image.Image]:
        with open_hdf5(video_path) as f:
            video = []
            for i in frame_indices:
                u, v = (hdf5_frame(f[name], i, 'L', video_path) for name in ('video_u', 'video_v'))
                video.append(Image.merge('RGB', (u, v, v)))
            return video


# Shorter side of the frames decoded from video files: generate_video_jpgs' default --size, so
# that `--file_type video` feeds the model what the jpg folders would.
VIDEO_FRAME_SIZE = 240


def path_kind(video_path: Path) -> str:
    """The kind of video at a path, by its name: 'hdf5' (an .hdf5 file), 'video' (a video
    file's extension) or 'jpg' (a frame folder)."""
    from .video_reader import VIDEO_EXTENSIONS
    suffix = Path(video_path).suffix.lower()
    if suffix == '.hdf5':
        return 'hdf5'
    return 'video' if suffix in VIDEO_EXTENSIONS else 'jpg'


def rgb_loader(kind: str):
    """The RGB frame loader of a kind of video (path_kind's)."""
    if kind == 'hdf5':
        return VideoLoaderHDF5()
    if kind == 'video':
        return VideoLoaderPyAV(VIDEO_FRAME_SIZE)
    return VideoLoader(image_name_formatter)


class VideoLoaderPyAV:
    """Load frames straight from a video file with PyAV: frame k is the frame generate_video_jpgs
    writes as `image_0000k.jpg`, scaled as it scales them (shorter side `size`; None: the
    video's own size).

    A clip costs a seek to the keyframe before its first frame and the decoding from there; the
    loader keeps its `cache_size` most recently used videos open (per process: worker
    processes forked from a parent with open videos start with an empty cache), so the next
    clip of the same video continues where the last one stopped.
    """

    takes_decode = True

    def __init__(self, size: Optional[int] = 240, cache_size: int = 4):
        self.size = size
        self.cache_size = cache_size
        self._cache: OrderedDict = OrderedDict()  # str(path) -> VideoReader or FrameError
        self._pid = os.getpid()

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_cache'] = OrderedDict()
        return state

    def _reader(self, video_path: Path):
        """The open reader of a video (or the FrameError saying why it cannot be read)."""
        from .video_reader import VideoReadError, VideoReader
        if self._pid != os.getpid():  # a forked worker: the parent's open files are not ours
            self._cache, self._pid = OrderedDict(), os.getpid()
        key = str(video_path)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            reader = VideoReader(video_path, self.size)
        except VideoReadError as e:
            reader = FrameError(f'cannot read video {video_path}: {e}')
        except FileNotFoundError:
            reader = FrameError(f'video {video_path} is missing')
        self._cache[key] = reader
        while len(self._cache) > self.cache_size:
            _, old = self._cache.popitem(last=False)
            if not isinstance(old, FrameError):
                old.close()
        return reader

    def load_each(self, video_path: Path, frame_indices: Sequence[int],
                  decode: Optional[Callable] = None) -> Dict[int, Union[Image.Image, FrameError]]:
        """{index: image (or `decode(RGB array, name)`), or the FrameError of a frame that is
        missing or does not decode}, in the order of `frame_indices`."""
        reader = self._reader(video_path)
        if isinstance(reader, FrameError):
            return {i: reader for i in frame_indices}
        read = reader.read(frame_indices, as_array=decode is not None)
        frames = {}
        for i in frame_indices:
            if i in frames:
                continue
            if isinstance(read[i], str):
                frames[i] = FrameError(f'frame {i} of {video_path} {read[i]}')
            elif decode is None:
                frames[i] = read[i]
            else:
                try:
                    frames[i] = decode(read[i], f'{i} of {video_path}')
                except FrameError as e:
                    frames[i] = e
        return frames

    def __call__(self, video_path: Path, frame_indices: Sequence[int],
                 decode: Optional[Callable] = None) -> list:
        frames = self.load_each(video_path, frame_indices, decode)
        for i in frame_indices:
            if isinstance(frames[i], FrameError):
                raise frames[i]
        return [frames[i] for i in frame_indices]
