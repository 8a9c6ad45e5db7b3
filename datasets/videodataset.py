"""Datasets of trimmed videos described by an ActivityNet-style annotation json (SPEC.md section 2)."""
import json
import warnings
from pathlib import Path
from typing import Callable, List, Sequence

import numpy as np

from utils import UserError
from .loader import VideoLoader


def default_video_path_formatter(root_path: Path, label: str, video_id: str) -> Path:
    return root_path / label / video_id


def load_annotation(annotation_path: Path) -> dict:
    """Read the annotation json, with an error that names the file when it is missing or malformed."""
    try:
        with Path(annotation_path).open() as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise UserError(f'annotation file not found: {annotation_path}') from e
    except json.JSONDecodeError as e:
        raise UserError(f'annotation file {annotation_path} is not valid json: {e}') from e
    if not isinstance(data, dict) or 'labels' not in data or 'database' not in data:
        raise UserError(f'annotation file {annotation_path} has no "labels" and "database"')
    return data


def get_class_labels(data: dict) -> dict:
    """Class name -> index, in the order of the json's `labels`."""
    return {name: index for index, name in enumerate(data['labels'])}


def get_database(data: dict, subset: str, root_path: Path, video_path_formatter: Callable):
    """The ids, paths and annotations of the videos of one subset."""
    video_ids, video_paths, annotations = [], [], []
    for key, value in data['database'].items():
        if value.get('subset') != subset:
            continue
        annotation = value.get('annotations', {})
        video_ids.append(key)
        annotations.append(annotation)
        if 'video_path' in value:
            video_paths.append(Path(value['video_path']))
        else:
            video_paths.append(video_path_formatter(root_path, annotation.get('label', ''), key))
    return video_ids, video_paths, annotations


def _needs_label(target_type) -> bool:
    return 'label' in (target_type if isinstance(target_type, list) else [target_type])


class VideoDataset:
    """One clip per video (training): `(clip [C, T, H, W] float32, target)`.

    A video whose folder is missing, or whose segment has no frames, is skipped; the count of
    skipped videos is reported once. A clip whose frames are partly missing is padded by
    looping over the frames it has (the reference silently returns a short clip).
    """

    def __init__(self, root_path: Path, annotation_path: Path, subset: str,
                 spatial_transform=None, temporal_transform=None, target_transform=None,
                 video_loader=None, video_path_formatter=default_video_path_formatter,
                 image_name_formatter=None, target_type='label'):
        self.subset = subset
        self.target_type = target_type
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
        self._warned_short = set()

    def _make_dataset(self, root_path, annotation_path, subset, video_path_formatter):
        data = load_annotation(annotation_path)
        class_to_idx = get_class_labels(data)
        idx_to_class = {index: name for name, index in class_to_idx.items()}
        video_ids, video_paths, annotations = get_database(data, subset, root_path,
                                                           video_path_formatter)
        dataset, missing, empty = [], [], 0
        for video_id, video_path, annotation in zip(video_ids, video_paths, annotations):
            if 'label' in annotation:
                label = annotation['label']
                if label not in class_to_idx:
                    raise UserError(f'{annotation_path}: video {video_id} has label {label!r}, '
                                    'which is not in "labels"')
                label_id = class_to_idx[label]
            elif _needs_label(self.target_type):
                raise UserError(f'{annotation_path}: video {video_id} of subset {subset!r} '
                                'has no label')
            else:
                label_id = -1
            if 'segment' not in annotation:
                raise UserError(f'{annotation_path}: video {video_id} has no "segment"')
            if not video_path.exists():
                missing.append(video_path)
                continue
            segment = annotation['segment']
            if segment[1] <= segment[0]:
                empty += 1
                continue
            dataset.append({
                'video': video_path,
                'segment': segment,
                'frame_indices': list(range(segment[0], segment[1])),
                'video_id': video_id,
                'label': label_id,
            })
        if missing:
            warnings.warn(f'{len(missing)} of {len(video_ids)} {subset} videos have no frame '
                          f'folder and are skipped (first: {missing[0]})', stacklevel=2)
        if empty:
            warnings.warn(f'{empty} {subset} videos have no frames (segment [1, 1]) and are '
                          'skipped', stacklevel=2)
        if not dataset:
            raise UserError(f'no usable {subset} videos: {annotation_path} lists '
                            f'{len(video_ids)}, {len(missing)} of them without a frame folder '
                            f'under {root_path}')
        return dataset, idx_to_class

    def load_clip(self, sample: dict, frame_indices: Sequence[int]) -> np.ndarray:
        """Load and transform the frames of one clip: [C, T, H, W] with T = len(frame_indices)."""
        frames = self.loader(sample['video'], frame_indices)
        if not frames:
            raise UserError(f'video {sample["video_id"]}: none of frames '
                            f'{frame_indices[0]}..{frame_indices[-1]} exist in {sample["video"]}')
        if len(frames) < len(frame_indices):
            if sample['video_id'] not in self._warned_short:
                self._warned_short.add(sample['video_id'])
                warnings.warn(f'video {sample["video_id"]}: {len(frame_indices) - len(frames)} '
                              f'of {len(frame_indices)} frames missing in {sample["video"]}; '
                              'padding the clip by looping', stacklevel=2)
            frames = [frames[i % len(frames)] for i in range(len(frame_indices))]
        if self.spatial_transform is not None:
            self.spatial_transform.randomize_parameters()
            frames = [self.spatial_transform(img) for img in frames]
        return np.stack(frames, axis=1)

    def get_target(self, sample: dict):
        if isinstance(self.target_type, list):
            target = [sample[t] for t in self.target_type]
        else:
            target = sample[self.target_type]
        return target if self.target_transform is None else self.target_transform(target)

    def __getitem__(self, index: int):
        sample = self.data[index]
        frame_indices = sample['frame_indices']
        if self.temporal_transform is not None:
            frame_indices = self.temporal_transform(frame_indices)
        return self.load_clip(sample, frame_indices), self.get_target(sample)

    def __len__(self) -> int:
        return len(self.data)
