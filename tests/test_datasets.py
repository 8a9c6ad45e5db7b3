"""VideoDataset / VideoDatasetMultiClips on tiny folder trees."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import get_inference_data, get_training_data, get_validation_data
from datasets.videodataset_multiclips import collate_fn
from spatial_transforms import Compose, ToTensor
from temporal_transforms import SlidingWindow, TemporalBeginCrop, TemporalEvenCrop
from utils import UserError


def write_video(folder, n_frames, size=(6, 4)):
    """Frames whose pixel value is the frame number, so loaded clips can be read back."""
    folder.mkdir(parents=True)
    for i in range(1, n_frames + 1):
        Image.new('RGB', size, (i * 10,) * 3).save(folder / f'image_{i:05d}.jpg', quality=100)


def frame_numbers(clip):
    """[C, T, H, W] clip of constant frames -> the frame number of each time step."""
    return [int(round(v * 255 / 10)) for v in clip[0, :, 0, 0]]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / 'jpg'
    write_video(root / 'a' / 'long', 10)
    write_video(root / 'b' / 'short', 3)
    (root / 'b' / 'empty').mkdir()
    database = {
        'long': {'subset': 'training', 'annotations': {'label': 'a', 'segment': [1, 11]}},
        'short': {'subset': 'training', 'annotations': {'label': 'b', 'segment': [1, 4]}},
        'gone': {'subset': 'training', 'annotations': {'label': 'a', 'segment': [1, 9]}},
        'empty': {'subset': 'training', 'annotations': {'label': 'b', 'segment': [1, 1]}},
        'val1': {'subset': 'validation', 'annotations': {'label': 'b', 'segment': [1, 11]},
                 'video_path': str(root / 'a' / 'long')},
    }
    annotation = tmp_path / 'ann.json'
    annotation.write_text(json.dumps({'labels': ['a', 'b'], 'database': database}))
    return root, annotation


def training_data(root, annotation, size=4):
    return get_training_data(root, annotation, 'ucf101', 'rgb', 'jpg', Compose([ToTensor()]),
                             TemporalBeginCrop(size))


def test_missing_and_empty_videos_are_skipped_with_one_warning(tree):
    with pytest.warns(UserWarning) as record:
        data = training_data(*tree)
    assert [s['video_id'] for s in data.data] == ['long', 'short']
    messages = [str(w.message) for w in record]
    assert any('1 of 4 training videos have no frame folder' in m for m in messages)
    assert any('1 training videos have no frames' in m for m in messages)


def test_clip_layout_labels_and_frames(tree):
    data = training_data(*tree)
    clip, label = data[0]
    assert clip.shape == (3, 4, 4, 6) and clip.dtype == np.float32  # [C, T, H, W]
    assert label == 0
    assert frame_numbers(clip) == [1, 2, 3, 4]


def test_short_video_is_padded_by_looping(tree):
    clip, label = training_data(*tree)[1]
    assert label == 1
    assert frame_numbers(clip) == [1, 2, 3, 1]


def test_missing_frame_is_replaced_by_the_nearest_readable_one(tree):
    root, annotation = tree
    (root / 'a' / 'long' / 'image_00002.jpg').unlink()
    data = training_data(root, annotation)
    with pytest.warns(UserWarning, match=r'video long: .*\(1 in this clip\): frame .*'
                                         r'image_00002.jpg is missing'):
        clip, _ = data[0]
    assert frame_numbers(clip) == [1, 1, 3, 4]  # a tie between 1 and 3 goes to the earlier
    assert data.bad_frames.take() == (1, 0)
    assert data.bad_frames.take() == (0, 0)


def test_bad_frames_are_warned_once_per_video_and_counted_every_time(tree):
    root, annotation = tree
    for i in (1, 2, 3, 4):
        (root / 'a' / 'long' / f'image_{i:05d}.jpg').write_bytes(b'not a jpeg')
    data = training_data(root, annotation)
    with pytest.warns(UserWarning) as record:
        clips = [data[0][0], data[0][0]]
    messages = [str(w.message) for w in record]
    assert len(messages) == 1
    assert 'image_00001.jpg: not an image, or corrupt' in messages[0]
    assert 'and 1 more' in messages[0]  # 3 of the 4 bad frames are named
    for clip in clips:  # frames 1..4 unreadable: frame 5 is the nearest readable for all
        assert frame_numbers(clip) == [5, 5, 5, 5]
    assert data.bad_frames.take() == (8, 0)


def test_video_without_readable_frames_gives_way_to_the_next(tree):
    root, annotation = tree
    for frame in (root / 'a' / 'long').iterdir():
        frame.write_bytes(b'')
    data = training_data(root, annotation)
    with pytest.warns(UserWarning, match='video long is skipped, the next video takes its place: '
                                         'no readable frame in .*long'):
        clip, label = data[0]
    assert label == 1 and frame_numbers(clip) == [1, 2, 3, 1]  # the sample of video 'short'
    assert data.bad_frames.take() == (0, 1)


def test_strict_data_stops_at_the_first_bad_frame(tree):
    root, annotation = tree
    (root / 'a' / 'long' / 'image_00003.jpg').write_bytes(b'not a jpeg')
    (root / 'a' / 'long' / 'image_00004.jpg').unlink()
    data = get_training_data(root, annotation, 'ucf101', 'rgb', 'jpg', Compose([ToTensor()]),
                             TemporalBeginCrop(4), strict_data=True)
    with pytest.raises(UserError, match=r'cannot read frame .*long/image_00003.jpg: not an image'):
        data[0]
    (root / 'a' / 'long' / 'image_00003.jpg').unlink()
    with pytest.raises(UserError, match=r'frame .*long/image_00003.jpg is missing'):
        data[0]


def test_video_path_override_and_multiclip_collate(tree):
    root, annotation = tree
    data, collate = get_validation_data(root, annotation, 'ucf101', 'rgb', 'jpg',
                                        Compose([ToTensor()]), TemporalEvenCrop(4, 3))
    clips, targets = data[0]
    assert [frame_numbers(c) for c in clips] == [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]]
    assert targets == [1, 1, 1]
    batch, labels = collate([data[0], data[0]])
    assert batch.shape == (6, 3, 4, 4, 6)
    assert labels.dtype == np.int64 and labels.tolist() == [1] * 6


def test_inference_targets_carry_video_id_and_segment(tree):
    root, annotation = tree
    data, _ = get_inference_data(root, annotation, 'ucf101', 'rgb', 'jpg', 'val',
                                 Compose([ToTensor()]), SlidingWindow(4, 4))
    clips, targets = data[0]
    assert len(clips) == 3
    assert targets == [['val1', [1, 5]], ['val1', [5, 9]], ['val1', [9, 11]]]
    batch, collated = collate_fn([(clips, targets)])
    assert batch.shape[0] == 3 and collated == targets


def test_annotation_without_label_is_an_error_naming_the_video(tree):
    root, annotation = tree
    data = json.loads(annotation.read_text())
    del data['database']['long']['annotations']['label']
    annotation.write_text(json.dumps(data))
    with pytest.raises(UserError, match='video long of subset .training. has no label'):
        training_data(root, annotation)


def test_unknown_label_is_an_error(tree):
    root, annotation = tree
    data = json.loads(annotation.read_text())
    data['database']['long']['annotations']['label'] = 'zebra'
    annotation.write_text(json.dumps(data))
    with pytest.raises(UserError, match="label 'zebra'"):
        training_data(root, annotation)


def test_empty_subset_and_missing_annotation_are_errors(tree, tmp_path):
    root, annotation = tree
    with pytest.raises(UserError, match='no usable testing videos'):
        get_inference_data(root, annotation, 'ucf101', 'rgb', 'jpg', 'test')
    with pytest.raises(UserError, match='annotation file not found'):
        training_data(root, tmp_path / 'nope.json')
    bad = tmp_path / 'bad.json'
    bad.write_text('{')
    with pytest.raises(UserError, match='not valid json'):
        training_data(root, bad)


# Compact records (Kinetics-size annotations) ------------------------------------------------

def expected_samples(annotation, root, subset):
    """What the dataset held before its records were compact: json.load, then one dict with a
    list of frame numbers per video that has a folder and frames, in json order."""
    data = json.loads(annotation.read_text())
    samples = []
    for video_id, value in data['database'].items():
        if value['subset'] != subset:
            continue
        ann = value['annotations']
        path = (Path(value['video_path']) if 'video_path' in value
                else root / ann.get('label', 'test') / video_id)
        if not path.exists() or ann['segment'][1] <= ann['segment'][0]:
            continue
        samples.append({'video': path, 'segment': ann['segment'],
                        'frame_indices': list(range(*ann['segment'])), 'video_id': video_id,
                        'label': data['labels'].index(ann['label']) if 'label' in ann else -1})
    return samples


@pytest.fixture
def many(tmp_path):
    """Folders of 60 videos in 5 classes, oddly formatted json (whitespace, unicode ids, labels
    after the database, other keys), some videos missing or empty, one with its own path."""
    root = tmp_path / 'jpg'
    labels = ['jump', 'run ', 'sit', 'ünïcode', 'x' * 40]
    database = {}
    for i in range(60):
        label = labels[i % 5]
        video_id = f'vid_{i:03d}_{"é" * (i % 3)}'
        subset = ('training', 'validation', 'testing')[i % 3]
        n = 1 + (i * 7) % 23
        ann = {'segment': [1, n + 1] if i % 11 else [1, 1]}
        if subset != 'testing' or i % 2:
            ann['label'] = label
        database[video_id] = {'subset': subset, 'annotations': ann, 'extra': [1, {'a': None}]}
        if i % 13:
            (root / ann.get('label', 'test') / video_id).mkdir(parents=True)
    (tmp_path / 'own').mkdir()
    database['vid_005_éé']['video_path'] = str(tmp_path / 'own')
    text = json.dumps({'version': 1.5, 'database': database, 'labels': labels}, indent=3,
                      ensure_ascii=bool(len(database) % 2))
    annotation = tmp_path / 'many.json'
    annotation.write_text(text, encoding='utf-8')
    return root, annotation


@pytest.mark.parametrize('chunk', [None, 5])
def test_records_give_the_samples_of_a_full_json_load(many, monkeypatch, chunk):
    from datasets.annotation import JsonStream
    if chunk:  # buffer boundaries inside every token
        monkeypatch.setattr(JsonStream, 'CHUNK', chunk)
        monkeypatch.setattr(JsonStream, 'MARGIN', 2)
    root, annotation = many
    for subset, get in (('training', lambda: get_training_data(root, annotation, 'kinetics',
                                                               'rgb', 'jpg')),
                        ('validation', lambda: get_validation_data(root, annotation, 'kinetics',
                                                                   'rgb', 'jpg')[0]),
                        ('testing', lambda: get_inference_data(root, annotation, 'kinetics',
                                                               'rgb', 'jpg', 'test')[0])):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            data = get()
        expected = expected_samples(annotation, root, subset)
        assert len(expected) > 5
        assert list(data.data) == expected
        assert data.class_names == {0: 'jump', 1: 'run ', 2: 'sit', 3: 'ünïcode', 4: 'x' * 40}
        assert [data.data.frame_indices(i) for i in range(len(data))] == [
            s['frame_indices'] for s in expected]


def test_records_are_arrays_not_lists(many):
    root, annotation = many
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        data = get_training_data(root, annotation, 'kinetics', 'rgb', 'jpg')
    assert isinstance(data.data.starts, np.ndarray) and isinstance(data.data.ends, np.ndarray)
    assert data.data.starts.dtype == np.int32 and data.data.labels.dtype == np.int32


@pytest.mark.parametrize('text, message', [
    ('{"labels": ["a"], "database": {"v": {"subset": "training", "annotations": {"label": "a", '
     '"segment": [1, 3]}}',  # cut short: the error is at its end, char 108
     r'not valid json: expecting .,. or .}. \(char 108\)'),
    ('{"labels": ["a"], "database": {"v": {"subset": "training" "annotations": {}}}}',
     r'not valid json: Expecting .,. delimiter'),
    ('{"labels": ["a"], "database": {}} []', 'not valid json: extra data'),
    ('[1, 2]', 'has no "labels" and "database"'),
    ('{"database": {}}', 'has no "labels" and "database"'),
    ('{"labels": ["a"], "database": {"v": {"subset": "training", "annotations": '
     '[{"label": "a", "segment": [0.5, 3.2]}]}}}',
     r'video v has a list of "annotations" \(ActivityNet.s untrimmed format'),
    ('{"labels": ["a"], "database": {"v": {"subset": "training", "annotations": {"label": "a", '
     '"segment": "all"}}}}', r'video v has a "segment" that is not \[first, last \+ 1\]'),
])
def test_annotation_errors_name_the_file(tmp_path, text, message):
    annotation = tmp_path / 'bad.json'
    annotation.write_text(text)
    (tmp_path / 'jpg' / 'a' / 'v').mkdir(parents=True)
    with pytest.raises(UserError, match=message):
        get_training_data(tmp_path / 'jpg', annotation, 'ucf101', 'rgb', 'jpg')


def test_dataset_name_is_checked(tree):
    root, annotation = tree
    with pytest.raises(UserError, match="unknown dataset 'ucf': one of kinetics, activitynet, "
                                        "ucf101, hmdb51, mit"):
        get_training_data(root, annotation, 'ucf', 'rgb', 'jpg')
    with pytest.raises(UserError, match="unknown --file_type 'png': one of jpg, hdf5, video"):
        get_training_data(root, annotation, 'ucf101', 'rgb', 'png')
    with pytest.raises(UserError, match='--input_type flow needs --file_type hdf5'):
        get_training_data(root, annotation, 'ucf101', 'flow', 'jpg')


def test_unlabelled_test_videos_are_looked_for_in_the_test_folder(tmp_path):
    """Where the annotation scripts and generate_video_jpgs put Kinetics' test set."""
    root = tmp_path / 'jpg'
    write_video(root / 'test' / 'xyz', 5)
    annotation = tmp_path / 'a.json'
    annotation.write_text(json.dumps({'labels': ['a'], 'database': {
        'xyz': {'subset': 'testing', 'annotations': {'segment': [1, 6]}}}}))
    data, _ = get_inference_data(root, annotation, 'kinetics', 'rgb', 'jpg', 'test',
                                 Compose([ToTensor()]), SlidingWindow(4, 4))
    clips, targets = data[0]
    assert targets == [['xyz', [1, 5]], ['xyz', [5, 6]]]
    assert [frame_numbers(c) for c in clips] == [[1, 2, 3, 4], [5, 5, 5, 5]]
