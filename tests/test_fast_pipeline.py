"""datasets.clip_pipeline: the fast path gives the plain path's clips (same random draws, same
pixels; within a stated tolerance where a JPEG is decoded at a reduced scale) and is taken only
for the transforms it covers."""
import io
import json
import random
import warnings
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import clip_pipeline, get_inference_data, get_training_data, get_validation_data
from datasets.clip_pipeline import ClipDecoder, fast_pipeline
from datasets.loader import FrameError, VideoLoader, VideoLoaderFlowHDF5, VideoLoaderHDF5
from spatial_transforms import (ColorJitter, Compose, KINETICS_MEAN, KINETICS_STD,
                                RandomResizedCrop, get_inference_spatial_transform,
                                get_train_spatial_transform, get_val_spatial_transform)
from temporal_transforms import SlidingWindow, TemporalEvenCrop, TemporalRandomCrop
from util_scripts.make_demo_data import make_appearance, render_video

# Reduced-scale decoding against the plain path's full decode + resize, in uint8 levels (the
# module docstring has the measured values): mean over a clip, and any pixel.
MEAN_TOLERANCE = 2.0
MAX_TOLERANCE = 32


def options(**changes):
    opt = dict(train_crop='random', train_crop_min_scale=0.25, train_crop_min_ratio=0.75,
               sample_size=32, no_hflip=False, colorjitter=False, input_type='rgb',
               value_scale=1, mean=list(KINETICS_MEAN), std=list(KINETICS_STD),
               no_mean_norm=False, no_std_norm=False, inference_crop='center')
    opt.update(changes)
    return Namespace(**opt)


def demo_frames(n, width=320, height=240, seed=0):
    """Frames of make_demo_data's videos: sharp-edged moving stripes."""
    rng = np.random.default_rng(seed)
    return list(render_video(make_appearance(rng), 3 * np.arange(n), height, width))


def textured_frames(n, width=320, height=240, seed=0):
    """Moving colour gradients with noise of std 6: the benchmark's frames."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    return [(np.stack([128 + 100 * np.sin((x * (c + 1) + y * (3 - c) + 7 * t) / 40)
                       for c in range(3)], axis=-1) + rng.normal(0, 6, (height, width, 3)))
            .clip(0, 255).astype(np.uint8) for t in range(n)]


def pink_noise_frames(n, width=320, height=240, seed=0):
    """1/f noise: the spectrum of natural images, with more fine detail than video frames."""
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing='ij')
    amplitude = 1 / np.maximum(np.hypot(fx, fy), 1 / max(width, height))
    frames = []
    for _ in range(n):
        spectrum = amplitude[..., None] * np.exp(2j * np.pi * rng.random((height, width, 3)))
        img = np.real(np.fft.ifft2(spectrum, axes=(0, 1)))
        frames.append((128 + 50 * img / img.std()).clip(0, 255).astype(np.uint8))
    return frames


def jpeg(frame, quality=90, mode='RGB'):
    out = io.BytesIO()
    Image.fromarray(frame).convert(mode).save(out, 'JPEG', quality=quality)
    return out.getvalue()


def plain_clip(transform, frames):
    """The plain path: every frame decoded by Pillow and sent through the transforms."""
    transform.randomize_parameters()
    images = [Image.open(io.BytesIO(f)).convert('RGB') for f in frames]
    return np.stack([transform(img) for img in images], axis=1)


def fast_clip(transform, frames, loader=VideoLoader()):
    decoder = ClipDecoder(fast_pipeline(transform, loader), transform)
    return decoder.finish([decoder(f, 'frame') for f in frames])


def levels(a, b):
    """|a - b| of two normalized clips [C, T, H, W] on the uint8 scale."""
    return np.abs(a - b) * np.asarray(KINETICS_STD).reshape(3, 1, 1, 1) * 255


def test_covers_exactly_main_pys_random_and_center_crop_pipelines():
    loader = VideoLoader()
    covered = [get_train_spatial_transform(options()),
               get_train_spatial_transform(options(no_hflip=True, value_scale=255)),
               get_train_spatial_transform(options(train_crop='center')),
               get_val_spatial_transform(options()),
               get_inference_spatial_transform(options())]
    assert all(fast_pipeline(t, loader) is not None for t in covered)
    assert fast_pipeline(covered[0], VideoLoaderHDF5()) is not None
    not_covered = [get_train_spatial_transform(options(train_crop='corner')),
                   get_train_spatial_transform(options(colorjitter=True)),
                   get_train_spatial_transform(options(input_type='flow', mean=[0.5] * 2,
                                                       std=[0.5] * 2)),
                   get_inference_spatial_transform(options(inference_crop='nocrop')),
                   Compose([RandomResizedCrop(32, interpolation=Image.Resampling.NEAREST)]
                           + covered[0].transforms[1:]),
                   Compose(covered[0].transforms[:2] + [ColorJitter(brightness=0.1)]
                           + covered[0].transforms[2:]),
                   covered[0].transforms[0]]
    assert all(fast_pipeline(t, loader) is None for t in not_covered)
    # loaders that take no decode: a custom image loader, optical flow
    assert fast_pipeline(covered[0], VideoLoader(image_loader=lambda p: None)) is None
    assert fast_pipeline(covered[0], VideoLoaderFlowHDF5()) is None


@pytest.mark.parametrize('value_scale', [1, 255])
def test_same_boxes_flips_and_pixels_as_the_plain_path(value_scale):
    """64x48 frames cropped to 32: no crop covers twice the output, so every frame is decoded
    whole and the clips must be equal, bit for bit."""
    frames = [jpeg(f) for f in textured_frames(6, 64, 48)]
    transform = get_train_spatial_transform(options(value_scale=value_scale))
    crop, flip = transform.transforms[:2]
    flips = set()
    for seed in range(12):
        random.seed(seed)
        plain = plain_clip(transform, frames)
        box, flipped, state = crop.box, flip.random_p < 0.5, random.getstate()
        random.seed(seed)
        fast = fast_clip(transform, frames)
        assert crop.box == box and (flip.random_p < 0.5) == flipped
        assert random.getstate() == state  # the same draws, no more
        assert fast.dtype == np.float32 and fast.shape == plain.shape == (3, 6, 32, 32)
        np.testing.assert_array_equal(fast, plain)
        flips.add(flipped)
    assert flips == {True, False}


@pytest.mark.parametrize('width, height, size', [
    (40, 30, 32),  # 40x30 -> 42x32 -> 32x32: no reduction fits
    (64, 48, 24)])  # a 48x48 box, exactly twice the output: not reduced (a resize at 1:1)
def test_validation_clip_equals_the_plain_path_without_reduction(width, height, size):
    frames = [jpeg(f) for f in textured_frames(3, width, height)]
    transform = get_val_spatial_transform(options(sample_size=size))
    np.testing.assert_array_equal(fast_clip(transform, frames), plain_clip(transform, frames))


@pytest.mark.parametrize('make_frames, mean_tolerance', [
    (demo_frames, MEAN_TOLERANCE), (textured_frames, MEAN_TOLERANCE),
    (pink_noise_frames, 5.0)])  # finer detail than video frames: measured 4.2
def test_reduced_scale_decoding_is_within_the_tolerance(make_frames, mean_tolerance,
                                                        monkeypatch):
    """320x240 frames to 112: the validation crop and the large training crops decode at half
    size (checked), and differ from the plain path by less than the tolerance."""
    reductions = []
    crop = ClipDecoder._crop
    monkeypatch.setattr(ClipDecoder, '_crop',
                        lambda self, img, box, s: reductions.append(s) or crop(self, img, box, s))
    frames = [jpeg(f) for f in make_frames(4)]
    for transform in (get_val_spatial_transform(options(sample_size=112)),
                      get_train_spatial_transform(options(sample_size=112,
                                                          train_crop_min_scale=0.95))):
        for seed in range(3):
            random.seed(seed)
            plain = plain_clip(transform, frames)
            random.seed(seed)
            diff = levels(fast_clip(transform, frames), plain)
            assert 0 < diff.mean() < mean_tolerance and diff.max() < MAX_TOLERANCE * 2
            if make_frames is not pink_noise_frames:
                assert diff.max() < MAX_TOLERANCE
    assert set(reductions) == {2}


def test_simplejpeg_and_pillow_decode_alike(monkeypatch):
    """Both decoders are libjpeg-turbo: the same pixels, whole or at a reduced scale."""
    if clip_pipeline.simplejpeg is None:
        pytest.skip('simplejpeg is not installed')
    frames = [jpeg(f) for f in demo_frames(2) + textured_frames(2)]
    frames.append(jpeg(textured_frames(1)[0], mode='L'))  # grayscale JPEG -> RGB
    for size in (112, 200):  # reduced, whole
        transform = get_val_spatial_transform(options(sample_size=size))
        fast = fast_clip(transform, frames)
        monkeypatch.setattr(clip_pipeline, 'simplejpeg', None)
        np.testing.assert_array_equal(fast_clip(transform, frames), fast)
        monkeypatch.undo()


def test_frames_that_are_not_jpegs_are_decoded_by_pillow():
    frames = [jpeg(f) for f in textured_frames(2, 64, 48)]
    png = io.BytesIO()
    Image.fromarray(textured_frames(1, 64, 48)[0]).save(png, 'PNG')
    frames.append(png.getvalue())
    transform = get_val_spatial_transform(options(sample_size=16))  # a reduction for JPEGs
    diff = levels(fast_clip(transform, frames), plain_clip(transform, frames))
    assert diff[:, 2].max() < 1e-3  # the PNG frame: decoded whole, the plain path's pixels
    with pytest.raises(FrameError, match='cannot read frame frame'):
        fast_clip(transform, [b'not an image'])


# ------------------------------------------------------------------------------------------
# in the data sets: frame folders, hdf5 and video files, bad frames


def write_tree(root: Path, frames, n_videos=2, name='jpg'):
    """n_videos frame folders of `frames` (uint8 arrays), in training and validation."""
    database = {}
    for v in range(n_videos):
        folder = root / name / 'c' / f'v{v}'
        folder.mkdir(parents=True)
        for k, frame in enumerate(frames[v:] + frames[:v], 1):
            (folder / f'image_{k:05d}.jpg').write_bytes(jpeg(frame))
        for subset in ('training', 'validation'):
            database[f'v{v}_{subset}'] = {
                'subset': subset, 'video_path': str(folder),
                'annotations': {'label': 'c', 'segment': [1, len(frames) + 1]}}
    annotation = root / f'{name}.json'
    annotation.write_text(json.dumps({'labels': ['c'], 'database': database}))
    return root / name, annotation


def datasets_of(video_path, annotation, file_type='jpg', size=32, strict=False):
    opt = options(sample_size=size)
    train = get_training_data(video_path, annotation, 'ucf101', 'rgb', file_type,
                              get_train_spatial_transform(opt), TemporalRandomCrop(4),
                              strict_data=strict)
    val, _ = get_validation_data(video_path, annotation, 'ucf101', 'rgb', file_type,
                                 get_val_spatial_transform(opt), TemporalEvenCrop(4, 2),
                                 strict_data=strict)
    return train, val


def samples(data, fast, seed=0):
    """All samples of a data set, fast path on or off, from the same random state."""
    data.fast_path = fast
    random.seed(seed)
    out = []
    for i in range(len(data)):
        clips, _ = data[i]
        out.append(np.stack(clips) if isinstance(clips, list) else clips)
    return out


def assert_same_samples(data):
    assert fast_pipeline(data.spatial_transform, data.loader) is not None
    plain, fast = samples(data, False), samples(data, True)
    for a, b in zip(plain, fast):
        np.testing.assert_array_equal(a, b)


def sample_levels(data):
    """|fast - plain| in uint8 levels over all samples of a data set."""
    return levels(np.concatenate(samples(data, True)), np.concatenate(samples(data, False)))


def test_frame_folders_give_the_plain_paths_clips(tmp_path):
    train, val = datasets_of(*write_tree(tmp_path, textured_frames(6, 64, 48)))
    assert_same_samples(train)
    assert_same_samples(val)


def test_frame_folders_at_a_reduced_scale(tmp_path, monkeypatch):
    reductions = []
    crop = ClipDecoder._crop
    monkeypatch.setattr(ClipDecoder, '_crop',
                        lambda self, img, box, s: reductions.append(s) or crop(self, img, box, s))
    _, val = datasets_of(*write_tree(tmp_path, demo_frames(6, 160, 120)), size=56)
    diff = sample_levels(val)
    assert 0 < diff.mean() < MEAN_TOLERANCE and diff.max() < MAX_TOLERANCE
    assert set(reductions) == {2}


def test_inference_decodes_whole_frames(tmp_path):
    """Its scores are the results (and predict_video's): the plain path's pixels, bit for bit,
    where validation decodes the same frames at a reduced scale."""
    video_path, annotation = write_tree(tmp_path, demo_frames(6, 160, 120))
    data, _ = get_inference_data(video_path, annotation, 'ucf101', 'rgb', 'jpg', 'val',
                                 get_inference_spatial_transform(options(sample_size=56)),
                                 SlidingWindow(4, 2))
    assert_same_samples(data)
    _, val = datasets_of(video_path, annotation, size=56)
    assert sample_levels(val).mean() > 0


def test_bad_frames_are_replaced_warned_and_counted_as_on_the_plain_path(tmp_path):
    video_path, annotation = write_tree(tmp_path, textured_frames(6, 64, 48), n_videos=1)
    (video_path / 'c' / 'v0' / 'image_00002.jpg').unlink()
    third = video_path / 'c' / 'v0' / 'image_00003.jpg'
    third.write_bytes(third.read_bytes()[:300])  # truncated
    results = {}
    for fast in (False, True):
        train, _ = datasets_of(video_path, annotation)
        with pytest.warns(UserWarning) as record:
            results[fast] = samples(train, fast)
        assert any('image_00002.jpg is missing' in str(w.message) and 'image_00003.jpg' in
                   str(w.message) for w in record)
        assert train.bad_frames.take() == (2, 0)
    np.testing.assert_array_equal(results[True][0], results[False][0])
    train, _ = datasets_of(video_path, annotation, strict=True)
    random.seed(0)
    with pytest.raises(FrameError, match='image_00002.jpg is missing'):
        train[0]


def test_video_without_readable_frames_gives_way_on_the_fast_path(tmp_path):
    video_path, annotation = write_tree(tmp_path, textured_frames(6, 64, 48))
    for frame in (video_path / 'c' / 'v0').iterdir():
        frame.write_bytes(b'broken')
    train, _ = datasets_of(video_path, annotation)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        plain, fast = samples(train, False), samples(train, True)
    assert train.bad_frames.take() == (0, 2)
    np.testing.assert_array_equal(plain[0], fast[0])


def test_hdf5_files_give_the_plain_paths_clips(tmp_path):
    h5py = pytest.importorskip('h5py')
    frames = textured_frames(6, 64, 48)
    database = {}
    for v in range(2):
        path = tmp_path / 'hdf5' / 'c' / f'v{v}.hdf5'
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, 'w') as f:
            video = f.create_dataset('video', (len(frames),),
                                     dtype=h5py.special_dtype(vlen=np.dtype('uint8')))
            for k, frame in enumerate(frames[v:] + frames[:v]):
                video[k] = np.frombuffer(jpeg(frame), dtype=np.uint8)
        segment = {'label': 'c', 'segment': [1, len(frames) + 1]}
        database[f'v{v}'] = {'subset': 'training', 'annotations': segment}
        database[f'w{v}'] = {'subset': 'validation', 'annotations': segment,
                             'video_path': str(path)}
    annotation = tmp_path / 'hdf5.json'
    annotation.write_text(json.dumps({'labels': ['c'], 'database': database}))
    train, val = datasets_of(tmp_path / 'hdf5', annotation, 'hdf5')
    assert_same_samples(train)
    assert_same_samples(val)


def test_video_files_give_the_plain_paths_clips(tmp_path, monkeypatch):
    """Frames come scaled to 320x240 (shorter side 240): whole ones for a large output, and
    for a small one reduced by Pillow's reduce(), within the tolerance of the JPEG path."""
    av = pytest.importorskip('av')
    path = tmp_path / 'videos' / 'c' / 'v0.avi'
    path.parent.mkdir(parents=True)
    with av.open(str(path), 'w') as container:
        stream = container.add_stream('mpeg4', rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 72, 'yuv420p'
        for frame in demo_frames(8, 96, 72):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
        container.mux(stream.encode(None))
    database = {'v0': {'subset': 'training', 'annotations': {'label': 'c', 'segment': [1, 9]}},
                'w0': {'subset': 'validation', 'video_path': str(path),
                       'annotations': {'label': 'c', 'segment': [1, 9]}}}
    annotation = tmp_path / 'video.json'
    annotation.write_text(json.dumps({'labels': ['c'], 'database': database}))
    _, val = datasets_of(tmp_path / 'videos', annotation, 'video', size=160)
    assert_same_samples(val)
    reductions = []
    crop = ClipDecoder._crop
    monkeypatch.setattr(ClipDecoder, '_crop',
                        lambda self, img, box, s: reductions.append(s) or crop(self, img, box, s))
    for data in datasets_of(tmp_path / 'videos', annotation, 'video', size=48):
        diff = sample_levels(data)
        assert diff.mean() < MEAN_TOLERANCE and diff.max() < MAX_TOLERANCE
    assert 4 in reductions


def test_benchmark_measures_both_pipelines_over_a_data_set(tmp_path, capsys):
    from util_scripts import benchmark
    video_path, annotation = write_tree(tmp_path, textured_frames(8, 64, 48))
    benchmark.main(['--jobs', 'data', '--quick', '--video_path', str(video_path),
                    '--annotation_path', str(annotation)])
    out = capsys.readouterr().out
    assert 'error' not in out
    for name in ('training: random resized crop + flip', 'validation: resize + center crop'):
        cells = next(line for line in out.splitlines() if name in line).split('|')[2:-1]
        assert all(float(c.strip().rstrip('x')) > 0 for c in cells
                   if c.strip() not in ('n/a', ''))  # '': no PyTorch for the reference
