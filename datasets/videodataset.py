"""Datasets of trimmed videos described by an ActivityNet-style annotation json."""
import multiprocessing
import warnings
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import numpy as np

from utils import UserError
from .annotation import read_video_records
from .clip_pipeline import ClipDecoder, DecodingLoader, fast_pipeline
from .layout import FrameFolderLayout
from .loader import FrameError, VideoLoader, path_kind, rgb_loader

# Bad frames named in one warning; the rest of the clip's are counted.
MAX_FRAMES_NAMED = 3


class NoReadableFrame(UserError):
    """None of the frames of a video can be read."""


def nearest_readable_frames(loader: Callable, video_path: Path, frame_indices: Sequence[int],
                            video_indices: Sequence[int]) -> Tuple[list, List[FrameError]]:
    """The frames `frame_indices` of a video, each unreadable one replaced by the nearest readable
    frame among `video_indices` (the earlier one on a tie); and the errors of the replaced frames.

    Frames are read at most once: those of the clip together when the loader has `load_each`,
    the others one at a time. Raises NoReadableFrame when no frame of `video_indices` can be read.
    """
    read = {}  # index -> image or FrameError
    if hasattr(loader, 'load_each'):  # loaders that read a clip at once (video files)
        read.update(loader.load_each(video_path, frame_indices))

    def frame(i):
        if i not in read:
            try:
                read[i] = loader(video_path, [i])[0]
            except FrameError as e:
                read[i] = e
        return read[i]

    def nearest_readable(i):
        for j in sorted(video_indices, key=lambda j: (abs(j - i), j)):
            if not isinstance(frame(j), FrameError):
                return frame(j)
        raise NoReadableFrame(f'no readable frame in {video_path} ({frame(i)})')

    frames, errors = [], {}
    for i in frame_indices:
        if isinstance(frame(i), FrameError):
            errors[i] = frame(i)
            frames.append(nearest_readable(i))
        else:
            frames.append(frame(i))
    return frames, list(errors.values())


class BadFrameLog:
    """Replaced frames and skipped videos of a dataset: counted, and warned about once per video.

    The loader's worker processes are forked from the dataset of the main process each epoch;
    the counts and the flags of the videos warned about are in shared memory, so that they add
    up over all workers and epochs.
    """

    def __init__(self, n_videos: int):
        self._counts = multiprocessing.Array('q', 2)  # frames replaced, videos skipped
        self._warned = multiprocessing.RawArray('b', n_videos)  # 1: warned about this video

    def frames_replaced(self, index: int, video_id: str, errors: List[FrameError]) -> None:
        self._add(0, len(errors))
        named = '; '.join(str(e) for e in errors[:MAX_FRAMES_NAMED])
        if len(errors) > MAX_FRAMES_NAMED:
            named += f'; and {len(errors) - MAX_FRAMES_NAMED} more'
        self._warn_once(index, f'video {video_id}: bad frames replaced by the nearest readable '
                               f'frame ({len(errors)} in this clip): {named}')

    def video_skipped(self, index: int, video_id: str, error: NoReadableFrame) -> None:
        self._add(1, 1)
        self._warn_once(index, f'video {video_id} is skipped, the next video takes its place: '
                               f'{error}')

    def take(self) -> Tuple[int, int]:
        """(frames replaced, videos skipped) since the last call."""
        with self._counts.get_lock():
            counts = tuple(self._counts)
            self._counts[:] = [0, 0]
        return counts

    def _add(self, which: int, n: int) -> None:
        with self._counts.get_lock():
            self._counts[which] += n

    def _warn_once(self, index: int, message: str) -> None:
        if not self._warned[index]:
            self._warned[index] = 1
            warnings.warn(message, stacklevel=3)


def _needs_label(target_type) -> bool:
    return 'label' in (target_type if isinstance(target_type, list) else [target_type])


class VideoDataset:
    """One clip per video (training): `(clip [C, T, H, W] float32, target)`.

    A video whose folder is missing, or whose segment has no frames, is skipped; the count of
    skipped videos is reported once. `data` holds one compact record per video (`VideoRecords`,
    a sequence of the reference's sample dicts); the frame numbers of a video are listed when
    its sample is read, so an annotation of 700,000 videos takes seconds and tens of MB. A frame
    that is missing or corrupt is replaced by the nearest readable frame of its video (the
    reference silently returns a short clip or fails), and a video without any readable frame
    gives its place to the next video; both are warned about once per video and counted in
    `bad_frames`. `strict_data=True` makes the first bad frame an error instead.

    Clips of the transforms main.py builds for random-crop training and center-crop
    validation and inference take the fast path of datasets.clip_pipeline (the same crops and
    flips, the same pixels but where a frame is decoded at a reduced scale, within the tolerance
    stated there); `fast_path = False` sends every frame through the transforms, and
    `reduced_decoding = False` keeps the fast path's pixels the plain path's (inference sets it:
    its scores are the results, and equal predict_video's).
    """

    fast_path = True
    reduced_decoding = True

    def __init__(self, root_path: Path, annotation_path: Path, subset: str,
                 spatial_transform=None, temporal_transform=None, target_transform=None,
                 video_loader=None, video_path_formatter=FrameFolderLayout(),
                 image_name_formatter=None, target_type='label', strict_data: bool = False):
        self.subset = subset
        self.target_type = target_type
        self.strict_data = strict_data
        self.data, self.class_names = self._make_dataset(
            Path(root_path), Path(annotation_path), subset, video_path_formatter)
        self.spatial_transform = spatial_transform
        self.temporal_transform = temporal_transform
        self.target_transform = target_transform
        if video_loader is not None:
            self.loader = video_loader
        elif image_name_formatter is not None:
            self.loader = VideoLoader(image_name_formatter)
        else:
            self.loader = VideoLoader()
        # A merged annotation's videos are frame folders, hdf5 or video files by source: a video
        # with a path of its own gets the loader of its kind (this layout's kind: `loader`).
        kind = getattr(video_path_formatter, 'kind', None)
        self.loaders = {kind: self.loader} if kind is not None else None
        self.bad_frames = BadFrameLog(len(self.data))

    def _make_dataset(self, root_path, annotation_path, subset, video_path_formatter):
        records, class_names, missing, counts = read_video_records(
            annotation_path, subset, root_path, video_path_formatter,
            _needs_label(self.target_type))
        what = getattr(video_path_formatter, 'what', 'frame folder')
        if counts['missing']:
            warnings.warn(f'{counts["missing"]} of {counts["videos"]} {subset} videos have no '
                          f'{what} and are skipped (first: {missing[0]})', stacklevel=3)
        if counts['empty']:
            warnings.warn(f'{counts["empty"]} {subset} videos have no frames (segment [1, 1]) '
                          'and are skipped', stacklevel=3)
        if counts['zero_based']:
            warnings.warn(f'{counts["zero_based"]} {subset} videos have a segment [0, n] (the '
                          'reference\'s kinetics_json for hdf5): read as frames 1 to n, segment '
                          '[1, n + 1]', stacklevel=3)
        if not len(records):
            raise UserError(f'no usable {subset} videos: {annotation_path} lists '
                            f'{counts["videos"]}, {counts["missing"]} of them without a {what} '
                            f'under {root_path}')
        return records, dict(enumerate(class_names))

    def __getitem__(self, index: int):
        """The sample of video `index`; a video without a readable frame gives way to the next."""
        for offset in range(len(self.data)):
            i = (index + offset) % len(self.data)
            try:
                return self.get_sample(i)
            except NoReadableFrame as e:
                self.bad_frames.video_skipped(i, self.data.video_id(i), e)
        raise UserError(f'none of the {len(self.data)} {self.subset} videos has a readable frame')

    def get_sample(self, index: int):
        """(clip [C, T, H, W], target) of video `index`."""
        sample = self.data[index]
        frame_indices = sample['frame_indices']
        if self.temporal_transform is not None:
            frame_indices = self.temporal_transform(frame_indices)
        return self.load_clip(index, frame_indices), self.get_target(sample)

    def video_loader(self, index: int):
        """The frame loader of video `index`: the dataset's, or for a video with a path of its
        own the loader of the kind its path names (datasets.loader.path_kind)."""
        if self.loaders is None or not self.data.has_own_path(index):
            return self.loader
        kind = path_kind(self.data.video_path(index))
        if kind not in self.loaders:
            self.loaders[kind] = rgb_loader(kind)
        return self.loaders[kind]

    def load_clip(self, index: int, frame_indices: Sequence[int]) -> np.ndarray:
        """Load and transform the frames of one clip of video `index`: [C, T, H, W] with
        T = len(frame_indices)."""
        pipeline = (fast_pipeline(self.spatial_transform, self.video_loader(index))
                    if self.fast_path else None)
        if pipeline is not None:
            decoder = ClipDecoder(pipeline, self.spatial_transform, self.reduced_decoding)
            return decoder.finish(self.read_frames(index, frame_indices, decoder))
        frames = self.read_frames(index, frame_indices)
        if self.spatial_transform is not None:
            self.spatial_transform.randomize_parameters()
            frames = [self.spatial_transform(img) for img in frames]
        return np.stack(frames, axis=1)

    def read_frames(self, index: int, frame_indices: Sequence[int], decode=None) -> list:
        """The frames of a clip (through `decode` when given: see datasets.loader); a missing or
        corrupt one is an error with `strict_data`, else it is replaced by the nearest readable
        frame of the video."""
        video_path = self.data.video_path(index)
        loader = self.video_loader(index)
        loader = loader if decode is None else DecodingLoader(loader, decode)
        try:
            return loader(video_path, frame_indices)
        except FrameError:
            if self.strict_data:
                raise
        frames, errors = nearest_readable_frames(loader, video_path, frame_indices,
                                                 self.data.frame_indices(index))
        self.bad_frames.frames_replaced(index, self.data.video_id(index), errors)
        return frames

    def get_target(self, sample: dict):
        if isinstance(self.target_type, list):
            target = [sample[t] for t in self.target_type]
        else:
            target = sample[self.target_type]
        return target if self.target_transform is None else self.target_transform(target)

    def __len__(self) -> int:
        return len(self.data)
