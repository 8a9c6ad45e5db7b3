"""export_model and predict_video on a tiny model trained on the motion demo's videos."""
import json
import subprocess
import sys

import numpy as np
import paddle
import pytest

import inference
import main
from conftest import ROOT, relative
from util_scripts import (eval_accuracy, export_model, generate_video_jpgs, make_demo_data,
                          predict_video, ucf101_json)
from utils import UserError

CLASSES = list(make_demo_data.CLASSES)


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """The motion demo (4 classes, 4 train + 2 test videos per class, 64x48, 20-28 frames) as
    videos and frame folders, and a ResNet-10 trained on it with inference on the test videos."""
    root = tmp_path_factory.mktemp('demo')
    make_demo_data.main([str(root), '--n_train_per_class', '4', '--n_test_per_class', '2',
                         '--width', '64', '--height', '48', '--min_frames', '20',
                         '--max_frames', '28'])
    generate_video_jpgs.main([str(root / 'videos'), str(root / 'jpg'), 'ucf101'])
    ucf101_json.main([str(root / 'annotations'), str(root / 'jpg'), str(root / 'json')])
    main.main(['--root_path', str(root), '--video_path', 'jpg',
               '--annotation_path', 'json/ucf101_01.json', '--result_path', 'results',
               '--dataset', 'ucf101', '--n_classes', '4', '--model_depth', '10',
               '--resnet_widen_factor', '0.5', '--sample_size', '32', '--sample_duration', '8',
               '--sample_t_stride', '2', '--batch_size', '8', '--n_epochs', '30',
               '--learning_rate', '0.01', '--checkpoint', '30', '--n_threads', '0', '--no_val',
               '--inference', '--inference_stride', '4', '--output_topk', '0'])
    return root


@pytest.fixture(scope='module')
def exported(demo):
    output = demo / 'exported'
    export_model.main(['--opts', str(demo / 'results' / 'opts.json'),
                       '--weights', str(demo / 'results' / 'save_30.pdparams'),
                       '--output', str(output)])
    return output


def split1_test_videos(demo):
    """The test videos of split 1: {video_id: (frame folder, .avi)}."""
    annotation = json.loads((demo / 'json' / 'ucf101_01.json').read_text())
    ids = [v for v, entry in annotation['database'].items() if entry['subset'] == 'validation']
    assert len(ids) == 8
    return {v: (demo / 'jpg' / v.split('_')[1] / v, demo / 'videos' / v.split('_')[1] / f'{v}.avi')
            for v in ids}


def predict(inputs, model, tmp_path, *args):
    output = tmp_path / 'pred.json'
    predict_video.main([*map(str, inputs), '--model', str(model), '--topk', '0',
                        '--output', str(output), *args])
    return json.loads(output.read_text())['results']


def scores(result):
    """{label: score} of one video's result list."""
    return {r['label']: r['score'] for r in result}


def test_export_writes_the_model_and_its_preprocessing(demo, exported):
    info = json.loads((exported / export_model.INFO_FILE).read_text())
    assert info['class_names'] == CLASSES
    assert info['input_shape'] == [None, 3, 8, 32, 32]
    assert (info['sample_size'], info['sample_duration'], info['sample_t_stride'],
            info['inference_stride'], info['value_scale']) == (32, 8, 2, 4, 1)
    assert info['mean'] == pytest.approx([0.4345, 0.4051, 0.3775])  # Kinetics, the default
    assert (exported / 'inference.pdiparams').is_file()
    assert inference.saved_program(exported / 'inference').is_file()


def test_exported_logits_equal_the_dygraph_model(demo, exported):
    opt = export_model.parse_model_opts([], demo / 'results' / 'opts.json', 'test')
    model = export_model.build_model(opt, demo / 'results' / 'save_30.pdparams')
    dygraph = inference.dygraph_logits(model)
    predictor = inference.Predictor(exported / 'inference')
    rng = np.random.default_rng(0)
    for batch in (1, 4):  # the batch size is free
        clips = rng.normal(size=[batch, 3, 8, 32, 32]).astype('float32')
        expected = dygraph(clips)
        assert expected.shape == (batch, 4)
        assert relative(predictor(clips), expected) < 1e-4


def test_frame_folders_give_the_scores_of_main_inference(demo, exported, tmp_path):
    videos = split1_test_videos(demo)
    results = predict([folder for folder, _ in videos.values()], exported, tmp_path)
    expected = json.loads((demo / 'results' / 'val.json').read_text())['results']
    assert sorted(results) == sorted(expected)
    for video_id, result in results.items():
        assert [r['label'] for r in result] == [r['label'] for r in expected[video_id]]
        np.testing.assert_allclose([r['score'] for r in result],
                                   [r['score'] for r in expected[video_id]], rtol=1e-4)


def test_checkpoint_with_opts_gives_the_exported_scores(demo, exported, tmp_path):
    folders = [folder for folder, _ in split1_test_videos(demo).values()][:3]
    from_export = predict(folders, exported, tmp_path)
    from_checkpoint = predict(folders, demo / 'results' / 'save_30.pdparams', tmp_path,
                              '--opts', str(demo / 'results' / 'opts.json'))
    for video_id, result in from_export.items():
        assert [r['label'] for r in from_checkpoint[video_id]] == [r['label'] for r in result]
        np.testing.assert_allclose([r['score'] for r in from_checkpoint[video_id]],
                                   [r['score'] for r in result], rtol=1e-4)


def test_videos_give_the_top1_of_their_frame_folders(demo, exported, tmp_path, capsys):
    videos = split1_test_videos(demo)
    from_frames = predict([folder for folder, _ in videos.values()], exported, tmp_path)
    from_videos = predict([avi for _, avi in videos.values()], exported, tmp_path)
    printed = capsys.readouterr().out
    assert f'{videos["v_DriftUp_g01_c01"][1]} (' in printed  # "INPUT (n clips): label score ..."
    differences, compared = [], 0
    for video_id, result in from_frames.items():
        frame_scores, video_scores = scores(result), scores(from_videos[video_id])
        difference = max(abs(video_scores[c] - frame_scores[c]) for c in CLASSES)
        differences += [abs(video_scores[c] - frame_scores[c]) for c in CLASSES]
        # the top-1 can only change where the two best classes are nearer than the scores move
        if result[0]['score'] - result[1]['score'] > 2 * difference:
            assert from_videos[video_id][0]['label'] == result[0]['label'], video_id
            compared += 1
    # frames decoded from the pipe skip the JPEG round trip of the frame folders: small changes
    assert max(differences) < 0.1
    assert compared >= len(from_frames) - 2  # at most two near ties on this tiny model
    print(f'\nlargest score difference .avi vs frame folder: {max(differences):.4f} '
          f'(mean {np.mean(differences):.4f})')


def test_timeline_windows_are_the_segments_of_main_inference_no_average(demo, exported, tmp_path):
    """--timeline's windows of a frame folder: main.py --inference_no_average's segments and
    per-segment scores; those of the video file, timed at its 25 fps."""
    main.main(['--root_path', str(demo), '--video_path', 'jpg',
               '--annotation_path', 'json/ucf101_01.json', '--result_path', str(tmp_path),
               '--dataset', 'ucf101', '--n_classes', '4', '--model_depth', '10',
               '--resnet_widen_factor', '0.5', '--sample_size', '32', '--sample_duration', '8',
               '--sample_t_stride', '2', '--n_threads', '0', '--no_train', '--no_val',
               '--resume_path', 'results/save_30.pdparams', '--inference',
               '--inference_no_average', '--inference_stride', '4', '--output_topk', '0'])
    expected = json.loads((tmp_path / 'val.json').read_text())['results']
    # eval_accuracy averages these clips into the video accuracy of main.py's averaged result
    annotation = str(demo / 'json' / 'ucf101_01.json')
    assert eval_accuracy.main([annotation, str(tmp_path / 'val.json')]) == \
        eval_accuracy.main([annotation, str(demo / 'results' / 'val.json')])
    folder, avi = split1_test_videos(demo)['v_DriftUp_g01_c01']
    output = tmp_path / 'timeline.json'
    predict_video.main([str(folder), '--model', str(exported), '--topk', '0', '--timeline',
                        '--output', str(output)])
    timeline = json.loads(output.read_text())['timeline']['v_DriftUp_g01_c01']
    assert timeline['fps'] is None  # a frame folder: frames, no times
    windows, segments = timeline['windows'], expected['v_DriftUp_g01_c01']
    assert [w['segment'] for w in windows] == [s['segment'] for s in segments]
    assert len(windows) >= 2
    for window, segment in zip(windows, segments):
        assert (window['start'], window['end']) == (None, None)
        actual, wanted = scores(window['result']), scores(segment['result'])
        np.testing.assert_allclose([actual[c] for c in CLASSES], [wanted[c] for c in CLASSES],
                                   rtol=1e-4)

    predict_video.main([str(avi), '--model', str(exported), '--timeline', '--output', str(output)])
    timeline = json.loads(output.read_text())['timeline']['v_DriftUp_g01_c01']
    assert timeline['fps'] == 25  # make_demo_data's rate
    # windows of 8 frames every 2 x 4 = 8: the second is frames 9..16, 0.32 s to 0.64 s
    assert timeline['windows'][1]['segment'] == [9, 17]
    assert (timeline['windows'][1]['start'], timeline['windows'][1]['end']) == \
        pytest.approx((0.32, 0.64))


def test_a_video_decodes_like_its_frame_folder(demo):
    folder, avi = split1_test_videos(demo)['v_Still_g01_c01']
    decoded = list(predict_video.decode_video(avi))
    stored = list(predict_video.read_frame_folder(folder))
    assert len(decoded) == len(stored)
    assert decoded[0].size == stored[0].size == (320, 240)
    difference = np.abs(np.asarray(decoded[5], 'float32') - np.asarray(stored[5], 'float32'))
    assert difference.mean() < 3  # grey levels: JPEG's rounding, not another frame or colour order


def cli(*args):
    return subprocess.run([sys.executable, '-m', 'util_scripts.predict_video', *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_a_file_ffmpeg_cannot_read_ends_in_one_line(exported, tmp_path):
    broken = tmp_path / 'broken.avi'
    broken.write_bytes(b'not a video' * 100)
    assert_one_line_error(cli(broken, '--model', exported), 'cannot read', 'broken.avi')


def test_a_broken_file_among_others_is_reported_and_the_others_written(demo, exported,
                                                                       tmp_path):
    (first, a), (second, c) = list(split1_test_videos(demo).items())[:2]
    broken = tmp_path / 'broken.mp4'
    broken.write_bytes(b'\x00\x00\x00\x18ftypmp42' + b'\x00' * 200)
    output = tmp_path / 'p.json'
    result = cli(a[1], broken, c[1], '--model', exported, '--output', output)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 2 and 'broken.mp4' in errors[0]
    assert errors[1] == 'error: 1 of 3 videos could not be classified (listed above)'
    assert sorted(json.loads(output.read_text())['results']) == sorted([first, second])


def test_a_model_folder_without_its_json_ends_in_one_line(exported, tmp_path, demo):
    folder = tmp_path / 'incomplete'
    folder.mkdir()
    for path in exported.glob('inference.*'):
        (folder / path.name).write_bytes(path.read_bytes())
    avi = next(iter(split1_test_videos(demo).values()))[1]
    assert_one_line_error(cli(avi, '--model', folder), 'no model_info.json', 'export_model')


def test_a_checkpoint_of_another_class_count_ends_in_one_line(demo, tmp_path):
    import paddle
    from models.resnet import generate_model
    weights = tmp_path / 'five_classes.pdparams'
    paddle.save(generate_model(10, n_classes=5, widen_factor=0.5).state_dict(), str(weights))
    avi = next(iter(split1_test_videos(demo).values()))[1]
    assert_one_line_error(cli(avi, '--model', weights, '--opts', demo / 'results' / 'opts.json'),
                          'checkpoint of 5 classes', 'the model has 4')


def test_other_mistakes_are_user_errors(demo, exported, tmp_path):
    checkpoint = demo / 'results' / 'save_30.pdparams'
    for args, message in (
            ([tmp_path / 'missing.avi', '--model', exported], 'missing.avi not found'),
            ([tmp_path, '--model', exported], 'without image_00001.jpg'),
            ([tmp_path, '--model', checkpoint], 'pass --opts')):
        with pytest.raises(UserError, match=message):
            predict_video.main([str(a) for a in args])


def test_export_names_the_missing_source_of_class_names(demo, tmp_path):
    weights = str(demo / 'results' / 'save_30.pdparams')
    with pytest.raises(UserError, match='pass --annotation_path'):
        export_model.main(['--weights', weights, '--output', str(tmp_path), '--n_classes', '4'])
    opts = json.loads((demo / 'results' / 'opts.json').read_text())
    opts['annotation_path'] = str(tmp_path / 'moved.json')
    (tmp_path / 'opts.json').write_text(json.dumps(opts))
    with pytest.raises(UserError, match=r'annotation json of .*opts.json .*moved.json not found'):
        export_model.main(['--opts', str(tmp_path / 'opts.json'), '--weights', weights,
                           '--output', str(tmp_path)])


def test_frame_trained_model_scores_videos_as_their_frames(demo, tmp_path):
    """main.py --inference --file_type video on the .avi files gives the scores of the frame
    folders within the JPEG round trip of the frames, and their top-1 where no near tie."""
    main.main(['--root_path', str(demo), '--video_path', 'videos', '--file_type', 'video',
               '--annotation_path', 'json/ucf101_01.json', '--result_path', str(tmp_path),
               '--dataset', 'ucf101', '--n_classes', '4', '--model_depth', '10',
               '--resnet_widen_factor', '0.5', '--sample_size', '32', '--sample_duration', '8',
               '--sample_t_stride', '2', '--n_threads', '0', '--no_train', '--no_val',
               '--resume_path', 'results/save_30.pdparams', '--inference',
               '--inference_stride', '4', '--output_topk', '0'])
    from_videos = json.loads((tmp_path / 'val.json').read_text())['results']
    from_frames = json.loads((demo / 'results' / 'val.json').read_text())['results']
    assert sorted(from_videos) == sorted(from_frames) and len(from_frames) == 8
    differences, compared = [], 0
    for video_id, result in from_frames.items():
        frame_scores, video_scores = scores(result), scores(from_videos[video_id])
        difference = max(abs(video_scores[c] - frame_scores[c]) for c in CLASSES)
        differences.append(difference)
        if result[0]['score'] - result[1]['score'] > 2 * difference:
            assert from_videos[video_id][0]['label'] == result[0]['label'], video_id
            compared += 1
    assert 0 < max(differences) < 0.1 and compared >= 6
    print(f'\nlargest score difference --file_type video vs frames: {max(differences):.4f}')


def test_a_damaged_pretrained_weights_file_is_one_line(tmp_path):
    weights = tmp_path / 'pretrain.pdparams'
    model = paddle.nn.Linear(2, 2)
    paddle.save(model.state_dict(), str(weights))
    weights.write_bytes(weights.read_bytes()[:20])  # truncated
    run = subprocess.run([sys.executable, 'main.py', '--video_path', str(tmp_path),
                          '--annotation_path', str(tmp_path / 'a.json'), '--result_path',
                          str(tmp_path / 'out'), '--pretrain_path', str(weights),
                          '--n_pretrain_classes', '2'], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith(f'error: cannot read weights {weights}'), run.stderr
    assert 'Traceback' not in run.stderr
