"""--file_type video: frames decoded with PyAV, against generate_video_jpgs' frames and against
a sequential decode; damaged videos get the bad-frame treatment of frame folders."""
import json
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip('av')

from datasets import get_inference_data, get_training_data  # noqa: E402
from datasets import video_reader  # noqa: E402
from datasets.loader import FrameError, VideoLoaderPyAV  # noqa: E402
from datasets.video_reader import VideoReader, count_frames  # noqa: E402
from spatial_transforms import Compose, ToTensor  # noqa: E402
from temporal_transforms import SlidingWindow, TemporalBeginCrop  # noqa: E402
from conftest import bar_video, encode, read_log, smooth_frames  # noqa: E402
import main  # noqa: E402
from util_scripts import eval_accuracy, generate_video_jpgs  # noqa: E402
from util_scripts.utils import find_ffmpeg  # noqa: E402
from utils import UserError  # noqa: E402

pytestmark = pytest.mark.filterwarnings('ignore:1 of 3 training videos have no video file')

# The largest difference of a pixel channel between a decoded video frame and the JPEG
# generate_video_jpgs wrote for it, seen on these videos at --size 48: 14 (per-frame mean
# abs difference at most 2.1; at --size 240: 11 and 1.5). It is the JPEG compression: ffmpeg's
# own RGB output of the same filter equals ours exactly (ffmpeg 9.0 and PyAV 18's libav 62).
MAX_JPEG_ROUND_TRIP = 24
MEAN_JPEG_ROUND_TRIP = 3.0


H264 = ['-c:v', 'libx264', '-g', '6', '-bf', '2', '-preset', 'ultrafast']  # B-frames: reordered
MPEG4 = ['-c:v', 'mpeg4', '-g', '6', '-q:v', '3']


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
    """SRC/<class>/<video>: an mp4 with B-frames, an avi, a portrait video, a rotated one."""
    src = tmp_path_factory.mktemp('src')
    encode(smooth_frames(30, 96, 72), src / 'ClassA' / 'v_h264.mp4', H264)
    encode(smooth_frames(27, 96, 72), src / 'ClassA' / 'v_mpeg4.avi', MPEG4)
    encode(smooth_frames(20, 64, 80), src / 'ClassB' / 'v_portrait.mp4', H264)
    # A display matrix: ffmpeg turns the frames upright (72x96 here), and so must we.
    encode(smooth_frames(12, 96, 72), src / 'ClassB' / 'v_upright.mp4', H264)
    # The display matrix is set on a stream copy: ffmpeg >= 6 with -display_rotation, older
    # ffmpeg (Debian 12's 5.1) with the `rotate` tag, which ffmpeg >= 6 ignores.
    upright, rotated = src / 'ClassB' / 'v_upright.mp4', src / 'ClassB' / 'v_rot.mp4'
    for args in (['-display_rotation', '90', '-i', str(upright)],
                 ['-i', str(upright), '-metadata:s:v:0', 'rotate=90']):
        done = subprocess.run([find_ffmpeg(), '-v', 'quiet', '-y', *args, '-c', 'copy',
                               str(rotated)])
        if done.returncode == 0:
            break
    else:
        raise RuntimeError(f'{find_ffmpeg()} sets no display matrix either way')
    upright.unlink()
    return src


@pytest.fixture(scope='module')
def jpgs(videos, tmp_path_factory):
    dst = tmp_path_factory.mktemp('jpg')
    for dataset in ('ucf101', 'kinetics'):  # .avi, then .mp4
        generate_video_jpgs.main([str(videos), str(dst), dataset, '--size', '48',
                                  '--n_jobs', '2'])
    return dst


def jpg_frames(folder: Path) -> list:
    return [np.asarray(Image.open(p).convert('RGB')) for p in sorted(folder.glob('*.jpg'))]


@pytest.mark.parametrize('name', ['ClassA/v_h264.mp4', 'ClassA/v_mpeg4.avi',
                                  'ClassB/v_portrait.mp4', 'ClassB/v_rot.mp4'])
def test_frames_equal_the_jpgs_of_generate_video_jpgs(videos, jpgs, name):
    path = videos / name
    expected = jpg_frames(jpgs / Path(name).with_suffix(''))
    n = len(expected)
    loader = VideoLoaderPyAV(size=48)
    frames = [np.asarray(img) for img in loader(path, list(range(1, n + 1)))]
    with pytest.raises(FrameError, match=rf'frame {n + 1} of .*{Path(name).name} is missing: '
                                         rf'the video has {n} frames'):
        loader(path, [n + 1])
    assert count_frames(path) == n
    assert [f.shape for f in frames] == [e.shape for e in expected]
    diffs = [np.abs(f.astype(int) - e) for f, e in zip(frames, expected)]
    assert max(d.max() for d in diffs) <= MAX_JPEG_ROUND_TRIP
    assert max(d.mean() for d in diffs) <= MEAN_JPEG_ROUND_TRIP
    # Each frame is nearer its own JPEG than the JPEG before or after: the order is the same.
    for k in range(1, n - 1):
        own = np.abs(frames[k].astype(int) - expected[k]).mean()
        assert own < np.abs(frames[k].astype(int) - expected[k - 1]).mean()
        assert own < np.abs(frames[k].astype(int) - expected[k + 1]).mean()


@pytest.mark.parametrize('name', ['ClassA/v_h264.mp4', 'ClassB/v_rot.mp4'])
def test_frames_equal_ffmpegs_own_rgb_output_of_the_same_filter(videos, name):
    """Before JPEG: generate_video_jpgs' filter (scale, with the rotation ffmpeg adds), output as
    raw RGB by ffmpeg, against the loader (exactly equal here; a little slack for other
    ffmpeg and libav versions, whose scalers may round differently)."""
    path = videos / name
    frames = np.stack([np.asarray(img) for img in VideoLoaderPyAV(48)(path, list(range(1, 13)))])
    raw = subprocess.run([find_ffmpeg(), '-v', 'error', '-i', str(path), '-map', '0:v:0', '-vf',
                          generate_video_jpgs.scale_filter(48), '-frames:v', '12', '-f',
                          'rawvideo', '-pix_fmt', 'rgb24', '-'], capture_output=True, check=True)
    expected = np.frombuffer(raw.stdout, np.uint8).reshape(frames.shape)
    diff = np.abs(frames.astype(int) - expected)
    assert diff.mean() <= 0.05 and diff.max() <= 8


def test_rotated_video_is_upright_like_ffmpeg_writes_it(jpgs):
    assert Image.open(jpgs / 'ClassB' / 'v_rot' / 'image_00001.jpg').size == (48, 64)
    assert Image.open(jpgs / 'ClassA' / 'v_h264' / 'image_00001.jpg').size == (64, 48)


def test_variable_frame_rate_video_one_jpg_per_decoded_frame(tmp_path):
    """ffmpeg's default for image files repeats frames to the nominal rate (53 files here);
    generate_video_jpgs writes each decoded frame once, the frames the video loader numbers."""
    src = tmp_path / 'src' / 'A'
    src.mkdir(parents=True)
    subprocess.run([find_ffmpeg(), '-v', 'error', '-f', 'lavfi', '-i',
                    'testsrc2=size=64x48:rate=25:duration=1', '-vf',
                    "setpts='(N+2*max(0,N-10))/25/TB'", '-fps_mode', 'vfr', '-c:v', 'libx264',
                    '-pix_fmt', 'yuv420p', str(src / 'x.mp4')], check=True)
    generate_video_jpgs.main([str(tmp_path / 'src'), str(tmp_path / 'jpg'), 'kinetics',
                              '--size', '32'])
    n_jpgs = len(list((tmp_path / 'jpg' / 'A' / 'x').glob('*.jpg')))
    assert n_jpgs == 25
    assert count_frames(src / 'x.mp4') == 25
    assert VideoReader(src / 'x.mp4').n_frames == 25


def test_clip_after_a_seek_equals_the_sequential_decode(videos, monkeypatch):
    path = videos / 'ClassA' / 'v_h264.mp4'
    sequential = VideoLoaderPyAV(size=48)(path, list(range(1, 31)))

    decoded = []
    real_decode = video_reader.decode_frames

    def counting_decode(container, stream):
        for frame in real_decode(container, stream):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(video_reader, 'decode_frames', counting_decode)
    loader = VideoLoaderPyAV(size=48)
    for clip in ([20, 21, 22, 23], [8, 9, 10], [24, 25, 26, 27, 28, 29, 30], [3, 2, 1, 2], [30]):
        decoded.clear()
        frames = loader(path, clip)
        for k, img in zip(clip, frames):
            assert np.array_equal(np.asarray(img), np.asarray(sequential[k - 1])), (clip, k)
        # Keyframes every 6 frames: a clip decodes from the keyframe before it, not from frame
        # 1; the frame after the one wanted can be decoded as well (B-frame reordering).
        assert len(decoded) <= clip[-1] - 6 * ((min(clip) - 1) // 6) + 3, clip
        if clip == [20, 21, 22, 23]:
            assert len(decoded) < 10
    # The next clip of a sliding window continues the decode where the last one stopped.
    loader(path, [13, 14])
    decoded.clear()
    loader(path, [15, 16])
    assert len(decoded) <= 3


def clip_numbers(clip: np.ndarray, reference: list) -> list:
    """The frame (1-based, of `reference` [T, H, W, 3] uint8) nearest each step of a clip."""
    numbers = []
    for t in range(clip.shape[1]):
        frame = np.round(clip[:, t].transpose(1, 2, 0) * 255)
        numbers.append(1 + int(np.argmin([np.abs(frame - r).mean() for r in reference])))
    return numbers


@pytest.fixture
def video_tree(videos, tmp_path):
    """VIDEO_PATH/<label>/<video>.<ext> and an annotation json for them."""
    root = tmp_path / 'videos'
    (root / 'ClassA').mkdir(parents=True)
    for name in ('v_h264.mp4', 'v_mpeg4.avi'):
        (root / 'ClassA' / name).write_bytes((videos / 'ClassA' / name).read_bytes())
    database = {
        'v_h264': {'subset': 'training', 'annotations': {'label': 'ClassA', 'segment': [1, 31]}},
        'v_mpeg4': {'subset': 'training', 'annotations': {'label': 'ClassA', 'segment': [1, 28]}},
        'v_gone': {'subset': 'training', 'annotations': {'label': 'ClassA', 'segment': [1, 9]}},
        'elsewhere': {'subset': 'validation', 'video_path': str(videos / 'ClassB' / 'v_rot.mp4'),
                      'annotations': {'label': 'ClassB', 'segment': [1, 13]}},
    }
    annotation = tmp_path / 'ann.json'
    annotation.write_text(json.dumps({'labels': ['ClassA', 'ClassB'], 'database': database}))
    return root, annotation


def training(root, annotation, n=4, strict=False):
    return get_training_data(root, annotation, 'ucf101', 'rgb', 'video', Compose([ToTensor()]),
                             TemporalBeginCrop(n), strict_data=strict)


def test_datasets_read_video_files_by_label_and_id(video_tree, videos):
    root, annotation = video_tree
    with pytest.warns(UserWarning, match=r'1 of 3 training videos have no video file and are '
                                         r'skipped \(first: .*ClassA/v_gone'):
        data = training(root, annotation)
    assert [s['video_id'] for s in data.data] == ['v_h264', 'v_mpeg4']
    assert [s['video'].name for s in data.data] == ['v_h264.mp4', 'v_mpeg4.avi']
    clip, label = data[1]
    # generate_video_jpgs' default size: shorter side 240
    assert clip.shape == (3, 4, 240, 320) and label == 0
    reference = [np.asarray(f) for f in VideoLoaderPyAV(240)(root / 'ClassA' / 'v_mpeg4.avi',
                                                             list(range(1, 28)))]
    assert clip_numbers(clip, reference) == [1, 2, 3, 4]

    data, _ = get_inference_data(root, annotation, 'ucf101', 'rgb', 'video', 'val',
                                 Compose([ToTensor()]), SlidingWindow(5, 5))
    clips, targets = data[0]
    assert targets == [['elsewhere', [1, 6]], ['elsewhere', [6, 11]], ['elsewhere', [11, 13]]]
    assert clips[0].shape == (3, 5, 320, 240)  # the rotated video, upright


def truncate_before_packet(path: Path, k: int) -> None:
    """Cut a video file where its k-th video packet (1-based, in file order) begins."""
    import av
    with av.open(str(path)) as container:
        positions = [p.pos for p in container.demux(container.streams.video[0]) if p.size]
    path.write_bytes(path.read_bytes()[:positions[k - 1]])


def test_truncated_video_frames_are_replaced_by_the_nearest_readable(video_tree):
    root, annotation = video_tree
    path = root / 'ClassA' / 'v_mpeg4.avi'  # 27 frames, no B-frames: packet k is frame k
    reference = [np.asarray(f) for f in VideoLoaderPyAV(240)(path, list(range(1, 28)))]
    truncate_before_packet(path, 12)  # frames 1..11 are left
    data = get_training_data(root, annotation, 'ucf101', 'rgb', 'video', Compose([ToTensor()]),
                             lambda indices: indices[-4:])  # the last 4 frames: gone
    with pytest.warns(UserWarning, match=r'video v_mpeg4: bad frames replaced by the nearest '
                                         r'readable frame \(4 in this clip\): frame 24 of '
                                         r'.*v_mpeg4.avi is missing: the video has 11 '
                                         r'frames'):
        clip, _ = data[1]
    assert clip_numbers(clip, reference) == [11] * 4
    assert data.bad_frames.take() == (4, 0)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # warned once per video
        data[1]
    assert data.bad_frames.take() == (4, 0)

    strict = training(root, annotation, strict=True)
    strict.temporal_transform = lambda indices: indices[-4:]
    with pytest.raises(UserError, match=r'frame 24 of .*v_mpeg4.avi is missing'):
        strict[1]


def test_unreadable_video_gives_way_to_the_next(video_tree):
    root, annotation = video_tree
    (root / 'ClassA' / 'v_h264.mp4').write_bytes(b'not a video at all' * 100)
    data = training(root, annotation)
    with pytest.warns(UserWarning, match=r'video v_h264 is skipped, the next video takes its '
                                         r'place: no readable frame in .*v_h264.mp4 \(cannot '
                                         r'read video .*v_h264.mp4: cannot open: '):
        clip, label = data[0]
    assert clip.shape == (3, 4, 240, 320)  # v_mpeg4's clip
    assert data.bad_frames.take() == (0, 1)
    strict = training(root, annotation, strict=True)
    with pytest.raises(UserError, match=r'cannot read video .*v_h264.mp4: cannot open'):
        strict[0]


def test_main_trains_on_video_files_to_the_top1_of_their_frames(tmp_path):
    """The motion task (a bar moving up or down) as .avi files, and as the frames
    generate_video_jpgs writes of them: main.py trains and infers on each, with the same options
    and seed, to the same top-1 (--file_type video against jpg)."""
    rng = np.random.default_rng(0)
    database = {}
    for label, direction in (('up', -1), ('down', 1)):
        for subset, count in (('training', 16), ('validation', 8)):
            for i in range(count):
                video_id = f'v_{label}_{subset[0]}{i:02d}'
                frames = np.stack([np.asarray(f) for f in bar_video(direction, 16, 32, rng)])
                encode(frames, tmp_path / 'avi' / label / f'{video_id}.avi', MPEG4)
                database[video_id] = {'subset': subset, 'annotations': {
                    'label': label, 'segment': [1, 17]}}
    annotation = tmp_path / 'motion.json'
    annotation.write_text(json.dumps({'labels': ['up', 'down'], 'database': database}))
    generate_video_jpgs.main([str(tmp_path / 'avi'), str(tmp_path / 'jpg'), 'ucf101'])
    top1 = {}
    for file_type, folder in (('video', 'avi'), ('jpg', 'jpg')):
        result = tmp_path / file_type
        main.main(['--video_path', str(tmp_path / folder), '--file_type', file_type,
                   '--annotation_path', str(annotation), '--result_path', str(result),
                   '--dataset', 'ucf101', '--n_classes', '2', '--model_depth', '10',
                   '--sample_size', '32', '--sample_duration', '8', '--batch_size', '8',
                   '--learning_rate', '0.01', '--multistep_milestones', '100', '--n_epochs', '6',
                   '--n_threads', '0', '--no_val', '--inference', '--inference_stride', '8',
                   '--output_topk', '0'])
        losses = [float(row['loss']) for row in read_log(result / 'train.log')]
        assert losses[-1] < losses[0], file_type
        top1[file_type] = eval_accuracy.main([str(annotation), str(result / 'val.json')])
    assert top1['jpg'] >= 0.8  # learnt (chance 0.5): the equality says something
    assert top1['video'] == top1['jpg']
