"""The data job: clips/s in one process of the training and the validation data sets main.py
builds (main.get_train_utils / get_val_utils: --train_crop random = random resized crop + flip;
resize + center crop), with the fast path of datasets.clip_pipeline and without it, against the
reference's pipeline for the same clips; the sides take turns, repeat by repeat."""
import io
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .case import Case, rss_mb
from .frames import write_video
from .tables import markdown_table
from .workloads import torch_setup

DATA_PIPELINES = {'train': 'training: random resized crop + flip',
                  'val': 'validation: resize + center crop'}


def write_videos(folder: Path, n_videos: int, n_frames: int, size) -> Path:
    """Synthetic frame folders and their annotation json (each video in the training subset,
    and again, by its `video_path`, in the validation one)."""
    rng = np.random.default_rng(0)
    database = {}
    for v in range(n_videos):
        video = folder / 'jpg' / 'c' / f'v{v}'
        write_video(video, n_frames, size, v, rng)
        annotations = {'label': 'c', 'segment': [1, n_frames + 1]}
        database[f'v{v}'] = {'subset': 'training', 'annotations': annotations}
        database[f'v{v}_val'] = {'subset': 'validation', 'annotations': annotations,
                                 'video_path': str(video)}
    annotation = folder / 'data.json'
    annotation.write_text(json.dumps({'labels': ['c'], 'database': database}))
    return annotation


def data_options(case: Case, video_path, annotation_path, result_path):
    """main.py's options for the data sets (opts.parse_opts + resolve_model_input, as get_opt)."""
    from opts import parse_opts, resolve_model_input
    opt = parse_opts(['--video_path', str(video_path), '--annotation_path', str(annotation_path),
                      '--result_path', str(result_path), '--dataset', case.dataset,
                      '--file_type', case.file_type, '--sample_size', str(case.sample_size),
                      '--sample_duration', str(case.sample_duration)])
    resolve_model_input(opt)
    return opt


def project_dataset(opt, pipeline: str = 'train'):
    """main.py's training or validation data set, built as main.get_train_utils and
    main.get_val_utils build them."""
    from datasets import get_training_data, get_validation_data
    from spatial_transforms import get_train_spatial_transform, get_val_spatial_transform
    from temporal_transforms import (TemporalCenterCrop, TemporalEvenCrop, TemporalRandomCrop,
                                     get_temporal_transform)
    if pipeline == 'train':
        t_crop = TemporalRandomCrop if opt.train_t_crop == 'random' else TemporalCenterCrop
        return get_training_data(opt.video_path, opt.annotation_path, opt.dataset,
                                 opt.input_type, opt.file_type, get_train_spatial_transform(opt),
                                 get_temporal_transform(opt, t_crop(opt.sample_duration)))
    data, _ = get_validation_data(opt.video_path, opt.annotation_path, opt.dataset,
                                  opt.input_type, opt.file_type, get_val_spatial_transform(opt),
                                  get_temporal_transform(opt, TemporalEvenCrop(
                                      opt.sample_duration, opt.n_val_samples)))
    return data


def project_clips(data, fast_path: bool) -> Callable[[int], int]:
    """Video i's sample from our data set (fast path on or off); returns its number of clips."""
    def sample(i):
        data.fast_path = fast_path
        clips, _ = data[i]
        return 1 if isinstance(clips, np.ndarray) else len(clips)
    return sample


def reference_clips(case: Case, opt, data, pipeline: str) -> Callable[[int], int]:
    """The reference's loading and transforms (`reference`) of the clips `data` makes of video i
    (the same frames; for the same state of Python's `random`, the same crops and flips);
    returns the number of clips. Frames as its VideoLoader reads them: a path.exists() and a
    PIL decode per frame; hdf5: Image.open of the bytes, decoded by the first transform."""
    from PIL import Image

    from spatial_transforms import random_resized_crop_box

    from . import reference
    torch = torch_setup(case)
    torch.set_num_threads(1)  # as in the workers of PyTorch's DataLoader, which set it so
    size, scale, mean, std = opt.sample_size, opt.value_scale, list(opt.mean), list(opt.std)
    crop_scale = (opt.train_crop_min_scale, 1.0)
    crop_ratio = (opt.train_crop_min_ratio, 1 / opt.train_crop_min_ratio)

    def load(video_path, indices):
        if opt.file_type == 'hdf5':
            import h5py
            with h5py.File(video_path, 'r') as f:
                video = f['video']
                return [Image.open(io.BytesIO(video[i - 1])) for i in indices if i <= len(video)]
        paths = [video_path / f'image_{i:05d}.jpg' for i in indices]
        return [reference.load_frame(path) for path in paths if path.exists()]

    def clip(frames):
        if pipeline != 'train':
            return reference.stack(reference.center_frames(frames, size, scale, mean, std))
        flip = not opt.no_hflip and random.random() < 0.5
        box = random_resized_crop_box(*frames[0].size, crop_scale, crop_ratio)
        return reference.train_clip(frames, size, box, flip, scale, mean, std)

    def sample(i):
        indices = data.temporal_transform(data.data[i]['frame_indices'])
        clips = [indices] if pipeline == 'train' else indices
        video_path = data.data.video_path(i)
        return len([clip(load(video_path, c)) for c in clips])
    return sample


def data_pipelines(case: Case) -> dict:
    """Clips/s of main.py's training and validation data sets, fast path on and off, and of the
    reference's pipeline for the same clips: repeats interleaved in this one process, each
    repeat of each side starting from the same random state."""
    result, base_rss = {}, rss_mb()
    with tempfile.TemporaryDirectory() as folder:
        if case.video_path is None:
            annotation = write_videos(Path(folder), case.n_videos, case.n_frames, case.frame_size)
            opt = data_options(case, Path(folder) / 'jpg', annotation, folder)
        else:
            opt = data_options(case, case.video_path, case.annotation_path, folder)
        for pipeline in ('train', 'val'):
            data = project_dataset(opt, pipeline)
            videos = random.Random(0).sample(range(len(data)), min(len(data), case.n_videos))
            sides = {'ours': project_clips(data, True), 'plain': project_clips(data, False)}
            if case.reference and opt.file_type != 'video':
                sides['reference'] = reference_clips(case, opt, data, pipeline)
            per_repeat = max(1, case.clips_per_repeat // (1 if pipeline == 'train'
                                                          else opt.n_val_samples))
            times = {name: [] for name in sides}
            clips = {name: [] for name in sides}
            for repeat in range(case.warmup + case.repeats):
                chosen = [videos[(repeat * per_repeat + j) % len(videos)]
                          for j in range(per_repeat)]
                for name, sample in sides.items():
                    random.seed(repeat)
                    start = time.perf_counter()
                    n = sum(sample(i) for i in chosen)
                    if repeat >= case.warmup:
                        times[name].append(time.perf_counter() - start)
                        clips[name].append(n)
            result[pipeline] = {name: [c / s for c, s in zip(clips[name], times[name])]
                                for name in sides}
    return dict(result, base_rss=base_rss)


def format_data(case: Case, result: dict) -> str:
    """Clips/s per process of our training and validation pipelines (fast path on and off)
    and of the reference's, with the ratios."""
    if case.video_path is None:
        frames = '{}x{} jpg, the benchmark\'s frames'.format(*case.frame_size)
    else:
        frames = f'{case.video_path} ({case.file_type})'
    title = (f'data, clips/s per process ([3, {case.sample_duration}, {case.sample_size}, '
             f'{case.sample_size}]; {frames})')
    if 'error' in result:
        return markdown_table([title], [['error: ' + result['error']]])
    header = [title, 'reference', 'ours', 'vs reference', 'ours, fast path off', 'vs reference']
    lines = []
    for pipeline, name in DATA_PIPELINES.items():
        speeds = {side: statistics.median(v) for side, v in result[pipeline].items()}
        ref = speeds.get('reference')

        def cell(side):
            return [f'{speeds[side]:.1f}', f'{speeds[side] / ref:.2f}x' if ref else '']
        lines.append([name, f'{ref:.1f}' if ref else 'n/a'] + cell('ours') + cell('plain'))
    return markdown_table(header, lines)
