"""main.py end to end on the tiny motion set: learning, files, resume, fine-tuning, CLI errors."""
import json
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest

import main
from conftest import ROOT, read_log
from models import onednn
from opts import get_parser
from utils import UserError

TINY = ['--dataset', 'ucf101', '--n_classes', '2', '--model_depth', '10', '--sample_size', '32',
        '--sample_duration', '8', '--batch_size', '8', '--learning_rate', '0.01',
        '--multistep_milestones', '100', '--n_val_samples', '2']


def run(motion_data, result_path, *args):
    video_path, annotation_path = motion_data
    main.main(['--video_path', str(video_path), '--annotation_path', str(annotation_path),
               '--result_path', str(result_path), *TINY, *args])


def top1(result_json):
    results = json.loads(result_json.read_text())['results']
    return np.mean([r[0]['label'] == video_id.split('_')[1] for video_id, r in results.items()])


@pytest.fixture(scope='module')
def trained(motion_data, tmp_path_factory):
    """A ResNet-10 trained from scratch for 6 epochs, with inference on the validation set."""
    result_path = tmp_path_factory.mktemp('trained')
    run(motion_data, result_path, '--n_epochs', '6', '--checkpoint', '3', '--n_threads', '2',
        '--inference', '--inference_stride', '8', '--output_topk', '0')
    return result_path


def test_training_from_scratch_learns_the_motion(trained):
    val = read_log(trained / 'val.log')
    assert [int(r['epoch']) for r in val] == list(range(1, 7))
    accuracy = [float(r['acc']) for r in val]
    assert max(accuracy[-3:]) >= 0.8  # chance is 0.5
    losses = [float(r['loss']) for r in read_log(trained / 'train.log')]
    assert min(losses[-3:]) < losses[0]  # learnt (single epochs wobble at lr 0.01)
    assert top1(trained / 'val.json') >= 0.8


def test_result_files(trained, motion_data):
    opts = json.loads((trained / 'opts.json').read_text())
    assert opts['arch'] == 'resnet-10' and opts['n_classes'] == 2 and opts['output_topk'] == 2
    assert opts['annotation_path'] == str(motion_data[1])
    assert list(read_log(trained / 'train.log')[0]) == ['epoch', 'loss', 'acc', 'lr']
    batches = read_log(trained / 'train_batch.log')
    assert list(batches[0]) == ['epoch', 'batch', 'iter', 'loss', 'acc', 'lr', 'data_time',
                                'batch_time']
    assert len(batches) == 6 * 4 and batches[-1]['iter'] == '24'  # 32 clips / batch 8
    assert sorted(p.name for p in trained.glob('save_*')) == [
        'save_3.pdopt', 'save_3.pdparams', 'save_6.pdopt', 'save_6.pdparams']
    assert not list(trained.glob('*.tmp'))
    state = paddle.load(str(trained / 'save_6.pdopt'))
    assert state['epoch'] == 6 and state['arch'] == 'resnet-10'
    assert any(k.startswith('fc.weight_') for k in state['optimizer'])
    results = json.loads((trained / 'val.json').read_text())['results']
    assert len(results) == 16
    for video in results.values():
        assert [r['label'] for r in video] in (['up', 'down'], ['down', 'up'])
        assert sum(r['score'] for r in video) == pytest.approx(1, abs=1e-5)


def test_validating_a_checkpoint_without_training_validates_once(trained, motion_data,
                                                                  tmp_path):
    """README's inference-only command (--no_train --inference --resume_path, validation on):
    the checkpoint of epoch 3 is validated once, not once per epoch up to --n_epochs."""
    run(motion_data, tmp_path, '--no_train', '--n_epochs', '200', '--n_threads', '0',
        '--resume_path', str(trained / 'save_3.pdparams'))
    [row] = read_log(tmp_path / 'val.log')
    [trained_row] = [r for r in read_log(trained / 'val.log') if r['epoch'] == '3']
    assert row['epoch'] == '4'  # the epoch after the checkpoint's, as resumed training counts
    assert float(row['loss']) == pytest.approx(float(trained_row['loss']), rel=1e-4)


def test_resuming_a_checkpoint_of_another_width_is_one_line(trained, motion_data, tmp_path):
    # the same arch name (resnet-10), other shapes: Paddle's set_state_dict would skip them all
    # with warnings and go on with fresh weights
    with pytest.raises(UserError, match=r'^weights .*save_6.pdparams do not fit the model; '
                                        r'shape mismatch: conv1.weight: file \[64, 3, 7, 7, 7\] '
                                        r'vs model \[32, 3, 7, 7, 7\]'):
        run(motion_data, tmp_path, '--resnet_widen_factor', '0.5', '--no_train', '--no_val',
            '--inference', '--resume_path', str(trained / 'save_6.pdparams'))
    assert not (tmp_path / 'val.json').exists()


def test_resume_reproduces_the_uninterrupted_run(motion_data, tmp_path):
    full, resumed = tmp_path / 'full', tmp_path / 'resumed'
    run(motion_data, full, '--n_epochs', '3', '--checkpoint', '1', '--n_threads', '0')
    resumed.mkdir()
    for name in ('save_1.pdparams', 'save_1.pdopt', 'train.log', 'train_batch.log', 'val.log'):
        shutil.copy(full / name, resumed / name)
    run(motion_data, resumed, '--n_epochs', '3', '--checkpoint', '1', '--n_threads', '0',
        '--resume_path', str(resumed / 'save_1.pdparams'))
    for log in ('train.log', 'train_batch.log', 'val.log'):
        a, b = read_log(full / log), read_log(resumed / log)
        assert [r['epoch'] for r in b] == [r['epoch'] for r in a]
        np.testing.assert_allclose([float(r['loss']) for r in b], [float(r['loss']) for r in a],
                                   rtol=1e-5)
    a = paddle.load(str(full / 'save_3.pdparams'))
    b = paddle.load(str(resumed / 'save_3.pdparams'))
    for key in a:
        np.testing.assert_allclose(b[key].numpy(), a[key].numpy(), rtol=1e-4, atol=1e-6)


def test_bfloat16_on_cpu_learns_the_motion_and_resumes_to_the_same_run(motion_data, tmp_path):
    if not onednn.bfloat16_supported():
        pytest.skip('this CPU has no bfloat16 instructions (avx512_bf16 or amx_bf16)')
    full, resumed = tmp_path / 'full', tmp_path / 'resumed'
    run(motion_data, full, '--n_epochs', '6', '--checkpoint', '3', '--n_threads', '0',
        '--amp', 'bfloat16', '--inference', '--inference_stride', '8')
    accuracy = [float(r['acc']) for r in read_log(full / 'val.log')]
    assert max(accuracy[-3:]) >= 0.8  # as in float32 (chance is 0.5)
    assert top1(full / 'val.json') >= 0.8
    resumed.mkdir()
    for name in ('save_3.pdparams', 'save_3.pdopt', 'train.log', 'train_batch.log', 'val.log'):
        shutil.copy(full / name, resumed / name)
    run(motion_data, resumed, '--n_epochs', '6', '--checkpoint', '3', '--n_threads', '0',
        '--amp', 'bfloat16', '--resume_path', str(resumed))
    for log in ('train_batch.log', 'val.log'):
        a, b = read_log(full / log), read_log(resumed / log)
        np.testing.assert_allclose([float(r['loss']) for r in b], [float(r['loss']) for r in a],
                                   rtol=1e-5)


def test_fine_tuning_from_pretrained_weights_updates_only_fc(trained, motion_data, tmp_path):
    run(motion_data, tmp_path, '--pretrain_path', str(trained / 'save_6'),
        '--n_pretrain_classes', '2', '--n_classes', '3', '--ft_begin_module', 'fc',
        '--n_epochs', '1', '--checkpoint', '1', '--n_threads', '0', '--no_val',
        '--weight_decay', '0')
    before = paddle.load(str(trained / 'save_6.pdparams'))
    after = paddle.load(str(tmp_path / 'save_1.pdparams'))
    assert after['fc.weight'].shape == [512, 3]
    for key in before:
        if key.startswith('fc.'):
            continue
        if key.endswith(('_mean', '_variance')):  # BN statistics follow the data in train mode
            continue
        np.testing.assert_array_equal(after[key].numpy(), before[key].numpy(), err_msg=key)


def test_no_average_inference_from_a_checkpoint(trained, motion_data, tmp_path):
    run(motion_data, tmp_path, '--no_train', '--no_val', '--inference', '--inference_no_average',
        '--inference_stride', '4', '--inference_crop', 'nocrop', '--output_topk', '1',
        '--resume_path', str(trained), '--n_threads', '0')
    results = json.loads((tmp_path / 'val.json').read_text())['results']
    segments = [r['segment'] for r in results['v_up_v00']]
    assert segments == [[1, 9], [5, 13], [9, 17], [13, 17]]
    assert all(len(r['result']) == 1 for r in results['v_up_v00'])


def cli(*args):
    return subprocess.run([sys.executable, 'main.py', *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_help_lists_every_option():
    out = cli('-h').stdout
    for action in get_parser()._actions:
        for flag in action.option_strings:
            assert flag in out


@pytest.mark.parametrize('args, message', [
    (['--train_crop', 'diagonal'], "argument --train_crop: invalid choice: 'diagonal'"),
    (['--n_pretrain_classes', '-3'], 'argument --n_pretrain_classes: must be >= 0'),
    ([], 'error: annotation file not found: '),
    (['--pretrain_path', 'x.pdparams'], 'error: --pretrain_path needs --n_pretrain_classes'),
])
def test_bad_input_ends_with_one_clear_line(tmp_path, args, message):
    result = cli('--video_path', str(tmp_path), '--annotation_path', str(tmp_path / 'none.json'),
                 '--result_path', str(tmp_path / 'out'), *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('n_threads', ['2', '0'])
def test_corrupt_frame_in_a_loader_worker_ends_with_one_line(motion_data, tmp_path, n_threads):
    """In a worker process, and in the main process (`--n_threads 0`), where Paddle's loader
    thread used to leave the process waiting for ever, deaf to SIGINT and SIGTERM."""
    video_path, annotation_path = motion_data
    broken = tmp_path / 'jpg'
    shutil.copytree(video_path, broken)
    for frame in broken.glob('*/*/image_*.jpg'):  # every frame, whichever clip is drawn first
        frame.write_bytes(b'not a jpeg')
    result = cli('--video_path', str(broken), '--annotation_path', str(annotation_path),
                 '--result_path', str(tmp_path / 'out'), *TINY, '--n_threads', n_threads,
                 '--n_epochs', '1', '--strict_data')
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert 'error: cannot read frame ' in last and 'image_000' in last and 'not an image' in last


def test_fine_tuning_a_converted_pytorch_checkpoint_updates_only_fc(motion_data, tmp_path):
    torch = pytest.importorskip('torch', reason='PyTorch is a test-only extra: '
                                'pip install torch==2.13.0')
    from torch_reference import build
    from util_scripts import convert_pytorch_weights

    reference = build('resnet', 10, n_classes=5)
    torch.save({'epoch': 200, 'arch': 'resnet-10', 'state_dict': reference.state_dict()},
               tmp_path / 'r3d10.pth')
    convert_pytorch_weights.main([str(tmp_path / 'r3d10.pth'), str(tmp_path / 'r3d10.pdparams')])
    run(motion_data, tmp_path / 'out', '--pretrain_path', str(tmp_path / 'r3d10'),
        '--n_pretrain_classes', '5', '--ft_begin_module', 'fc', '--n_epochs', '1',
        '--checkpoint', '1', '--n_threads', '0', '--no_val', '--weight_decay', '0')
    after = paddle.load(str(tmp_path / 'out' / 'save_1.pdparams'))
    assert after['fc.weight'].shape == [512, 2]
    for key, value in reference.state_dict().items():
        if key.startswith('fc.') or 'running' in key or 'num_batches' in key:
            continue
        np.testing.assert_array_equal(after[key].numpy(), value.numpy(), err_msg=key)
