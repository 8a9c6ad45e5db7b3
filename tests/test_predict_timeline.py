"""predict_video's streamed sliding windows and --timeline, with a stand-in model (a fixed linear
map of the clip): no training, so the frame and window arithmetic is what is tested here. The
trained demo model's timeline is checked against main.py in test_export_predict.py."""
import argparse
import json
import subprocess
import sys
import weakref

import numpy as np
import pytest
from PIL import Image

import inference
from conftest import ROOT
from spatial_transforms import CenterCrop, Compose, Resize, get_spatial_transform
from temporal_transforms import SlidingWindow, get_temporal_transform
from util_scripts import predict_video
from util_scripts.utils import find_ffmpeg
from utils import UserError

CLASSES = ['left', 'right', 'still']
INFO = {'input_type': 'rgb', 'class_names': CLASSES, 'sample_size': 16, 'sample_duration': 8,
        'sample_t_stride': 2, 'inference_stride': 4, 'value_scale': 1,
        'mean': [0.4345, 0.4051, 0.3775], 'std': [0.2768, 0.2713, 0.2737]}
N_FRAMES = 300
FPS = 12.5  # not a whole number: times must not be rounded to frames or seconds


def linear_logits(clips):
    """Logits of a stand-in model: a fixed random projection of each clip [C, T, H, W]."""
    weights = np.random.default_rng(0).normal(size=[clips[0].size, len(CLASSES)])
    return clips.reshape(len(clips), -1).astype(np.float64) @ weights / 50


@pytest.fixture(scope='module')
def long_video(tmp_path_factory):
    """A 300-frame 64x48 video at 12.5 fps whose content changes every frame (ffmpeg testsrc)."""
    path = tmp_path_factory.mktemp('video') / 'long.avi'
    subprocess.run([find_ffmpeg(), '-v', 'error', '-f', 'lavfi', '-i',
                    f'testsrc=size=64x48:rate={FPS}', '-frames:v', str(N_FRAMES), '-c:v', 'mjpeg',
                    '-q:v', '3', str(path)], check=True)
    return path


@pytest.fixture(scope='module')
def frame_folder(long_video):
    """The video's first 40 frames as a frame folder (image_00001.jpg ...)."""
    folder = long_video.parent / 'frames'
    folder.mkdir()
    for index, frame in enumerate(predict_video.decode_video(long_video), start=1):
        if index > 40:
            break
        frame.save(folder / f'image_{index:05d}.jpg')
    return folder


# --- the windows of a stream ---------------------------------------------------------------------

def transform_windows(n_frames, size, stride, t_stride):
    """The clips of frame numbers main.py --inference takes from a video of n frames."""
    opt = argparse.Namespace(sample_t_stride=t_stride)
    return get_temporal_transform(opt, SlidingWindow(size, stride))(list(range(1, n_frames + 1)))


def frame_number(k):
    return np.full([1, 1], k)  # a "frame array" [C=1, 1] holding its own number


@pytest.mark.parametrize('size, stride, t_stride', [
    (8, 4, 1), (8, 4, 2), (8, 8, 1), (8, 0, 3), (4, 3, 2), (1, 1, 1), (3, 5, 2), (16, 1, 1)])
def test_streamed_windows_are_those_of_the_temporal_transform(size, stride, t_stride):
    for n_frames in range(0, 45):
        expected = transform_windows(n_frames, size, stride, t_stride)
        streamed = list(predict_video.sliding_windows(iter(range(1, n_frames + 1)), frame_number,
                                                      size, stride or size, t_stride))
        assert [clip[0, :, 0].tolist() for _, clip in streamed] == expected, n_frames
        # main.py's segments: [first, last + 1] of the clip's frames
        assert [s for s, _ in streamed] == [[min(c), max(c) + 1] for c in expected], n_frames


class Frame:
    """A decoded frame that counts how many frames are alive."""
    alive = 0

    def __init__(self, k):
        self.k = k
        Frame.alive += 1
        weakref.finalize(self, Frame.died)

    @staticmethod
    def died():
        Frame.alive -= 1


def test_a_long_stream_holds_a_bounded_number_of_frames():
    """However long the video, only the frames of the next windows are kept: the most alive at
    once is a clip's worth, not the video's 2000."""
    size, stride, t_stride = 8, 4, 2
    arrays_alive, most = [0], {'frames': 0, 'arrays': 0}

    def to_array(frame):
        array = np.full([1, 1], frame.k)
        arrays_alive[0] += 1
        weakref.finalize(array, lambda: arrays_alive.__setitem__(0, arrays_alive[0] - 1))
        return array

    def frames():
        for k in range(1, 2001):
            yield Frame(k)
            most['frames'] = max(most['frames'], Frame.alive)
            most['arrays'] = max(most['arrays'], arrays_alive[0])

    n_windows = 0
    for _, clip in predict_video.sliding_windows(frames(), to_array, size, stride, t_stride):
        n_windows += 1
        del clip
    assert n_windows == len(transform_windows(2000, size, stride, t_stride)) == 250
    assert most['frames'] <= 2  # the one being converted, and the generator's next
    assert 0 < most['arrays'] <= size + t_stride


# --- scores: streamed vs all frames in memory ----------------------------------------------------

def all_in_memory_scores(frames, info, logits):
    """What predict_video computed before it streamed: every frame cropped and kept, the temporal
    transform run on the frame list, each clip built and softmaxed, the softmax averaged."""
    opt = argparse.Namespace(input_type='rgb', value_scale=info['value_scale'], mean=info['mean'],
                             std=info['std'], no_mean_norm=False, no_std_norm=False,
                             sample_t_stride=info['sample_t_stride'])
    crop = Compose([Resize(info['sample_size']), CenterCrop(info['sample_size'])])
    to_array = get_spatial_transform(opt, [])
    frames = [crop(frame) for frame in frames]
    clips = transform_windows(len(frames), info['sample_duration'], info['inference_stride'],
                              info['sample_t_stride'])
    scores = np.concatenate([
        inference.softmax(logits(np.stack([np.stack([to_array(frames[i - 1]) for i in clip], 1)])))
        for clip in clips])
    return scores.mean(axis=0), scores, [[min(c), max(c) + 1] for c in clips]


@pytest.mark.parametrize('batch_size', [1, 3, 64])
def test_a_streamed_video_scores_as_all_its_frames_in_memory(long_video, batch_size):
    expected_mean, expected_windows, segments = all_in_memory_scores(
        list(predict_video.decode_video(long_video)), INFO, linear_logits)
    assert len(segments) == 38 and expected_windows.std(axis=0).min() > 1e-3  # windows differ
    classify = predict_video.VideoClassifier(INFO, linear_logits, batch_size)
    prediction = classify(long_video, keep_windows=True)
    assert prediction.n_clips == 38
    assert prediction.segments == segments
    np.testing.assert_allclose(prediction.window_scores, expected_windows, rtol=1e-6)
    np.testing.assert_allclose(prediction.scores, expected_mean, rtol=1e-6)
    assert classify(long_video).window_scores is None  # kept only when asked


def test_a_frame_folder_scores_as_all_its_frames_in_memory(frame_folder):
    frames = [Image.open(p).convert('RGB') for p in sorted(frame_folder.glob('image_*.jpg'))]
    expected_mean, expected_windows, _ = all_in_memory_scores(frames, INFO, linear_logits)
    prediction = predict_video.VideoClassifier(INFO, linear_logits, 4)(frame_folder, True)
    np.testing.assert_allclose(prediction.window_scores, expected_windows, rtol=1e-6)
    np.testing.assert_allclose(prediction.scores, expected_mean, rtol=1e-6)


# --- the command line ----------------------------------------------------------------------------

@pytest.fixture
def stand_in_model(monkeypatch, tmp_path):
    """--model FOLDER loads the stand-in model."""
    monkeypatch.setattr(predict_video, 'load_exported',
                        lambda folder, use_gpu: (INFO, linear_logits))
    folder = tmp_path / 'model'
    folder.mkdir()
    return folder


def run(tmp_path, model, *args):
    output = tmp_path / 'pred.json'
    predict_video.main([*map(str, args), '--model', str(model), '--output', str(output)])
    return json.loads(output.read_text())


def test_timeline_times_of_a_video_at_its_frame_rate(long_video, stand_in_model, tmp_path):
    written = run(tmp_path, stand_in_model, long_video, '--timeline', '--topk', '2')
    assert set(written) == {'results', 'timeline'}
    timeline = written['timeline']['long']
    assert timeline['fps'] == FPS
    windows = timeline['windows']
    # windows of 8 frames every 2 x 4 = 8 frames: [1, 9), [9, 17), ..., [289, 297); the last
    # starts at 297 and is cut at 299, the last frame of the every-2nd subsampling
    assert len(windows) == 38
    assert windows[0]['segment'] == [1, 9] and windows[1]['segment'] == [9, 17]
    assert windows[-1]['segment'] == [297, 300]
    assert (windows[0]['start'], windows[0]['end']) == pytest.approx((0, 8 / 12.5))
    assert (windows[1]['start'], windows[1]['end']) == pytest.approx((0.64, 1.28))
    assert (windows[-1]['start'], windows[-1]['end']) == pytest.approx((23.68, 23.92))
    assert all(len(w['result']) == 2 for w in windows)
    # the averaged results stay what they were: the mean of the windows' scores
    _, expected_windows, _ = all_in_memory_scores(
        list(predict_video.decode_video(long_video)), INFO, linear_logits)
    top = written['results']['long'][0]
    assert top['score'] == pytest.approx(expected_windows[:, CLASSES.index(top['label'])].mean())
    best = [CLASSES[i] for i in expected_windows[0].argsort()[::-1][:2]]
    assert [r['label'] for r in windows[0]['result']] == best


def test_a_frame_folder_has_no_rate_unless_given(frame_folder, stand_in_model, tmp_path):
    windows = run(tmp_path, stand_in_model, frame_folder, '--timeline')['timeline']['frames']
    assert windows['fps'] is None
    assert [(w['segment'], w['start'], w['end']) for w in windows['windows']] == [
        ([1, 9], None, None), ([9, 17], None, None), ([17, 25], None, None),
        ([25, 33], None, None), ([33, 40], None, None)]  # 40 frames: the last cut at 39
    timeline = run(tmp_path, stand_in_model, frame_folder, '--timeline',
                   '--fps', '4')['timeline']['frames']
    assert timeline['fps'] == 4
    assert [(w['start'], w['end']) for w in timeline['windows']] == [
        (0, 2), (2, 4), (4, 6), (6, 8), (8, 9.75)]


def test_timeline_png_is_drawn(long_video, frame_folder, stand_in_model, tmp_path, capsys):
    pytest.importorskip('matplotlib', reason='matplotlib is an optional extra')
    png = tmp_path / 'plots' / 'timeline.png'
    written = run(tmp_path, stand_in_model, long_video, frame_folder, '--timeline_png', png)
    assert 'timeline' not in written  # the png alone does not change the json
    assert f'timeline of 2 videos -> {png}' in capsys.readouterr().out
    with Image.open(png) as image:
        assert image.format == 'PNG'
        width, height = image.size
        pixels = np.asarray(image.convert('RGB'))
    assert width > 500 and height > width / 2  # two panels stacked
    colours = set(map(tuple, np.unique(pixels.reshape(-1, 3), axis=0)))
    assert (31, 119, 180) in colours and (255, 127, 14) in colours  # lines of 2 classes drawn


def test_timeline_png_without_matplotlib_ends_in_one_line_before_any_work(
        long_video, monkeypatch, tmp_path):
    def no_model(*args):
        raise AssertionError('the model was loaded before matplotlib was checked')
    monkeypatch.setattr(predict_video, 'load_exported', no_model)
    monkeypatch.setitem(sys.modules, 'matplotlib', None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, 'matplotlib.figure', None)
    with pytest.raises(UserError, match='pip install matplotlib'):
        predict_video.main([str(long_video), '--model', str(tmp_path),
                            '--timeline_png', str(tmp_path / 't.png')])


def test_timeline_needs_an_output_json(long_video, tmp_path):
    result = subprocess.run([sys.executable, '-m', 'util_scripts.predict_video', str(long_video),
                             '--model', str(tmp_path), '--timeline'],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert 'error: --timeline writes into the --output json: pass --output' in result.stderr


def test_header_rate_is_read_from_the_video(long_video):
    assert predict_video.frame_rate(long_video, None) == FPS
    assert predict_video.frame_rate(long_video, 30.0) == 30.0
    assert predict_video.frame_rate(long_video.parent, None) is None

