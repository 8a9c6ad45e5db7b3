"""main.py under faults: kills, interrupts, full or read-only result folders, bad frames."""
import collections
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paddle
import pytest

import main
from checkpoints import load_checkpoint
from conftest import ROOT, make_motion_dataset, read_log
from utils import UserError

TINY = ['--dataset', 'ucf101', '--n_classes', '2', '--model_depth', '10',
        '--resnet_widen_factor', '0.25', '--sample_size', '32', '--sample_duration', '8',
        '--batch_size', '4', '--learning_rate', '0.01', '--n_val_samples', '1',
        '--manual_seed', '7']
N_EPOCHS = 6
BATCHES_PER_EPOCH = 2  # 8 training videos, batch 4

# main.py with paddle.save slowed down after the .pdparams of a checkpoint: the test kills the run
# while a checkpoint is half written.
SLOW_CHECKPOINT = '''
import sys, time
import main
save = main.paddle.save
def slow_save(obj, path, *args, **kwargs):
    save(obj, path, *args, **kwargs)
    if path.endswith('.pdparams.tmp'):
        time.sleep(120)
main.paddle.save = slow_save
main.run_cli(lambda: main.main(sys.argv[1:]))
'''


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """(video_path, annotation_path): 8 training and 4 validation videos of 8 frames."""
    return make_motion_dataset(tmp_path_factory.mktemp('fault'), n_train=4, n_val=2,
                               n_frames=8)


def data_args(data, result_path):
    video_path, annotation_path = data
    return ['--video_path', str(video_path), '--annotation_path', str(annotation_path),
            '--result_path', str(result_path), *TINY]


def start(args, code=None, **kwargs):
    command = [sys.executable, '-c', code] if code else [sys.executable, 'main.py']
    return subprocess.Popen(command + args, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def finish(process, timeout=120):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def logged_iters(result_path) -> int:
    """The last `iter` of train_batch.log (0 while there is none)."""
    try:
        rows = read_log(result_path / 'train_batch.log')
    except (OSError, KeyError, ValueError):
        return 0
    return max((int(r['iter']) for r in rows if r.get('iter')), default=0)


def wait_for(condition, process, timeout=90):
    end = time.time() + timeout
    while not condition():
        assert process.poll() is None, finish(process)
        assert time.time() < end, 'timed out'
        time.sleep(0.005)


def kill_after_iter(args, result_path, iteration):
    """Run main.py and SIGKILL it once train_batch.log reaches `iteration`."""
    process = start(args)
    wait_for(lambda: logged_iters(result_path) >= iteration, process)
    process.kill()
    assert finish(process)[0] == -signal.SIGKILL


def test_runs_killed_at_random_moments_resume_to_the_uninterrupted_result(data, tmp_path):
    full, killed = tmp_path / 'full', tmp_path / 'killed'
    train = ['--n_epochs', str(N_EPOCHS), '--checkpoint', '1', '--n_threads', '0',
             '--multistep_milestones', '3']  # the lr drops at epoch 4: the scheduler is resumed
    reference = start(data_args(data, full) + train)
    resume = data_args(data, killed) + train + ['--resume_path', str(killed)]

    rng = random.Random(0)
    first = rng.randint(BATCHES_PER_EPOCH + 1, 3 * BATCHES_PER_EPOCH)  # in epoch 2 or 3
    kill_after_iter(data_args(data, killed) + train, killed, first)

    # second kill: while the first checkpoint of the resumed run is half written
    epoch = load_checkpoint(killed, 'resnet-10').state['epoch'] + 1
    process = start(resume, code=SLOW_CHECKPOINT)
    half_written = killed / f'save_{epoch}.pdparams.tmp'
    wait_for(half_written.exists, process)
    process.kill()
    assert finish(process)[0] == -signal.SIGKILL
    assert half_written.exists() and not (killed / f'save_{epoch}.pdopt').exists()

    third = rng.randint(epoch * BATCHES_PER_EPOCH + 1, N_EPOCHS * BATCHES_PER_EPOCH - 1)
    kill_after_iter(resume, killed, third)

    returncode, out, err = finish(start(resume))
    assert returncode == 0, err
    assert re.search(r'resuming from .*save_\d\.pdparams at epoch \d', out)
    assert finish(reference)[0] == 0

    assert not list(killed.glob('*.tmp'))
    a = paddle.load(str(full / f'save_{N_EPOCHS}.pdparams'))
    b = paddle.load(str(killed / f'save_{N_EPOCHS}.pdparams'))
    for key in a:
        np.testing.assert_array_equal(b[key].numpy(), a[key].numpy(), err_msg=key)
    for log in ('train.log', 'val.log'):
        assert [r['epoch'] for r in read_log(killed / log)] == [str(e) for e in
                                                               range(1, N_EPOCHS + 1)]
        assert read_log(killed / log) == read_log(full / log)
    timing = ('data_time', 'batch_time')  # seconds: of each run its own
    assert ([{k: v for k, v in row.items() if k not in timing}
             for row in read_log(killed / 'train_batch.log')]
            == [{k: v for k, v in row.items() if k not in timing}
                for row in read_log(full / 'train_batch.log')])
    assert (paddle.load(str(killed / f'save_{N_EPOCHS}.pdopt'))['best']
            == paddle.load(str(full / f'save_{N_EPOCHS}.pdopt'))['best'])


@pytest.mark.parametrize('signum, whole_group', [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_interrupt_stops_with_the_checkpoint_to_resume_from(data, tmp_path, signum, whole_group):
    process = start(data_args(data, tmp_path) + ['--n_epochs', '100', '--checkpoint', '1',
                                                 '--n_threads', '2'], start_new_session=True)
    wait_for(lambda: logged_iters(tmp_path) >= BATCHES_PER_EPOCH + 1, process)  # in epoch 2
    if whole_group:  # as Ctrl-C does: the loader's workers get it too
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    returncode, out, err = finish(process, timeout=60)

    assert returncode == 128 + signum
    assert 'Traceback' not in err
    last = err.strip().splitlines()[-1].split('\r')[-1]
    name = signal.Signals(signum).name
    match = re.fullmatch(rf'interrupted by {name}; resume from (save_(\d+)\.pdparams) with '
                         rf'--resume_path {re.escape(str(tmp_path))}', last)
    assert match, last
    epochs = [int(p.stem.split('_')[1]) for p in tmp_path.glob('save_*.pdopt')]
    assert int(match.group(2)) == max(epochs)
    checkpoint = load_checkpoint(tmp_path / match.group(1), 'resnet-10')
    assert checkpoint.state['epoch'] == max(epochs) and 'fc.weight' in checkpoint.weights
    assert not list(tmp_path.glob('*.tmp'))
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # no worker process left behind
        os.killpg(process.pid, 0)


def test_unfinished_checkpoint_files_are_removed_before_training(data, tmp_path, capsys):
    (tmp_path / 'save_3.pdparams.tmp').write_bytes(b'half')
    main.main(data_args(data, tmp_path) + ['--n_epochs', '1', '--checkpoint', '1',
                                           '--n_threads', '0', '--no_val'])
    assert 'removed save_3.pdparams.tmp: unfinished checkpoint files' in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.glob('save_*')) == ['save_1.pdopt', 'save_1.pdparams']


def test_too_little_free_space_stops_before_training(data, tmp_path, monkeypatch):
    usage = collections.namedtuple('usage', 'total used free')
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: usage(2**30, 2**30 - 2**20, 2**20))
    with pytest.raises(UserError, match=r'has 1 MB free; a checkpoint needs about 1\d MB'):
        main.main(data_args(data, tmp_path) + ['--n_epochs', '1', '--n_threads', '0'])
    assert not (tmp_path / 'train.log').exists()


@pytest.mark.skipif(not os.path.isdir('/sys'), reason='needs Linux sysfs')
def test_unwritable_result_folder_is_one_line(data):
    # sysfs: a folder in which nobody, root included, can create a file
    with pytest.raises(UserError, match='cannot write to --result_path /sys: .*Permission denied'):
        main.main(data_args(data, Path('/sys')) + ['--n_epochs', '1'])


@pytest.fixture
def bad_data(data, tmp_path):
    """The fault data set with a corrupt frame, a missing frame and a video without frames."""
    video_path, annotation_path = data
    broken = tmp_path / 'jpg'
    shutil.copytree(video_path, broken)
    corrupt = broken / 'up' / 'v_up_t01' / 'image_00004.jpg'
    corrupt.write_bytes(b'not a jpeg')
    missing = broken / 'down' / 'v_down_t02' / 'image_00005.jpg'
    missing.unlink()
    for frame in (broken / 'up' / 'v_up_t02').iterdir():  # the next video, v_up_t03, is intact
        frame.unlink()
    return (broken, annotation_path), corrupt, missing


def test_bad_frames_are_replaced_warned_once_and_counted_every_epoch(bad_data, tmp_path):
    data, corrupt, missing = bad_data
    process = start(data_args(data, tmp_path / 'out') + ['--n_epochs', '2', '--n_threads', '2',
                                                         '--checkpoint', '2'])
    returncode, out, err = finish(process)
    assert returncode == 0, err
    warnings = [line.split('\r')[-1] for line in err.splitlines() if 'warning: ' in line]
    warnings = [w[w.index('warning: '):] for w in warnings]
    assert len(warnings) == 3, warnings  # once per video over 2 epochs and 2 workers
    assert any(f'cannot read frame {corrupt}: not an image' in w for w in warnings)
    assert any(f'frame {missing} is missing' in w for w in warnings)
    assert any('video v_up_t02 is skipped, the next video takes its place: no readable frame'
               in w for w in warnings)
    summaries = [line for line in out.splitlines() if line.startswith('epoch ')]
    assert len(summaries) == 2
    for line in summaries:
        assert re.search(r'train .*\(\d+ s, waiting for data \d+ s, bad frames replaced: 2, videos '
                         r'skipped: 1\)  val', line)


def test_strict_data_stops_at_the_first_bad_frame_with_one_line(bad_data, tmp_path):
    data, corrupt, missing = bad_data
    returncode, out, err = finish(start(data_args(data, tmp_path) + [
        '--n_epochs', '1', '--n_threads', '2', '--strict_data']))
    assert returncode == 1
    assert 'Traceback' not in err and 'warning' not in err
    last = err.strip().splitlines()[-1].split('\r')[-1]
    assert re.fullmatch(rf'error: (cannot read frame {corrupt}: not an image, or corrupt|frame '
                        rf'({missing}|.*v_up_t02/image_\d+.jpg) is missing)', last), last


def test_loader_memory_benchmark_prints_the_peaks_of_five_epochs(capsys):
    from util_scripts import benchmark
    benchmark.main(['--jobs', 'loader_memory', '--quick'])
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if 'RSS MB, main process' in line)
    cells = [cell.strip() for cell in row.strip('|').split('|')]
    peaks = [float(cell) for cell in cells[1:6]]
    assert all(peak > 0 for peak in peaks)
    assert peaks[4] < 1.05 * peaks[1]  # no growth from epoch 2 to 5
