"""util_scripts.merge_json and training on its merges: two small sources of different layouts
(UCF-101-style frame folders, Kinetics-style video files) whose class names and video ids clash;
labels, paths and subsets of the merge; a model trained on it learns both sources' classes and
fine-tunes; --source_weights; bad sources refused in one line."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

import main
from conftest import ROOT, bar_video, make_motion_dataset, read_log
from datasets import get_training_data
from datasets.data_loader import SourceBatchSampler, permute
from spatial_transforms import Compose, ToTensor
from temporal_transforms import TemporalBeginCrop
from util_scripts import eval_accuracy, merge_json
from util_scripts.make_demo_data import write_video
from utils import UserError

N_FRAMES = 8
TINY = ['--model_depth', '10', '--resnet_widen_factor', '0.5', '--sample_size', '32',
        '--sample_duration', '8', '--batch_size', '8', '--learning_rate', '0.01',
        '--multistep_milestones', '100', '--n_val_samples', '1', '--n_threads', '0',
        '--manual_seed', '3']


def red_bar_video(direction: int, rng) -> np.ndarray:
    """[T, H, W, 3] uint8: the bar of bar_video in red, so that the sources look different."""
    frames = np.stack([np.asarray(img) for img in bar_video(direction, N_FRAMES, 32, rng)])
    bar = frames[..., 0] > 200
    frames[bar] = (230, 30, 30)
    return frames


def make_video_source(root, n_train: int, n_val: int, seed: int = 1):
    """Kinetics-style: <label>/<video_id>.mp4 video files, classes up and down (red bars), the
    video ids of make_motion_dataset (so every one clashes with the frame-folder source's)."""
    rng = np.random.default_rng(seed)
    database = {}
    for label, direction in (('up', -1), ('down', 1)):
        for subset, count in (('training', n_train), ('validation', n_val)):
            for i in range(count):
                video_id = f'v_{label}_{subset[0]}{i:02d}'
                path = root / 'videos' / label / f'{video_id}.mp4'
                path.parent.mkdir(parents=True, exist_ok=True)
                write_video(red_bar_video(direction, rng), path, 25)
                database[video_id] = {'subset': subset, 'annotations': {
                    'label': label, 'segment': [1, N_FRAMES + 1]}}
    database['k_test0'] = {'subset': 'testing', 'annotations': {}}
    (root / 'videos' / 'test').mkdir()
    write_video(red_bar_video(1, rng), root / 'videos' / 'test' / 'k_test0.mp4', 25)
    annotation = root / 'kinetics.json'
    annotation.write_text(json.dumps({'labels': ['up', 'down'], 'database': database}))
    return root / 'videos', annotation


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
    """((frame folders, json), (video files, json)): 10 + 5 videos per class and subset."""
    root = tmp_path_factory.mktemp('sources')
    frames = make_motion_dataset(root / 'ucf', n_train=10, n_val=5, n_frames=N_FRAMES)
    videos = make_video_source(root / 'kin', n_train=10, n_val=5)
    return frames, videos


def merge_args(sources, dst, *extra):
    (frames, frames_json), (videos, videos_json) = sources
    return [str(dst), '--source', str(frames_json), str(frames), '--source', str(videos_json),
            str(videos), '--names', 'ucf', 'kin', *extra]


@pytest.fixture(scope='module')
def merged(sources, tmp_path_factory):
    dst = tmp_path_factory.mktemp('merged') / 'merged.json'
    merge_json.main(merge_args(sources, dst))
    return dst


def test_merged_labels_paths_subsets_and_sources(sources, merged):
    (frames, _), (videos, _) = sources
    data = json.loads(merged.read_text())
    # clashing names are kept apart, A's classes first
    assert data['labels'] == ['ucf:up', 'ucf:down', 'kin:up', 'kin:down']
    database = data['database']
    assert len(database) == 2 * 2 * 15 + 1
    ucf, kin = database['v_up_t00'], database['kin:v_up_t00']  # the clashing id renamed
    assert ucf['source'] == 'ucf' and ucf['annotations']['label'] == 'ucf:up'
    assert ucf['video_path'] == str((frames / 'up' / 'v_up_t00').resolve())
    assert kin['source'] == 'kin' and kin['annotations']['label'] == 'kin:up'
    assert kin['video_path'] == str((videos / 'up' / 'v_up_t00.mp4').resolve())
    assert database['v_down_v03']['subset'] == 'validation'
    assert database['kin:v_down_v03']['annotations'] == {'label': 'kin:down',
                                                         'segment': [1, N_FRAMES + 1]}
    test_video = database['k_test0']
    assert test_video['subset'] == 'testing' and test_video['annotations'] == {}
    assert test_video['video_path'] == str((videos / 'test' / 'k_test0.mp4').resolve())
    assert [(s['name'], s['n_classes'], s['videos']) for s in data['sources']] == [
        ('ucf', 2, {'training': 20, 'validation': 10}),
        ('kin', 2, {'training': 20, 'validation': 10, 'testing': 1})]


def test_the_output_says_per_source_what_it_merged_and_how_it_named_clashes(sources, tmp_path,
                                                                             capsys):
    merge_json.main(merge_args(sources, tmp_path / 'm.json'))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ('source 1 ucf: 2 classes, videos: 20 training, 10 validation '
                      '(30 frame folders)')
    assert out[1] == ('source 2 kin: 2 classes, videos: 20 training, 10 validation, 1 testing '
                      '(31 video files); 30 video ids also in an earlier source renamed '
                      '"kin:<video_id>"')
    assert out[2] == ('4 classes of names in more than one source are kept apart as '
                      '"<source>:<class>": \'ucf:up\', \'ucf:down\', \'kin:up\', \'kin:down\'')
    assert out[3].startswith(f'wrote {tmp_path / "m.json"}: 4 classes, 61 videos from 2 '
                             'sources (train with --n_classes 4;')


def test_same_file_merges_the_classes_it_names(sources, tmp_path, capsys):
    same = tmp_path / 'same.tsv'
    same.write_text('ucf:up\tkin:up\n')
    merge_json.main(merge_args(sources, tmp_path / 'm.json', '--same', str(same)))
    data = json.loads((tmp_path / 'm.json').read_text())
    assert data['labels'] == ['up', 'ucf:down', 'kin:down']
    assert data['database']['kin:v_up_t01']['annotations']['label'] == 'up'
    assert data['database']['v_up_t01']['annotations']['label'] == 'up'
    assert '1 classes merged into others by --same' in capsys.readouterr().out


def test_the_dataset_reads_both_layouts_of_the_merge(sources, merged):
    (frames, _), _ = sources
    data = get_training_data(frames, merged, 'kinetics', 'rgb', 'jpg', Compose([ToTensor()]),
                             TemporalBeginCrop(4))
    assert len(data) == 40 and data.data.source_names == ['ucf', 'kin']
    assert np.bincount(data.data.sources).tolist() == [20, 20]
    kinds = {}
    for i in (0, 39):
        clip, label = data[i]
        assert clip.shape[:2] == (3, 4)
        kinds[data.data.video_path(i).suffix] = type(data.video_loader(i)).__name__
        red = clip[0].mean() - clip[1].mean()  # red bars: the video source
        assert (red > 0.05) == (data.data.sources[i] == 1), red
    assert kinds == {'': 'VideoLoader', '.mp4': 'VideoLoaderPyAV'}


@pytest.fixture(scope='module')
def trained(sources, merged, tmp_path_factory):
    """A ResNet-10 trained on the merge (4 classes, 2 per source), then inference on its
    validation videos."""
    result = tmp_path_factory.mktemp('merged_run')
    (frames, _), _ = sources
    main.main(['--video_path', str(frames), '--annotation_path', str(merged), '--result_path',
               str(result), '--n_classes', '4', '--n_epochs', '12', '--checkpoint', '12',
               '--inference', '--inference_stride', '8', *TINY])
    return result


def per_source_top1(result_json, annotation_path) -> dict:
    """{source: video top-1 of its validation videos}."""
    database = json.loads(annotation_path.read_text())['database']
    hits = {}
    for video_id, scores in json.loads(result_json.read_text())['results'].items():
        entry = database[video_id]
        hits.setdefault(entry['source'], []).append(
            scores[0]['label'] == entry['annotations']['label'])
    return {source: float(np.mean(h)) for source, h in hits.items()}


def test_training_on_the_merge_learns_both_sources_classes(trained, merged):
    accuracy = per_source_top1(trained / 'val.json', merged)
    print('video top-1 per source', accuracy)
    assert sorted(accuracy) == ['kin', 'ucf']
    assert min(accuracy.values()) >= 0.8  # chance: 0.25 of 4 classes, 0.5 within a source
    assert read_log(trained / 'val.log')[-1]['epoch'] == '12'
    for source in ('ucf', 'kin'):  # eval_accuracy --source counts the same
        assert eval_accuracy.main([str(merged), str(trained / 'val.json'), '--source',
                                   source]) == accuracy[source]
    with pytest.raises(UserError, match=r"no labelled videos of source 'mit' in subset "
                                        r"'validation' \(its sources: ucf, kin\)"):
        eval_accuracy.main([str(merged), str(trained / 'val.json'), '--source', 'mit'])


def test_fine_tuning_from_the_merged_checkpoint(trained, sources, tmp_path):
    (frames, frames_json), _ = sources
    main.main(['--video_path', str(frames), '--annotation_path', str(frames_json),
               '--result_path', str(tmp_path), '--dataset', 'ucf101', '--n_classes', '2',
               '--n_pretrain_classes', '4', '--pretrain_path', str(trained / 'save_12'),
               '--ft_begin_module', 'fc', '--n_epochs', '3', '--checkpoint', '3',
               '--inference', '--inference_stride', '8', *TINY])
    pretrained = paddle.load(str(trained / 'save_12.pdparams'))
    tuned = paddle.load(str(tmp_path / 'save_3.pdparams'))
    assert pretrained['fc.weight'].shape[1] == 4 and tuned['fc.weight'].shape[1] == 2
    np.testing.assert_array_equal(tuned['layer4.0.conv1.weight'].numpy(),
                                  pretrained['layer4.0.conv1.weight'].numpy())  # frozen
    results = json.loads((tmp_path / 'val.json').read_text())['results']
    top1 = np.mean([r[0]['label'] == video_id.split('_')[1] for video_id, r in results.items()])
    print('fine-tuned video top-1', top1)
    assert len(results) == 10 and top1 >= 0.8


# --- bad sources: one line naming the source -------------------------------------------------

def test_a_source_whose_videos_are_not_in_label_folders_is_refused(sources, tmp_path):
    (frames, frames_json), (videos, videos_json) = sources
    flat = tmp_path / 'flat'  # ActivityNet's layout: VIDEO_DIR/v_<id>
    (flat / 'v_up_t00').mkdir(parents=True)
    with pytest.raises(UserError, match=r"^source 2 kin \(.*kinetics.json, .*flat\): none of "
                                        r"its 31 videos is in the video directory as "
                                        r"<label>/<video_id>"):
        merge_json.main([str(tmp_path / 'm.json'), '--source', str(frames_json), str(frames),
                         '--source', str(videos_json), str(flat), '--names', 'ucf', 'kin'])
    assert not list(tmp_path.glob('m.json*'))  # nothing half-written


@pytest.mark.parametrize('make, message', [
    (lambda d: None, r'^source 2 b \(.*b.json, .*nowhere\): video directory not found'),
    (lambda d: d.joinpath('b.json').write_text(json.dumps({'labels': ['x'], 'database': {
        'v1': {'subset': 'training', 'annotations': [{'label': 'x', 'segment': [0.5, 2]}]}}})),
     r"^source 2 b \(.*\): video v1 has a list of \"annotations\" \(ActivityNet's untrimmed"),
    (lambda d: d.joinpath('b.json').write_text('{"labels": ["x"], "database": {"v1": '),
     r'^source 2 b \(.*\): annotation file .*b.json is not valid json'),
])
def test_bad_sources_are_refused_with_their_number_and_name(sources, tmp_path, make, message):
    (frames, frames_json), _ = sources
    tmp_path.joinpath('b.json').write_text(json.dumps({'labels': ['x'], 'database': {}}))
    make(tmp_path)
    video_dir = tmp_path / 'nowhere' if 'nowhere' in message else frames
    with pytest.raises(UserError, match=message):
        merge_json.main([str(tmp_path / 'm.json'), '--source', str(frames_json), str(frames),
                         '--source', str(tmp_path / 'b.json'), str(video_dir), '--names', 'a',
                         'b'])


def test_the_command_line_refuses_in_one_line(sources, tmp_path):
    (frames, frames_json), _ = sources
    result = subprocess.run([sys.executable, '-m', 'util_scripts.merge_json',
                             str(tmp_path / 'm.json'), '--source', str(frames_json), str(frames),
                             '--source', str(frames_json), str(tmp_path / 'missing')],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f'error: source 2 motion_2 ({frames_json}, {tmp_path / "missing"}): video directory '
        'not found']


@pytest.mark.parametrize('lines, message', [
    ('ucf:up\n', 'line 1: expected two or more'),
    ('ucf:up\tother:up\n', "'other:up' is not <source>:<class> with a source of ucf, kin"),
    ('ucf:up\tkin:sideways\n', "source kin has no class 'sideways'"),
    ('ucf:up\tkin:up\nkin:up\tucf:down\n', "line 2: 'kin:up' is merged twice"),
])
def test_bad_same_files_name_the_file_and_line(sources, tmp_path, lines, message):
    same = tmp_path / 'same.tsv'
    same.write_text(lines)
    with pytest.raises(UserError, match=f'--same {same}.*{message}'.replace('(', r'\(')
                       .replace(')', r'\)')):
        merge_json.main(merge_args(sources, tmp_path / 'm.json', '--same', str(same)))


# --- sampling: shards and --source_weights ----------------------------------------------------

@pytest.mark.parametrize('n', [1, 2, 3, 7, 64, 1000, 4099])
def test_permute_is_a_permutation_that_depends_on_its_key(n):
    first = permute(np.arange(n), n, [5, 1])
    assert sorted(first.tolist()) == list(range(n))
    if n >= 7:
        assert first.tolist() != permute(np.arange(n), n, [5, 2]).tolist()
        assert first.tolist() != list(range(n))


def epoch(sources, batch_size, world_size, weights, seed=11):
    """The batches of each process for one epoch."""
    batches = []
    for rank in range(world_size):
        sampler = SourceBatchSampler(sources, batch_size, rank, world_size, weights)
        sampler.set_epoch(seed)
        batches.append(list(sampler))
    return batches


def test_the_shards_of_a_step_are_the_single_process_batch_of_that_step():
    sources = np.repeat([0, 1, 2], [23, 5, 12])
    [single] = epoch(sources, 6, 1, [1, 1, 2])
    shards = epoch(sources, 3, 2, [1, 1, 2])
    assert len(shards[0]) == len(shards[1]) == len(single)
    for step, batch in enumerate(single):
        assert shards[0][step] + shards[1][step] == batch


def test_source_weights_set_each_sources_share_of_the_epoch():
    sources = np.repeat([0, 1], [90, 10])  # a large and a small source
    [batches] = epoch(sources, 10, 1, [1, 1])
    drawn = np.concatenate(batches)
    assert len(drawn) == 100
    assert np.bincount(sources[drawn]).tolist() == [50, 50]
    small = np.bincount(drawn[sources[drawn] == 1], minlength=100)[90:]
    assert small.tolist() == [5] * 10  # each small-source video 5 times
    assert len(set(drawn[sources[drawn] == 0].tolist())) == 50  # a subset, no repeats
    [unweighted] = epoch(sources, 10, 1, None)
    assert sorted(np.concatenate(unweighted).tolist()) == list(range(100))
    [other_epoch] = epoch(sources, 10, 1, [1, 1], seed=12)
    assert set(np.concatenate(other_epoch)[:50].tolist()) != set(drawn[:50].tolist())


def test_sources_listed_out_of_order_are_drawn_by_their_own_videos():
    sources = np.array([1, 0, 1, 0, 0, 0])
    [batches] = epoch(sources, 6, 1, [1, 2])
    drawn = np.concatenate(batches)
    assert np.bincount(sources[drawn]).tolist() == [2, 4]  # shares 1/3, 2/3 of 6
    assert sorted(drawn[sources[drawn] == 1].tolist()) == [0, 0, 2, 2]


def test_a_process_permutes_only_its_own_positions(monkeypatch):
    seen = []
    import datasets.data_loader as data_loader

    def spy(positions, n, key):
        seen.append(len(positions))
        return permute(positions, n, key)
    monkeypatch.setattr(data_loader, 'permute', spy)
    epoch(np.repeat([0, 1], [600, 400]), 8, 4, [1, 1])
    assert max(seen) <= 1000 // 4


def test_a_model_with_fewer_outputs_than_the_merged_classes_is_refused(merged, sources,
                                                                        tmp_path):
    (frames, _), _ = sources
    with pytest.raises(UserError, match=rf'^--n_classes 2, but {merged} has 4 classes: give '
                                        r'--n_classes 4$'):
        main.main(['--video_path', str(frames), '--annotation_path', str(merged),
                   '--result_path', str(tmp_path), '--n_classes', '2', '--n_epochs', '1',
                   *TINY])


def test_source_weights_must_match_the_annotations_sources(merged, sources, tmp_path):
    (frames, frames_json), _ = sources
    for annotation, message in ((merged, r'--source_weights gives 3 weights; the annotation has '
                                          r'2 sources \(ucf, kin\)'),
                                (frames_json, '--source_weights: the annotation has no '
                                              '"sources"')):
        with pytest.raises(UserError, match=message):
            main.main(['--video_path', str(frames), '--annotation_path', str(annotation),
                       '--result_path', str(tmp_path), '--n_classes', '4', '--n_epochs', '1',
                       '--source_weights', '1', '2', '3', '--no_val', *TINY])


# --- two nodes on loopback against one process -----------------------------------------------

def test_two_nodes_on_the_merge_give_the_single_process_result(sources, merged, tmp_path):
    from test_distributed import RECORDING_MAIN, finish, free_port, launch
    (frames, _), _ = sources
    script = tmp_path / 'recording_main.py'
    script.write_text(RECORDING_MAIN)
    record = tmp_path / 'record'
    record.mkdir()
    weights = ['--source_weights', '1', '3']
    args = ['--video_path', frames, '--annotation_path', merged, '--n_classes', '4', *TINY,
            '--batch_size', '4', *weights]
    master = f'127.0.0.1:{free_port()}'
    nodes = [launch(['--nnodes', '2', '--master', master, '--rank', str(rank),
                     '--nproc_per_node', '1'], script,
                    args + ['--result_path', tmp_path / 'nodes', '--n_epochs', '1',
                            '--checkpoint', '1', '--distributed', '--world_size', '2',
                            '--inference', '--inference_stride', '8'],
                    record_dir=record, log_dir=tmp_path / f'log{rank}', wait=False)
             for rank in (0, 1)]
    outputs = [finish(node, tmp_path / f'log{rank}') for rank, node in enumerate(nodes)]
    assert '2 processes, batch 4 each' in outputs[0]
    assert 'training videos: 40 (ucf: 20, kin: 20; clips per epoch by --source_weights: ' \
           'ucf: 10, kin: 30)' in outputs[0]

    # the steps of the two nodes together are the steps of one process with batch 8
    data = get_training_data(frames, merged, 'kinetics', 'rgb', 'jpg')
    single = SourceBatchSampler(data.data.sources, 8, weights=[1, 3])
    single.set_epoch(main.epoch_seed(3, 1) % 2**32)
    [first], [second] = (json.loads((record / f'rank{r}_shards.json').read_text())
                         for r in (0, 1))
    steps = [first[i:i + 4] + second[i:i + 4] for i in range(0, len(first), 4)]
    assert steps == list(single)
    assert np.bincount(data.data.sources[np.concatenate(steps)]).tolist() == [10, 30]

    # and one process evaluates the nodes' checkpoint as they did
    main.main([str(a) for a in args] + ['--result_path', str(tmp_path / 'single'),
                                        '--no_train', '--n_epochs', '2', '--inference',
                                        '--inference_stride', '8', '--resume_path',
                                        str(tmp_path / 'nodes' / 'save_1.pdparams')])
    nodes_val = json.loads((tmp_path / 'nodes' / 'val.json').read_text())['results']
    single_val = json.loads((tmp_path / 'single' / 'val.json').read_text())['results']
    assert list(nodes_val) == list(single_val) and len(single_val) == 20
    for video_id, expected in single_val.items():
        assert [r['label'] for r in nodes_val[video_id]] == [r['label'] for r in expected]
        np.testing.assert_allclose([r['score'] for r in nodes_val[video_id]],
                                   [r['score'] for r in expected], rtol=1e-5, atol=1e-7)
    [nodes_log], [single_log] = read_log(tmp_path / 'nodes' / 'val.log'), \
        read_log(tmp_path / 'single' / 'val.log')
    assert float(nodes_log['loss']) == pytest.approx(float(single_log['loss']), rel=1e-5)
    assert nodes_log['acc'] == single_log['acc']


def test_the_merged_benchmark_builds_both_sources_training_videos(tmp_path):
    result = subprocess.run([sys.executable, '-m', 'util_scripts.benchmark_annotation',
                             str(tmp_path), '--merged', '--n_videos', '200', '--n_frames', '20'],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured['videos'] == 180  # 90% training
    assert measured['sources'] == {'kinetics': 72, 'mit': 108}
    assert measured['shard_of_2']['samples'] == 90
    merged = json.loads((tmp_path / 'merged_200.json').read_text())
    assert len(merged['labels']) == 700 + 339
    assert {Path(e['video_path']).suffix for e in merged['database'].values()} == {'.mp4', ''}
