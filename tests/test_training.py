"""training.py and validation.py: the loss, mixed precision's choices, batched reads,
video accuracy."""
import importlib
import time

import numpy as np
import paddle
import pytest

import training
import utils
import validation
from datasets import videodataset_multiclips as multiclips
from conftest import count_host_reads
from distributed import all_sum
from models import onednn
from utils import UserError


def test_loss_is_not_clipped_and_has_cross_entropys_gradient():
    logits = paddle.to_tensor([[100.0, -100.0], [0.3, -0.2]], stop_gradient=False)
    targets = paddle.to_tensor([1, 0])
    loss = training.calculate_loss(logits, targets)
    # -log softmax: 200 for the confident wrong row (Paddle's cross_entropy gives 64 there)
    expected = (200.0 + np.log1p(np.exp(-0.5))) / 2
    assert abs(float(loss) - expected) < 1e-4
    loss.backward()
    shifted = np.exp(logits.numpy() - logits.numpy().max(1, keepdims=True))
    probs = shifted / shifted.sum(1, keepdims=True)
    np.testing.assert_allclose(logits.grad.numpy(), (probs - np.eye(2)[[1, 0]]) / 2, atol=1e-6)


def test_amp_puts_the_3d_convolutions_on_the_half_precision_list(monkeypatch):
    # auto_cast switches itself off on CPU: check what it is asked for, and what Paddle's own
    # list logic makes of it (without our list, conv3d is on neither list and stays float32)
    update_list = importlib.import_module('paddle.amp.auto_cast')._update_list
    for dtype in ('float16', 'bfloat16'):
        default_white, _ = update_list(None, None, 'O1', dtype)
        assert 'conv3d' not in default_white
        calls = []
        monkeypatch.setattr(paddle.device, 'get_device', lambda: 'gpu:0')
        monkeypatch.setattr(paddle.amp, 'auto_cast', lambda **kwargs: calls.append(kwargs))
        training.autocast(dtype)
        white, black = update_list(calls[0]['custom_white_list'], None, calls[0]['level'],
                                   calls[0]['dtype'])
        assert 'conv3d' in white and calls[0]['dtype'] == dtype
        assert 'batch_norm' not in white and 'softmax_with_cross_entropy' in black


def test_half_precision_below_auto_casts_compute_capability_is_refused_with_one_line(
        monkeypatch):
    # a GPU of capability 6.1: is_float16_supported says yes (it does from 5.3), auto_cast
    # switches itself off (below 7.0)
    monkeypatch.setattr(paddle, 'is_compiled_with_rocm', lambda: False)
    monkeypatch.setattr(paddle.device.cuda, 'get_device_capability', lambda device=None: (6, 1))
    with pytest.raises(UserError, match=r'--amp float16: .* compute capability 6\.1'):
        training.check_amp('float16', 'gpu')
    monkeypatch.setattr(paddle.device.cuda, 'get_device_capability', lambda device=None: (7, 0))
    training.check_amp('float16', 'gpu')  # a capable GPU: accepted
    # bfloat16 from 8.0 (Ampere), as auto_cast tests it
    with pytest.raises(UserError, match=r'--amp bfloat16: .* compute capability 7\.0; .* 8\.0'):
        training.check_amp('bfloat16', 'gpu')
    monkeypatch.setattr(paddle.device.cuda, 'get_device_capability', lambda device=None: (8, 0))
    training.check_amp('bfloat16', 'gpu')
    with pytest.raises(UserError, match='--amp float16 needs a GPU'):
        training.check_amp('float16', 'cpu')


def test_bfloat16_on_a_cpu_without_it_is_refused_with_one_line(monkeypatch):
    monkeypatch.setattr(onednn, 'bfloat16_supported', lambda: False)
    with pytest.raises(UserError, match='--amp bfloat16: this CPU has no bfloat16 instructions'):
        training.check_amp('bfloat16', 'cpu')
    monkeypatch.setattr(onednn, 'bfloat16_supported', lambda: True)
    training.check_amp('bfloat16', 'cpu')


def test_bfloat16_on_cpu_runs_the_convolutions_in_bfloat16(monkeypatch):
    if not onednn.bfloat16_supported():
        pytest.skip('this CPU has no bfloat16 instructions (avx512_bf16 or amx_bf16)')
    paddle.set_device('cpu')
    conv = onednn.Conv3D(3, 8, 3, padding=1)
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal([2, 3, 4, 8, 8]), 'float32')
    exact = conv(x).numpy()
    with training.autocast('bfloat16'):
        rounded = conv(x)
    assert rounded.dtype == paddle.float32  # what Paddle sees stays float32
    error = np.abs(rounded.numpy() - exact).max() / np.abs(exact).max()
    assert 1e-6 < error < 2e-2  # bfloat16's rounding shows; float32 would be ~1e-7


class Recorder:
    def __init__(self):
        self.rows = []

    def log(self, row):
        self.rows.append(dict(row))


def test_batch_log_rows_are_those_of_each_step_though_read_in_intervals(monkeypatch):
    paddle.seed(0)
    rng = np.random.default_rng(0)
    batches = [(paddle.to_tensor(rng.normal(size=(3, 4)).astype('float32')),
                paddle.to_tensor(rng.integers(0, 2, size=3)))
               for _ in range(utils.READ_INTERVAL + 3)]

    def run(device):
        paddle.seed(1)
        model = paddle.nn.Linear(4, 2)
        optimizer = paddle.optimizer.SGD(0.1, parameters=model.parameters())
        batch_log, epoch_log = Recorder(), Recorder()
        monkeypatch.setattr(paddle.device, 'get_device', lambda: device)  # the default interval
        all_sums = []  # of a data-parallel run: an all-reduce each
        monkeypatch.setattr(training, 'all_sum',
                            lambda values: all_sums.append(values) or all_sum(values))
        reads = count_host_reads(monkeypatch)
        result = training.train_epoch(1, batches, model, optimizer, 0.1, epoch_log, batch_log)
        monkeypatch.undo()
        return batch_log.rows, epoch_log.rows, result[:2], len(reads), len(all_sums)

    stepwise, read_in_intervals = run('cpu'), run('gpu:0')
    # on a GPU one read and one all-reduce per READ_INTERVAL batches, the last ones at the end
    assert stepwise[3:] == (len(batches), len(batches))
    assert read_in_intervals[3:] == (2, 2)
    assert len(stepwise[0]) == len(batches)
    for a, b in zip(stepwise[0], read_in_intervals[0]):
        assert a.keys() == b.keys() and a['batch'] == b['batch']
        assert a['loss'] == pytest.approx(b['loss'], rel=1e-6) and a['acc'] == b['acc']
        assert 0 <= a['data_time'] <= a['batch_time']
    assert stepwise[2] == pytest.approx(read_in_intervals[2], rel=1e-6)
    # the rows hold each batch's own loss, not a running mean
    losses = [row['loss'] for row in stepwise[0]]
    assert len(set(np.round(losses, 6))) > 1


def test_video_accuracy_averages_each_videos_clip_scores():
    # video 0: two clips, one confidently wrong, one mildly right -> wrong on average;
    # video 1: one clip, right; video 2: three clips, two right
    logits = paddle.to_tensor([[5.0, 0.0], [0.0, 0.5],
                               [0.0, 3.0],
                               [2.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    targets = paddle.to_tensor([1, 1, 1, 0, 0, 0])
    correct, videos = validation.video_correct(logits, targets, [2, 1, 3])
    assert float(videos) == 3 and float(correct) == 2


def test_val_epoch_reports_clip_and_video_accuracy():
    model = paddle.nn.Linear(2, 2)
    model.weight.set_value(np.eye(2, dtype='float32'))
    model.bias.set_value(np.zeros(2, 'float32'))
    batch = (paddle.to_tensor([[5.0, 0.0], [0.0, 0.5], [0.0, 3.0]]), paddle.to_tensor([1, 1, 1]),
             [2, 1])
    log = Recorder()
    loss, clip_acc, video_acc, _ = validation.val_epoch(1, [batch], model, log)
    assert clip_acc == pytest.approx(2 / 3) and video_acc == 0.5
    assert log.rows == [{'epoch': 1, 'loss': loss, 'acc': clip_acc, 'video_acc': video_acc}]


class MultiClipVideos(paddle.io.Dataset):
    """Video i: i % 3 + 1 clips [1, 2], labelled i % 2 (VideoDatasetMultiClips' samples)."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        n = i % 3 + 1
        return [np.full([1, 2], i, 'float32')] * n, [i % 2] * n


@pytest.mark.parametrize('workers', [0, 2])
def test_clip_counts_stay_a_list_of_ints_on_the_host(workers):
    # an array would become a tensor on the device, read back for every batch
    loader = paddle.io.DataLoader(MultiClipVideos(), batch_size=2, num_workers=workers,
                                  collate_fn=validation.with_clip_counts(multiclips.collate_fn))
    counts = [batch[2] for batch in loader]
    assert [type(c) for c in counts] == [list, list]
    assert counts == [[1, 2], [3, 1]] and {type(c) for batch in counts for c in batch} == {int}


class SlowLoader:
    """Batches that each take `seconds` to load."""

    def __init__(self, batches, seconds):
        self.batches, self.seconds = batches, seconds

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            time.sleep(self.seconds)
            yield batch


def test_waiting_for_data_is_logged_per_batch_and_summed_per_epoch():
    x = paddle.ones([2, 4])
    loader = SlowLoader([(x, paddle.to_tensor([0, 1]))] * 3, seconds=0.05)
    model = paddle.nn.Linear(4, 2)
    log = Recorder()
    result = training.train_epoch(1, loader, model,
                                  paddle.optimizer.SGD(0.1, parameters=model.parameters()), 0.1,
                                  batch_logger=log)
    assert [row['data_time'] >= 0.05 for row in log.rows] == [True] * 3
    assert all(row['batch_time'] >= row['data_time'] for row in log.rows)
    assert 0.15 <= result.data_seconds <= result.seconds


def test_the_wait_for_the_device_is_the_time_of_the_batches_read_not_data_time(monkeypatch):
    # a GPU's figures read every READ_INTERVAL batches: the read waits for the device, here a
    # slow all-reduce; that wait belongs to the last batch read, not to the next one's data wait
    rng = np.random.default_rng(0)
    batches = [(paddle.to_tensor(rng.normal(size=(2, 4)).astype('float32')),
                paddle.to_tensor(rng.integers(0, 2, size=2)))
               for _ in range(2 * utils.READ_INTERVAL)]
    model = paddle.nn.Linear(4, 2)
    optimizer = paddle.optimizer.SGD(0.1, parameters=model.parameters())
    monkeypatch.setattr(paddle.device, 'get_device', lambda: 'gpu:0')
    monkeypatch.setattr(training, 'all_sum', lambda values: time.sleep(0.3) or values)
    batch_log = Recorder()
    training.train_epoch(1, batches, model, optimizer, 0.1, None, batch_log)
    rows = batch_log.rows
    assert max(row['data_time'] for row in rows) < 0.25
    read_at = [row['batch'] for row in rows if row['batch_time'] >= 0.3]
    assert read_at == [utils.READ_INTERVAL, 2 * utils.READ_INTERVAL]
