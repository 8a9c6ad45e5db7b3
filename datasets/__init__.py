"""Dataset builders for training, validation and inference (the reference's `dataset.py`).

`dataset_name` (`--dataset`) must be one of DATASETS; with `--file_type video` it says which
extension a video file has first (ucf101, hmdb51: .avi; kinetics, mit, activitynet: .mp4; the
others are looked for too). kinetics, ucf101, hmdb51 and mit read the same annotation format: one
"label" and a frame "segment" per video, `VIDEO_PATH/<label>/<video_id>`. activitynet reads
ActivityNet's own json (a taxonomy, segments in seconds, the videos' fps) and videos
`VIDEO_PATH/v_<video_id>` (datasets/activitynet.py): a sample per annotated segment in training
and validation, a sample per whole video in inference (the reference's untrimmed setting).
"""
from pathlib import Path
from typing import Optional

from utils import UserError
from .activitynet import ActivityNet, ActivityNetMultiClips
from .layout import FileLayout, FrameFolderLayout, VideoFileLayout
from .video_reader import video_extensions
from .loader import VideoLoaderFlowHDF5, rgb_loader
from .videodataset import VideoDataset
from .videodataset_multiclips import VideoDatasetMultiClips, collate_fn

DATASETS = ('kinetics', 'activitynet', 'ucf101', 'hmdb51', 'mit')
INFERENCE_SUBSETS = {'train': 'training', 'val': 'validation', 'test': 'testing'}
FILE_TYPES = ('jpg', 'hdf5', 'video')


def check_dataset_name(dataset_name: str) -> str:
    if dataset_name not in DATASETS:
        raise UserError(f'unknown dataset {dataset_name!r}: one of {", ".join(DATASETS)}')
    return dataset_name


def get_loader_and_formatter(input_type: str, file_type: str,
                             dataset_name: Optional[str] = None):
    """The frame loader and the video path layout for `--input_type` and `--file_type`
    (video files: the extension of `dataset_name`'s videos looked for first)."""
    if file_type not in FILE_TYPES:
        raise UserError(f'unknown --file_type {file_type!r}: one of {", ".join(FILE_TYPES)}')
    if input_type == 'flow' and file_type != 'hdf5':
        raise UserError('--input_type flow needs --file_type hdf5')
    loader = rgb_loader(file_type) if input_type == 'rgb' else VideoLoaderFlowHDF5()
    if file_type == 'jpg':
        return loader, FrameFolderLayout()
    if file_type == 'video':
        return loader, VideoFileLayout(video_extensions(dataset_name))
    return loader, FileLayout('.hdf5', 'hdf5 file')


def _dataset(cls, video_path: Path, annotation_path: Path, dataset_name: str, subset: str,
             input_type: str, file_type: str, spatial_transform, temporal_transform, **kwargs):
    loader, video_path_formatter = get_loader_and_formatter(
        input_type, file_type, check_dataset_name(dataset_name))
    return cls(video_path, annotation_path, subset, spatial_transform=spatial_transform,
               temporal_transform=temporal_transform, video_loader=loader,
               video_path_formatter=video_path_formatter, **kwargs)


def get_training_data(video_path, annotation_path, dataset_name, input_type, file_type,
                      spatial_transform=None, temporal_transform=None,
                      strict_data: bool = False) -> VideoDataset:
    """One random clip per training video (activitynet: per annotated segment) and its label."""
    cls = ActivityNet if dataset_name == 'activitynet' else VideoDataset
    return _dataset(cls, video_path, annotation_path, dataset_name, 'training',
                    input_type, file_type, spatial_transform, temporal_transform,
                    strict_data=strict_data)


def get_validation_data(video_path, annotation_path, dataset_name, input_type, file_type,
                        spatial_transform=None, temporal_transform=None,
                        strict_data: bool = False):
    """Several clips per validation video (activitynet: per annotated segment), each with its
    label; and their collate_fn."""
    cls = ActivityNetMultiClips if dataset_name == 'activitynet' else VideoDatasetMultiClips
    data = _dataset(cls, video_path, annotation_path, dataset_name,
                    'validation', input_type, file_type, spatial_transform, temporal_transform,
                    strict_data=strict_data)
    return data, collate_fn


def get_inference_data(video_path, annotation_path, dataset_name, input_type, file_type,
                       inference_subset, spatial_transform=None, temporal_transform=None,
                       strict_data: bool = False):
    """All sliding-window clips of each video of `inference_subset` (activitynet: of all its
    frames, the untrimmed setting), targeted (video_id, segment)."""
    if inference_subset not in INFERENCE_SUBSETS:
        raise UserError(f'unknown --inference_subset {inference_subset!r}: one of '
                        f'{", ".join(INFERENCE_SUBSETS)}')
    kwargs = {}
    cls = VideoDatasetMultiClips
    if dataset_name == 'activitynet':
        cls, kwargs = ActivityNetMultiClips, {'is_untrimmed_setting': True}
    data = _dataset(cls, video_path, annotation_path, dataset_name,
                    INFERENCE_SUBSETS[inference_subset], input_type, file_type,
                    spatial_transform, temporal_transform, target_type=['video_id', 'segment'],
                    strict_data=strict_data, **kwargs)
    data.reduced_decoding = False  # whole frames: the results are the reference's pixels'
    return data, collate_fn
