"""Data parallelism on paddle.distributed.launch (gloo on CPU): shards, one set of weights,
one set of logs, inference equal to a single process, resume, two nodes; and the options."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paddle
import pytest

import distributed
import main
from checkpoints import complete_checkpoints
from conftest import ROOT, bar_video, count_host_reads, make_motion_dataset, read_log, write_frames
from environment import launched_world
from opts import parse_opts
from utils import READ_INTERVAL, Interrupted, StopSignals, UserError, epoch_seed

TINY = ['--dataset', 'ucf101', '--n_classes', '2', '--model_depth', '10',
        '--resnet_widen_factor', '0.25', '--sample_size', '32', '--sample_duration', '8',
        '--batch_size', '4', '--learning_rate', '0.01', '--n_val_samples', '1',
        '--manual_seed', '5', '--n_threads', '0']
N_TRAIN = 16  # videos: 2 processes x 2 batches of 4 per epoch
N_VAL = 7  # odd: the processes' validation shards differ in size

# main.py as launch runs it, recording per process what the test checks: the indices of every
# training epoch (one SourceBatchSampler pass each) and the weights after each epoch
# (validation runs after training and after the BatchNorm statistics are averaged).
RECORDING_MAIN = f'''
import json, os, sys
sys.path.insert(0, {str(ROOT)!r})
import numpy as np
import main
from datasets.data_loader import SourceBatchSampler

rank = os.environ['PADDLE_TRAINER_ID']
record = os.path.join(os.environ['RECORD_DIR'], 'rank' + rank)
epochs = []
iterate = SourceBatchSampler.__iter__
def recording_iter(self):
    epochs.append([])
    for batch in iterate(self):
        epochs[-1].extend(int(i) for i in batch)
        yield batch
    with open(record + '_shards.json', 'w') as f:
        json.dump(epochs, f)
SourceBatchSampler.__iter__ = recording_iter

val_epoch = main.val_epoch
def recording_val_epoch(epoch, loader, model, *args, **kwargs):
    np.savez(record + '_weights.npz', **{{k: v.numpy() for k, v in model.state_dict().items()}})
    return val_epoch(epoch, loader, model, *args, **kwargs)
main.val_epoch = recording_val_epoch
main.run_cli(lambda: main.main(sys.argv[1:]))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def launch(launch_args, script, args, record_dir=None, log_dir=None, wait=True):
    """`python -m paddle.distributed.launch launch_args script args` from the project folder."""
    env = dict(os.environ, RECORD_DIR=str(record_dir or ''))
    # not launched ourselves; main.py shares the cores among the processes
    for name in [n for n in env if n.startswith('PADDLE_') or n == 'OMP_NUM_THREADS']:
        del env[name]
    command = [sys.executable, '-m', 'paddle.distributed.launch', *launch_args,
               '--log_dir', str(log_dir), str(script), *map(str, args)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    if not wait:
        return process
    return finish(process, log_dir)


def finish(process, log_dir):
    out, _ = process.communicate(timeout=300)
    logs = ''.join(p.read_text() for p in sorted(Path(log_dir).glob('workerlog.*')))
    assert process.returncode == 0, out + logs
    return out


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """(video_path, annotation_path): 16 training videos and 7 validation videos."""
    root = tmp_path_factory.mktemp('dist_data')
    video_path, annotation_path = make_motion_dataset(root, n_train=N_TRAIN // 2, n_val=3,
                                                      n_frames=8)
    annotation = json.loads(annotation_path.read_text())
    write_frames(video_path / 'up' / 'v_up_v99', bar_video(-1, 8, 32, np.random.default_rng(9)))
    annotation['database']['v_up_v99'] = {'subset': 'validation', 'annotations': {
        'label': 'up', 'segment': [1, 9]}}
    annotation_path.write_text(json.dumps(annotation))
    return video_path, annotation_path


def data_args(data, result_path):
    return ['--video_path', str(data[0]), '--annotation_path', str(data[1]),
            '--result_path', str(result_path), *TINY]


@pytest.fixture(scope='module')
def two_processes(data, tmp_path_factory):
    """2 processes, 2 epochs with a checkpoint each, then inference: (result, record) folders."""
    folder = tmp_path_factory.mktemp('dist_run')
    script = folder / 'recording_main.py'
    script.write_text(RECORDING_MAIN)
    result, record = folder / 'result', folder / 'record'
    record.mkdir()
    launch(['--nproc_per_node', '2'], script,
           data_args(data, result) + ['--n_epochs', '2', '--checkpoint', '1', '--inference',
                                      '--distributed'],
           record_dir=record, log_dir=folder / 'log')
    return result, record


def test_training_shards_are_disjoint_and_cover_the_training_set_each_epoch(two_processes):
    _, record = two_processes
    shards = [json.loads((record / f'rank{r}_shards.json').read_text()) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 2  # epochs
    for epoch in range(2):
        first, second = shards[0][epoch], shards[1][epoch]
        assert len(first) == len(second) == N_TRAIN // 2
        assert not set(first) & set(second)
        assert sorted(first + second) == list(range(N_TRAIN))
    assert shards[0][0] != shards[0][1]  # reshuffled every epoch


def test_both_processes_end_with_the_weights_of_the_checkpoint(two_processes):
    result, record = two_processes
    weights = [dict(np.load(record / f'rank{r}_weights.npz')) for r in (0, 1)]
    checkpoint = paddle.load(str(result / 'save_2.pdparams'))
    assert set(weights[0]) == set(weights[1]) == set(checkpoint)
    for name, value in checkpoint.items():
        assert np.array_equal(weights[0][name], weights[1][name]), name  # BN statistics too
        assert np.array_equal(weights[0][name], value.numpy()), name
    before = paddle.load(str(result / 'save_1.pdparams'))
    assert not np.array_equal(before['fc.weight'].numpy(), checkpoint['fc.weight'].numpy())


def test_one_set_of_logs_with_a_row_per_epoch(two_processes):
    result, _ = two_processes
    assert [r['epoch'] for r in read_log(result / 'train.log')] == ['1', '2']
    assert [r['epoch'] for r in read_log(result / 'val.log')] == ['1', '2']
    batches = read_log(result / 'train_batch.log')
    assert [(r['epoch'], r['iter']) for r in batches] == [('1', '1'), ('1', '2'), ('2', '3'),
                                                          ('2', '4')]
    opts = json.loads((result / 'opts.json').read_text())
    assert opts['distributed'] and opts['world_size'] == 2 and opts['dist_rank'] == 0
    assert sorted(p.name for p in result.iterdir()) == [
        'opts.json', 'save_1.pdopt', 'save_1.pdparams', 'save_2.pdopt', 'save_2.pdparams',
        'train.log', 'train_batch.log', 'val.json', 'val.log']


def test_inference_and_validation_equal_a_single_process_on_the_checkpoint(
        two_processes, data, tmp_path):
    result, _ = two_processes
    # --no_train: epoch 3 validates the checkpoint of epoch 2, which the run validated as well
    main.main(data_args(data, tmp_path) + ['--no_train', '--n_epochs', '3', '--inference',
                                           '--resume_path', str(result / 'save_2.pdparams')])
    parallel = json.loads((result / 'val.json').read_text())['results']
    single = json.loads((tmp_path / 'val.json').read_text())['results']
    annotation = json.loads(Path(data[1]).read_text())['database']
    validation = [v for v, a in annotation.items() if a['subset'] == 'validation']
    assert len(validation) == N_VAL
    assert sorted(parallel) == sorted(validation)
    assert list(parallel) == list(single)  # every video once, in the same order
    for video_id, expected in single.items():
        assert [r['label'] for r in parallel[video_id]] == [r['label'] for r in expected]
        np.testing.assert_allclose([r['score'] for r in parallel[video_id]],
                                   [r['score'] for r in expected], rtol=1e-5, atol=1e-7)
    [parallel_val] = [r for r in read_log(result / 'val.log') if r['epoch'] == '2']
    [single_val] = read_log(tmp_path / 'val.log')
    for key in ('loss', 'acc'):  # over all 7 clips, though the shards hold 4 and 3
        assert float(parallel_val[key]) == pytest.approx(float(single_val[key]), rel=1e-5)


def test_resumed_distributed_run_reproduces_the_uninterrupted_one(two_processes, data, tmp_path):
    result, _ = two_processes
    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    for name in ('opts.json', 'save_1.pdparams', 'save_1.pdopt', 'train.log', 'val.log',
                 'train_batch.log'):
        shutil.copy(result / name, resumed / name)
    launch(['--nproc_per_node', '2'], ROOT / 'main.py',
           data_args(data, resumed) + ['--n_epochs', '2', '--checkpoint', '1', '--distributed',
                                       '--resume_path', resumed],
           log_dir=tmp_path / 'log')
    expected = paddle.load(str(result / 'save_2.pdparams'))
    actual = paddle.load(str(resumed / 'save_2.pdparams'))
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name].numpy(), value.numpy(), rtol=1e-6, atol=1e-7,
                                   err_msg=name)
    assert read_log(resumed / 'train.log') == read_log(result / 'train.log')


def test_two_nodes_on_localhost_finish_an_epoch(data, tmp_path):
    master = f'127.0.0.1:{free_port()}'
    args = data_args(data, tmp_path / 'result') + ['--n_epochs', '1', '--distributed',
                                                   '--world_size', '2']
    nodes = [launch(['--nnodes', '2', '--master', master, '--rank', str(rank),
                     '--nproc_per_node', '1'], ROOT / 'main.py', args,
                    log_dir=tmp_path / f'log{rank}', wait=False) for rank in (0, 1)]
    outputs = [finish(node, tmp_path / f'log{rank}') for rank, node in enumerate(nodes)]
    assert '2 processes, batch 4 each' in outputs[0]
    assert [r['epoch'] for r in read_log(tmp_path / 'result' / 'train.log')] == ['1']


def test_interrupted_launch_leaves_a_resume_hint_and_no_traceback(data, tmp_path):
    result, log_dir = tmp_path / 'result', tmp_path / 'log'
    process = launch(['--nproc_per_node', '2'], ROOT / 'main.py',
                     data_args(data, result) + ['--n_epochs', '1000', '--checkpoint', '1',
                                                '--distributed'],
                     log_dir=log_dir, wait=False)
    deadline = time.time() + 120
    while not (result / 'save_1.pdopt').exists() and time.time() < deadline:
        assert process.poll() is None, finish(process, log_dir)
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)  # Ctrl-C: launch sends SIGTERM to its processes
    process.communicate(timeout=60)
    time.sleep(2)  # launch does not wait for the last lines of its processes
    logs = [(log_dir / f'workerlog.{rank}').read_text() for rank in (0, 1)]
    assert 'interrupted by SIGTERM; resume from save_' in logs[0]
    for log in logs:
        assert 'Traceback' not in log
    assert complete_checkpoints(result)


def test_lost_peers_are_told_from_other_errors():
    assert distributed.is_lost_peer(
        RuntimeError('[/paddle/third_party/gloo/gloo/transport/tcp/pair.cc'
                     ':584] TIMEOUT self_rank = 1 pair_rank = 0'))
    assert distributed.is_lost_peer(
        RuntimeError('NCCL error in: all_reduce, remote process exited'))
    assert not distributed.is_lost_peer(RuntimeError('shape mismatch: [8, 3] vs [8, 4]'))
    assert not distributed.is_lost_peer(ValueError('gloo'))


def test_the_stop_check_of_a_data_parallel_run_is_one_all_reduce_per_read_interval(monkeypatch):
    # the processes agree on stopping with an all-reduce and a read from the GPU: as the training
    # loop reads its figures, before every READ_INTERVAL-th batch and at the end
    monkeypatch.setattr(paddle.device, 'get_device', lambda: 'gpu:0')
    monkeypatch.setattr(paddle.distributed, 'get_world_size', lambda *args: 2)
    batches = list(range(2 * READ_INTERVAL + 5))
    yielded, reduced_after = [], []
    peer_signalled_in = len(batches)  # the batch during which the other process is signalled

    def all_reduce(tensor, op=None, *args, **kwargs):  # the other process's signal: SIGTERM
        reduced_after.append(len(yielded))
        if len(yielded) > peer_signalled_in:
            paddle.assign(paddle.full_like(tensor, int(signal.SIGTERM)), tensor)
    monkeypatch.setattr(paddle.distributed, 'all_reduce', all_reduce)
    reads = count_host_reads(monkeypatch)
    with StopSignals(repeat_raises=False) as stop:
        for batch in stop.watch(batches, together=True):
            yielded.append(batch)
    assert yielded == batches
    assert reduced_after == [0, READ_INTERVAL, 2 * READ_INTERVAL, len(batches)]
    assert reads == ['numpy'] * 4
    # the other process signalled during batch 12: both stop before batch 20
    yielded, peer_signalled_in = [], 12
    with StopSignals(repeat_raises=False) as stop, pytest.raises(Interrupted) as stopped:
        for batch in stop.watch(batches, together=True):
            yielded.append(batch)
    assert yielded == list(range(2 * READ_INTERVAL)) and stopped.value.signum == signal.SIGTERM


# --- options, without launching ---------------------------------------------------------------

def opt_for(tmp_path, *args):
    return parse_opts(['--video_path', str(tmp_path), '--annotation_path', 'a.json',
                            '--result_path', str(tmp_path / 'out'), *args])


def test_launch_command_maps_dist_url_and_world_size(tmp_path):
    opt = opt_for(tmp_path, '--distributed', '--world_size', '2', '--dist_url',
                  'tcp://10.1.2.3:23456')
    command = distributed.launch_command(opt, ['--distributed', '--world_size', '2'], n_gpus=4,
                                  environ={'OMPI_COMM_WORLD_RANK': '1'})
    launch_args = command[command.index('paddle.distributed.launch') + 1:]
    assert launch_args[:2] == ['--nproc_per_node', '4']
    pairs = dict(zip(launch_args[::2], launch_args[1::2]))
    assert pairs['--nnodes'] == '2' and pairs['--master'] == '10.1.2.3:23456'
    assert pairs['--rank'] == '1'
    assert command[-4:] == [str(ROOT / 'main.py'), '--distributed', '--world_size', '2']
    single_node = distributed.launch_command(opt_for(tmp_path, '--distributed'), [], 2, environ={})
    assert '--nnodes' not in single_node and '--master' not in single_node


@pytest.mark.parametrize('args, n_gpus, message', [
    (['--distributed'], 0, 'python -m paddle.distributed.launch --nproc_per_node 2'),
    (['--distributed', '--world_size', '2', '--dist_url', 'env://'], 1,
     '--dist_url env://: expected tcp://host:port'),
])
def test_launch_command_refuses_what_it_cannot_map(tmp_path, args, n_gpus, message):
    with pytest.raises(UserError, match=message.replace('.', r'\.')):
        distributed.launch_command(opt_for(tmp_path, *args), args, n_gpus, environ={})


@pytest.mark.parametrize('args, environ, message', [
    ([], {'PADDLE_TRAINER_ID': '1', 'PADDLE_TRAINERS_NUM': '2'},
     'launch started 2 processes: add --distributed'),
    (['--distributed', '--world_size', '3'],
     {'PADDLE_TRAINER_ID': '0', 'PADDLE_TRAINERS_NUM': '2', 'PADDLE_NNODES': '2'},
     '--world_size 3, but paddle.distributed.launch started 2 node'),
])
def test_launched_processes_check_their_options(tmp_path, args, environ, message):
    with pytest.raises(UserError, match=message.replace('.', r'\.')):
        distributed.resolve_distributed(opt_for(tmp_path, *args), args, 'cpu', environ)


def test_launched_process_takes_its_rank_and_the_process_count(tmp_path):
    opt = opt_for(tmp_path, '--distributed')
    distributed.resolve_distributed(opt, [], 'cpu', {'PADDLE_TRAINER_ID': '3',
                                                     'PADDLE_TRAINERS_NUM': '4',
                                                     'PADDLE_NNODES': '2'})
    assert (opt.dist_rank, opt.world_size, opt.is_master_node) == (3, 4, False)
    assert launched_world({}) is None


@pytest.mark.parametrize('args, message', [
    (['--batchnorm_sync'], '--batchnorm_sync needs --distributed'),
    (['--amp', '--no_cuda'], '--amp float16 needs a GPU'),
])
def test_options_that_need_processes_or_a_gpu_are_refused(tmp_path, args, message):
    with pytest.raises(UserError, match=message):
        main.get_opt(['--video_path', str(tmp_path), '--annotation_path', 'a.json',
                      '--result_path', str(tmp_path / 'out'), *args])


def test_eval_shards_are_disjoint_unpadded_and_cover_the_set():
    shards = [list(distributed.RankShard(7, rank, 3)) for rank in range(3)]
    assert [len(s) for s in shards] == [3, 2, 2]
    assert sorted(sum(shards, [])) == list(range(7))


def test_processes_draw_different_crops_but_one_order():
    assert epoch_seed(1, 3, rank=0) != epoch_seed(1, 3, rank=1)
    seeds = {epoch_seed(1, epoch, rank) for epoch in range(1, 200) for rank in range(64)}
    assert len(seeds) == 199 * 64


def test_a_cpu_run_asks_for_gloo_whatever_launch_saw(monkeypatch):
    # launch sets PADDLE_DISTRI_BACKEND=gloo only when it sees no GPU; on a GPU machine with
    # --no_cuda, init_parallel_env would otherwise take NCCL and put the process on a GPU
    seen = []
    monkeypatch.setattr(paddle.distributed, 'init_parallel_env',
                        lambda: seen.append(environ.get('PADDLE_DISTRI_BACKEND')))
    environ = {'PADDLE_DISTRI_BACKEND': 'auto'}
    distributed.init_distributed('cpu', environ)
    assert seen == ['gloo'] and paddle.device.get_device() == 'cpu'
    environ = {}
    distributed.init_distributed('gpu', environ)
    assert seen == ['gloo', None]  # on GPU Paddle's own choice (NCCL) stands
