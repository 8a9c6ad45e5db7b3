"""--dataset activitynet: ActivityNet's json (taxonomy, segments in seconds, fps), a sample per
segment in training and validation, a sample per whole video in inference; main.py end to end."""
import copy
import io
import json
import subprocess
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import read_log
import main
from datasets import get_inference_data, get_training_data, get_validation_data
from datasets.activitynet import count_frames
from spatial_transforms import Compose, ToTensor
from temporal_transforms import SlidingWindow, TemporalBeginCrop, TemporalEvenCrop
from utils import UserError

# Leaves in taxonomy order: Cooking, Running, Jumping (Root and Sports are parents).
TAXONOMY = [
    {'nodeId': 0, 'parentId': None, 'nodeName': 'Root'},
    {'nodeId': 4, 'parentId': 0, 'nodeName': 'Cooking'},
    {'nodeId': 1, 'parentId': 0, 'nodeName': 'Sports'},
    {'nodeId': 2, 'parentId': 1, 'nodeName': 'Running'},
    {'nodeId': 3, 'parentId': 1, 'nodeName': 'Jumping'},
]
CLASSES = {0: 'Cooking', 1: 'Running', 2: 'Jumping'}
DATABASE = {
    'aaa': {'subset': 'training', 'duration': 4.0, 'fps': 10, 'annotations': [
        {'label': 'Running', 'segment': [0.0, 1.5]},     # frames 1..15
        {'label': 'Jumping', 'segment': [2.05, 3.99]},   # 21..39: the end cut at frame 40
        {'label': 'Cooking', 'segment': [3.5, 3.9]}]},   # 36..39: 4 frames, skipped
    'bbb': {'subset': 'training', 'duration': 2.4, 'fps': 12.5, 'annotations': [
        {'label': 'Cooking', 'segment': [0.4, 10.0]}]},  # 6..29: past the video's end
    'ccc': {'subset': 'training', 'duration': 5.0, 'annotations': [  # no frames, no fps
        {'label': 'Running', 'segment': [0.0, 5.0]}]},
    'ddd': {'subset': 'validation', 'duration': 2.4, 'fps': 10, 'annotations': [
        {'label': 'Running', 'segment': [0.0, 2.0]}]},   # 1..20
    'eee': {'subset': 'validation', 'duration': 2.0, 'fps': 10, 'annotations': [
        {'label': 'Jumping', 'segment': [0.5, 1.9]}]},   # 6..19
    'fff': {'subset': 'testing', 'duration': 1.6, 'fps': 10, 'annotations': []},
}
# frames on disk; eee's folder has no v_ prefix (a video saved under its bare id)
FOLDERS = {'v_aaa': 40, 'v_bbb': 30, 'v_ddd': 24, 'eee': 20, 'v_fff': 16}


def frame_image(k: int, size=(36, 32)) -> Image.Image:
    """Frame k: grey level 6k, so a loaded clip tells its frame numbers."""
    return Image.new('RGB', size, (6 * k,) * 3)


def frame_numbers(clip) -> list:
    """[C, T, H, W] clip of ToTensor'd frame_image frames -> their frame numbers."""
    return [int(round(v * 255 / 6)) for v in np.asarray(clip)[0, :, 0, 0]]


def write_json(path, database=DATABASE, **top):
    path.write_text(json.dumps({'version': 'VERSION 1.3', 'taxonomy': TAXONOMY,
                                'database': database, **top}))
    return path


@pytest.fixture(scope='module')
def anet(tmp_path_factory):
    """(frame folder root, annotation json) of the small ActivityNet above."""
    root = tmp_path_factory.mktemp('anet')
    for name, n in FOLDERS.items():
        folder = root / 'jpg' / name
        folder.mkdir(parents=True)
        for k in range(1, n + 1):
            frame_image(k).save(folder / f'image_{k:05d}.jpg', quality=100)
    return root / 'jpg', write_json(root / 'activity_net.v1-3.min.json')


def quiet(make, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return make(*args, **kwargs)


def rows(data):
    return [(data.data.video_id(i), data.data.segment(i), data.data.label(i))
            for i in range(len(data))]


def test_training_samples_are_the_segments_in_frames(anet):
    root, annotation = anet
    with pytest.warns(UserWarning) as record:
        data = get_training_data(root, annotation, 'activitynet', 'rgb', 'jpg',
                                 Compose([ToTensor()]), TemporalBeginCrop(8))
    assert data.class_names == CLASSES
    assert rows(data) == [('aaa', [1, 16], 1), ('aaa', [21, 40], 2), ('bbb', [6, 30], 0)]
    assert data.data[1]['frame_indices'] == list(range(21, 40))
    assert data.data.video_path(2) == root / 'v_bbb'
    messages = [str(w.message) for w in record]
    assert any(m.startswith('1 of 3 training videos have no frame folder and are skipped '
                            f'(first: {root / "v_ccc"})') for m in messages), messages
    assert '1 of 4 training segments have fewer than 8 frames and are skipped' in messages
    clip, label = data[1]
    assert clip.shape == (3, 8, 32, 36) and label == 2
    assert frame_numbers(clip) == list(range(21, 29))


def test_validation_is_several_clips_per_segment_with_its_label(anet):
    root, annotation = anet
    data, collate = quiet(get_validation_data, root, annotation, 'activitynet', 'rgb', 'jpg',
                          Compose([ToTensor()]), TemporalEvenCrop(8, 2))
    assert rows(data) == [('ddd', [1, 21], 1), ('eee', [6, 20], 2)]
    assert data.data.video_path(1) == root / 'eee'
    clips, targets = collate([data[0], data[1]])
    assert clips.shape == (4, 3, 8, 32, 36)
    assert targets.tolist() == [1, 1, 2, 2]
    # TemporalEvenCrop's starts: every ceil((n - 1 - 8) / 1)-th frame of the segment
    assert [frame_numbers(c) for c in clips] == [
        list(range(1, 9)), list(range(12, 20)), list(range(6, 14)), list(range(11, 19))]


def test_inference_is_every_frame_of_each_video_in_sliding_windows(anet):
    root, annotation = anet
    data, collate = quiet(get_inference_data, root, annotation, 'activitynet', 'rgb', 'jpg',
                          'val', Compose([ToTensor()]), SlidingWindow(8, 8))
    assert rows(data) == [('ddd', [1, 25], -1), ('eee', [1, 21], -1)]
    clips, targets = collate([data[0]])
    assert targets == [['ddd', [1, 9]], ['ddd', [9, 17]], ['ddd', [17, 25]]]
    assert frame_numbers(clips[2]) == list(range(17, 25))
    test, _ = quiet(get_inference_data, root, annotation, 'activitynet', 'rgb', 'jpg', 'test')
    assert rows(test) == [('fff', [1, 17], -1)]  # no annotations, no label needed


def test_labels_list_is_taken_over_the_taxonomy(anet, tmp_path):
    root, _ = anet
    annotation = write_json(tmp_path / 'a.json', labels=['Jumping', 'Running', 'Cooking'])
    data = quiet(get_training_data, root, annotation, 'activitynet', 'rgb', 'jpg')
    assert data.class_names == {0: 'Jumping', 1: 'Running', 2: 'Cooking'}
    assert [label for _, _, label in rows(data)] == [1, 0, 2]


def without_fps(video_id):
    database = copy.deepcopy(DATABASE)
    del database[video_id]['fps']
    return database


def trimmed():
    return {'v': {'subset': 'training', 'annotations': {'label': 'Running', 'segment': [1, 9]}}}


def with_annotation(**annotation):
    database = copy.deepcopy(DATABASE)
    database['aaa']['annotations'][0] = annotation
    return database


@pytest.mark.parametrize('database, top, message', [
    (without_fps('bbb'), {}, r'a\.json: video bbb has no "fps" \(its segments are in seconds\): '
                             r'add the frame rates with python -m '
                             r'util_scripts\.add_fps_into_activitynet_json VIDEO_DIR .*a\.json$'),
    (trimmed(), {}, r'video v has one "annotations" object \(the trimmed format.*'
                    r'read this file with --dataset kinetics'),
    (with_annotation(label='Swimming', segment=[0, 2]), {},
     r"video aaa has label 'Swimming', which is not in the leaf nodes of \"taxonomy\""),
    (with_annotation(label='Running', segment=[0]), {},
     r'video aaa has a "segment" that is not \[start, end\] in seconds: \[0\]'),
    (with_annotation(segment=[0, 1]), {}, 'video aaa of subset .training. has an annotation '
                                          'without "label"'),
    (DATABASE, {'taxonomy': None}, r'a\.json has no "taxonomy" \(whose leaf nodes are the '
                                   r'classes\) and no "labels"'),
])
def test_errors_name_the_file_and_the_video(anet, tmp_path, database, top, message):
    root, _ = anet
    annotation = write_json(tmp_path / 'a.json', database)
    if top:
        data = json.loads(annotation.read_text())
        data.update(top)
        annotation.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))
    with pytest.raises(UserError, match=message):
        quiet(get_training_data, root, annotation, 'activitynet', 'rgb', 'jpg')


def test_fps_is_not_needed_where_it_is_not_used(anet, tmp_path):
    """A video that is not on disk (add_fps_into_activitynet_json had no file to read), and
    inference, which takes all frames."""
    root, _ = anet
    annotation = write_json(tmp_path / 'a.json', without_fps('ddd'))
    data = quiet(get_training_data, root, annotation, 'activitynet', 'rgb', 'jpg')  # ccc: none
    assert len(data) == 3
    data, _ = quiet(get_inference_data, root, annotation, 'activitynet', 'rgb', 'jpg', 'val')
    assert len(data) == 2


def test_no_usable_segment_is_an_error(anet, tmp_path):
    root, _ = anet
    database = {'aaa': copy.deepcopy(DATABASE['aaa'])}
    database['aaa']['annotations'] = database['aaa']['annotations'][2:]
    annotation = write_json(tmp_path / 'a.json', database)
    with pytest.raises(UserError, match=r'no usable training samples: .*a\.json lists 1 training '
                                        r'videos, 1 of them with a frame folder under .*, with 1 '
                                        r'segments, 1 of them shorter than 8 frames'):
        quiet(get_training_data, root, annotation, 'activitynet', 'rgb', 'jpg')


def test_other_datasets_point_activitynet_json_to_activitynet(anet):
    root, annotation = anet
    with pytest.raises(UserError, match=r'a list of "annotations" .*which only --dataset '
                                        r'activitynet reads'):
        get_training_data(root, annotation, 'kinetics', 'rgb', 'jpg')


def test_hdf5_files_are_read_flat(anet, tmp_path):
    h5py = pytest.importorskip('h5py')
    _, annotation = anet
    root = tmp_path / 'hdf5'
    root.mkdir()
    for name, n in (('v_aaa', 40), ('v_bbb', 30)):
        with h5py.File(root / f'{name}.hdf5', 'w') as f:
            video = f.create_dataset('video', (n,), dtype=h5py.vlen_dtype(np.dtype('uint8')))
            for k in range(1, n + 1):
                buffer = io.BytesIO()
                frame_image(k).save(buffer, format='JPEG', quality=100)
                video[k - 1] = np.frombuffer(buffer.getvalue(), dtype='uint8')
    data = quiet(get_training_data, root, annotation, 'activitynet', 'rgb', 'hdf5',
                 Compose([ToTensor()]), TemporalBeginCrop(8))
    assert rows(data) == [('aaa', [1, 16], 1), ('aaa', [21, 40], 2), ('bbb', [6, 30], 0)]
    assert data.data.video_path(2) == root / 'v_bbb.hdf5'
    assert frame_numbers(data[2][0]) == list(range(6, 14))


def test_video_files_are_counted_from_their_header(tmp_path):
    from util_scripts.utils import find_ffmpeg
    from datasets.video_reader import count_frames as decoded_frames
    for name in ('v_a.mp4', 'v_b.mkv'):  # mp4 keeps the frame count; mkv only a duration
        subprocess.run([find_ffmpeg(), '-v', 'error', '-y', '-f', 'lavfi', '-i',
                        'testsrc=size=64x48:rate=10', '-frames:v', '23', '-c:v', 'mpeg4',
                        str(tmp_path / name)], check=True)
        assert count_frames(tmp_path / name) == decoded_frames(tmp_path / name) == 23
    annotation = write_json(tmp_path / 'a.json', {
        'a': {'subset': 'validation', 'fps': 10, 'annotations': [
            {'label': 'Cooking', 'segment': [0.3, 2.0]}]},
        'b': {'subset': 'validation', 'fps': 10, 'annotations': [
            {'label': 'Running', 'segment': [1.0, 1.9]}]}})
    data, _ = quiet(get_validation_data, tmp_path, annotation, 'activitynet', 'rgb', 'video')
    assert rows(data) == [('a', [4, 21], 0), ('b', [11, 20], 1)]
    assert data.data.video_path(1) == tmp_path / 'v_b.mkv'
    assert count_frames(tmp_path / 'missing.mp4').startswith('cannot be read')


def test_main_trains_validates_and_infers_on_activitynet(anet, tmp_path):
    root, annotation = anet
    common = ['--video_path', str(root), '--annotation_path', str(annotation),
              '--dataset', 'activitynet', '--n_classes', '3', '--model_depth', '10',
              '--resnet_widen_factor', '0.25', '--sample_size', '32', '--sample_duration', '8',
              '--batch_size', '4', '--n_val_samples', '2', '--n_threads', '0',
              '--inference_stride', '8', '--output_topk', '0', '--inference_subset', 'val']
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        main.main(common + ['--result_path', str(tmp_path / 'run'), '--n_epochs', '2',
                            '--learning_rate', '0.01', '--checkpoint', '2', '--inference'])
    val = read_log(tmp_path / 'run' / 'val.log')
    assert [r['epoch'] for r in val] == ['1', '2']
    assert all(0 <= float(r['video_acc']) <= 1 for r in val)  # 2 segments: a number, not nan
    assert len(read_log(tmp_path / 'run' / 'train.log')) == 2
    results = json.loads((tmp_path / 'run' / 'val.json').read_text())['results']
    assert sorted(results) == ['ddd', 'eee']
    for video in results.values():
        assert sorted(r['label'] for r in video) == sorted(CLASSES.values())
        assert sum(r['score'] for r in video) == pytest.approx(1, abs=1e-5)

    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        main.main(common + ['--result_path', str(tmp_path / 'windows'), '--no_train',
                            '--no_val', '--inference', '--inference_no_average'])
    results = json.loads((tmp_path / 'windows' / 'val.json').read_text())['results']
    assert [r['segment'] for r in results['ddd']] == [[1, 9], [9, 17], [17, 25]]
    assert [r['segment'] for r in results['eee']] == [[1, 9], [9, 17], [17, 21]]
