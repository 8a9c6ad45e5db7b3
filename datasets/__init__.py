"""Dataset builders for training, validation and inference (the reference's `dataset.py`)."""
from pathlib import Path

from utils import UserError
from .layout import FileLayout, FrameFolderLayout, VideoFileLayout
from .loader import (VideoLoader, VideoLoaderFlowHDF5, VideoLoaderHDF5, VideoLoaderPyAV,
                     image_name_formatter)
from .videodataset import VideoDataset
from .videodataset_multiclips import VideoDatasetMultiClips, collate_fn

DATASETS = ('kinetics', 'activitynet', 'ucf101', 'hmdb51', 'mit')
INFERENCE_SUBSETS = {'train': 'training', 'val': 'validation', 'test': 'testing'}
FILE_TYPES = ('jpg', 'hdf5', 'video')
# Shorter side of the frames decoded from video files: generate_video_jpgs' default --size, so
# that `--file_type video` feeds the model what the jpg folders would.
VIDEO_FRAME_SIZE = 240


def get_loader_and_formatter(input_type: str, file_type: str):
    """The frame loader and the video path layout for `--input_type` and `--file_type`."""
    if file_type not in FILE_TYPES:
        raise UserError(f'unknown --file_type {file_type!r}: one of {", ".join(FILE_TYPES)}')
    if input_type == 'flow' and file_type != 'hdf5':
        raise UserError('--input_type flow needs --file_type hdf5')
    if file_type == 'jpg':
        return VideoLoader(image_name_formatter), FrameFolderLayout()
    if file_type == 'video':
        return VideoLoaderPyAV(VIDEO_FRAME_SIZE), VideoFileLayout()
    loader = VideoLoaderHDF5() if input_type == 'rgb' else VideoLoaderFlowHDF5()
    return loader, FileLayout('.hdf5', 'hdf5 file')


def _dataset(cls, video_path: Path, annotation_path: Path, subset: str, input_type: str,
             file_type: str, spatial_transform, temporal_transform, **kwargs):
    loader, video_path_formatter = get_loader_and_formatter(input_type, file_type)
    return cls(video_path, annotation_path, subset, spatial_transform=spatial_transform,
               temporal_transform=temporal_transform, video_loader=loader,
               video_path_formatter=video_path_formatter, **kwargs)


def get_training_data(video_path, annotation_path, dataset_name, input_type, file_type,
                      spatial_transform=None, temporal_transform=None,
                      strict_data: bool = False) -> VideoDataset:
    """One random clip per training video and its label."""
    return _dataset(VideoDataset, video_path, annotation_path, 'training', input_type,
                    file_type, spatial_transform, temporal_transform, strict_data=strict_data)


def get_validation_data(video_path, annotation_path, dataset_name, input_type, file_type,
                        spatial_transform=None, temporal_transform=None,
                        strict_data: bool = False):
    """Several clips per validation video, each with the video's label; and their collate_fn."""
    data = _dataset(VideoDatasetMultiClips, video_path, annotation_path, 'validation',
                    input_type, file_type, spatial_transform, temporal_transform,
                    strict_data=strict_data)
    return data, collate_fn


def get_inference_data(video_path, annotation_path, dataset_name, input_type, file_type,
                       inference_subset, spatial_transform=None, temporal_transform=None,
                       strict_data: bool = False):
    """All sliding-window clips of each video of `inference_subset`, targeted (video_id, segment)."""
    data = _dataset(VideoDatasetMultiClips, video_path, annotation_path,
                    INFERENCE_SUBSETS[inference_subset], input_type, file_type,
                    spatial_transform, temporal_transform, target_type=['video_id', 'segment'],
                    strict_data=strict_data)
    return data, collate_fn
