"""checkpoints.py: atomic writes, damaged files detected and skipped, training state restored."""
import os
import random
import warnings

import numpy as np
import paddle
import pytest

from checkpoints import (CHECKPOINT_FORMAT, get_rng_state, load_checkpoint,
                         restore_training_state, resume_hint, save_checkpoint, set_rng_state,
                         state_digest)
from model import load_state_dict
from utils import BestScores, UserError


def test_resume_hint_says_when_there_is_no_checkpoint(tmp_path):
    assert resume_hint(tmp_path) == f'no complete checkpoint in {tmp_path} to resume from'


class TinyState:
    """Stand-ins for the model, optimizer and scheduler of save_checkpoint."""

    def __init__(self, value):
        self.model = paddle.nn.Linear(2, 2)
        self.model.weight.set_value(np.full([2, 2], value, 'float32'))
        self.optimizer = paddle.optimizer.Momentum(0.1, parameters=self.model.parameters())
        self.scheduler = paddle.optimizer.lr.MultiStepDecay(0.1, [10])

    def save(self, result_path, epoch):
        save_checkpoint(result_path, epoch, 'tiny', self.model, self.optimizer,
                             self.scheduler, BestScores())


def test_checkpoint_cut_between_its_renames_is_never_paired_with_an_older_write(tmp_path,
                                                                             monkeypatch):
    TinyState(1.0).save(tmp_path, 1)
    TinyState(2.0).save(tmp_path, 2)
    replace, renamed = os.replace, []

    def stop_after_one_rename(source, target):
        if renamed:
            raise KeyboardInterrupt
        renamed.append(target)
        replace(source, target)

    monkeypatch.setattr(os, 'replace', stop_after_one_rename)
    with pytest.raises(KeyboardInterrupt):
        TinyState(3.0).save(tmp_path, 2)
    assert [p.name for p in renamed] == ['save_2.pdparams']
    with pytest.warns(UserWarning, match='skipping save_2 .* one of its two files'):
        assert load_checkpoint(tmp_path, 'tiny').path.name == 'save_1.pdparams'
    assert not list(tmp_path.glob('*.tmp'))


def test_full_disk_while_writing_a_checkpoint_is_one_line_and_keeps_the_older(tmp_path,
                                                                             monkeypatch):
    TinyState(1.0).save(tmp_path, 1)
    save = paddle.save

    def save_until_full(obj, path, *args, **kwargs):
        save(obj, path, *args, **kwargs)
        if path.endswith('.pdopt.tmp'):
            raise OSError(28, 'No space left on device')

    monkeypatch.setattr(paddle, 'save', save_until_full)
    with pytest.raises(UserError, match=r'cannot write checkpoint .*save_2.pdparams: .*No space '
                                        r'left on device; resume from save_1.pdparams with '):
        TinyState(2.0).save(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['save_1.pdopt', 'save_1.pdparams']
    checkpoint = load_checkpoint(tmp_path, 'tiny')
    assert checkpoint.state['epoch'] == 1 and float(checkpoint.weights['weight'][0, 0]) == 1.0


def test_checkpoint_keeps_best_scores_and_generator_states(tmp_path):
    tiny = TinyState(1.0)
    best = BestScores()
    best.update(1, loss=0.5, acc=0.7)
    best.update(2, loss=0.4, acc=0.6)
    paddle.seed(5)
    save_checkpoint(tmp_path, 2, 'tiny', tiny.model, tiny.optimizer, tiny.scheduler, best)
    expected = [random.random(), np.random.rand(), paddle.rand([1]).item()]
    state = paddle.load(str(tmp_path / 'save_2.pdopt'))
    assert BestScores(**state['best']) == BestScores(acc=0.7, acc_epoch=1, loss=0.4,
                                                     loss_epoch=2)
    assert str(best) == 'best val acc 0.700 (epoch 1), lowest val loss 0.4000 (epoch 2)'
    set_rng_state(state['rng'])
    assert [random.random(), np.random.rand(), paddle.rand([1]).item()] == expected




def truncate(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def empty(path):
    path.write_bytes(b'')


def flip_a_bit_of_the_weights_checksum(path):
    """A flip in a .pdopt that leaves it readable: in the recorded SHA-256 of the weights."""
    digest = paddle.load(str(path))['weights_sha256'].encode()
    data = bytearray(path.read_bytes())
    data[data.index(digest)] ^= 0x01
    path.write_bytes(bytes(data))


def rename_the_state_checksum(path):
    """A flip in the name of the key 'state_sha256': a .pdopt as of a version without it."""
    path.write_bytes(path.read_bytes().replace(b'state_sha256', b'state_sha257'))


def rename_the_format(path):
    """A flip in the name of the key 'format': a .pdopt with a key of no known format."""
    path.write_bytes(path.read_bytes().replace(b'format', b'formau'))


DAMAGES = {
    'truncated weights': ('pdparams', truncate, r'save_2.pdparams is damaged'),
    'bit-flipped weights': ('pdparams', flip_a_bit, r'save_2.pdparams is damaged: its contents '
                                                    r'do not match the checksum'),
    'empty weights': ('pdparams', empty, r'save_2.pdparams is damaged: empty'),
    'truncated state': ('pdopt', truncate, r'save_2.pdopt is damaged: unreadable'),
    'empty state': ('pdopt', empty, r'save_2.pdopt is damaged: empty'),
    'bit-flipped state': ('pdopt', flip_a_bit_of_the_weights_checksum,
                          r'save_2.pdopt is damaged: its contents do not match their checksum'),
    'renamed state checksum': ('pdopt', rename_the_state_checksum,
                               r'save_2.pdopt is damaged: its contents do not match'),
    'state without weights': ('pdparams', os.remove, r'save_2.pdparams is missing'),
    'renamed format': ('pdopt', rename_the_format,
                       r'save_2.pdopt is damaged: its contents do not match'),
}


@pytest.mark.parametrize('damage', DAMAGES)
def test_a_damaged_checkpoint_given_by_name_is_one_line(tmp_path, damage):
    suffix, spoil, message = DAMAGES[damage]
    TinyState(2.0).save(tmp_path, 2)
    spoil(tmp_path / f'save_2.{suffix}')
    with pytest.raises(UserError, match=r'^--resume_path: .*' + message):
        load_checkpoint(tmp_path / 'save_2.pdparams', 'tiny')


@pytest.mark.parametrize('damage', DAMAGES)
def test_a_damaged_newest_checkpoint_in_a_folder_is_skipped_with_a_warning(tmp_path, damage):
    suffix, spoil, _ = DAMAGES[damage]
    TinyState(1.0).save(tmp_path, 1)
    TinyState(2.0).save(tmp_path, 2)
    spoil(tmp_path / f'save_2.{suffix}')
    with pytest.warns(UserWarning, match=r'--resume_path: skipping save_2'):
        checkpoint = load_checkpoint(tmp_path, 'tiny')
    assert checkpoint.path.name == 'save_1.pdparams'
    assert float(checkpoint.weights['weight'][0, 0]) == 1.0


def test_a_folder_without_an_intact_checkpoint_is_one_line(tmp_path):
    TinyState(1.0).save(tmp_path, 1)
    flip_a_bit(tmp_path / 'save_1.pdparams')
    with pytest.warns(UserWarning), pytest.raises(UserError, match='no intact checkpoint'):
        load_checkpoint(tmp_path, 'tiny')


def test_checkpoint_of_another_architecture_is_one_line(tmp_path):
    TinyState(1.0).save(tmp_path, 1)
    with pytest.raises(UserError, match='was saved by tiny, but the model is resnet-18'):
        load_checkpoint(tmp_path, 'resnet-18')


def test_paddle_random_state_of_another_device_count_is_restored_where_it_matches():
    # a run saved on 2 devices, resumed on this one (the CPU has one generator; 8 GPUs -> 1 GPU
    # is the same mismatch): set_rng_state would raise, restore_training_state warns once
    paddle.seed(11)
    state = get_rng_state()
    expected = paddle.rand([3]).numpy()
    state['paddle'] = list(state['paddle']) * 2
    paddle.seed(99)
    with pytest.warns(UserWarning, match=r'of 2 cpu device\(s\), this run has 1: restored for '
                                         r'the first 1'):
        set_rng_state(state)
    np.testing.assert_array_equal(paddle.rand([3]).numpy(), expected)


def test_paddle_random_state_of_another_device_kind_is_skipped_with_a_warning():
    paddle.seed(3)
    state = dict(get_rng_state(), paddle_device='gpu')
    expected = paddle.rand([2]).numpy()
    paddle.seed(3)
    with pytest.warns(UserWarning, match=r'of 1 gpu device\(s\), this run is on cpu: not '
                                         r'restored'):
        set_rng_state(state)
    np.testing.assert_array_equal(paddle.rand([2]).numpy(), expected)  # left as it was


def test_restore_training_state_puts_back_optimizer_scheduler_and_best(tmp_path):
    saved = TinyState(1.0)
    saved.model(paddle.ones([1, 2])).sum().backward()
    saved.optimizer.step()  # a momentum buffer to restore
    saved.scheduler.step()
    best = BestScores()
    best.update(1, loss=0.3, acc=0.9)
    save_checkpoint(tmp_path, 1, 'tiny', saved.model, saved.optimizer, saved.scheduler, best)

    fresh = TinyState(0.0)  # a new process: other unique parameter names
    checkpoint = load_checkpoint(tmp_path, 'tiny')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        restored = restore_training_state(checkpoint, fresh.model, fresh.optimizer,
                                          fresh.scheduler, milestones=[20])
    assert restored == best
    np.testing.assert_array_equal(fresh.model.weight.numpy(), saved.model.weight.numpy())
    assert fresh.scheduler.last_epoch == saved.scheduler.last_epoch
    assert fresh.scheduler.milestones == [20]
    saved_velocity = [v.numpy() for k, v in saved.optimizer.state_dict().items()
                      if 'velocity' in k]
    fresh_velocity = [v.numpy() for k, v in fresh.optimizer.state_dict().items()
                      if 'velocity' in k]
    assert len(saved_velocity) == 2 and np.any(saved_velocity[0] != 0)
    for a, b in zip(saved_velocity, fresh_velocity):
        np.testing.assert_array_equal(a, b)
    assert restore_training_state(None, fresh.model) == BestScores()


@pytest.mark.parametrize('damage', ['bit-flipped weights', 'truncated weights', 'empty weights'])
def test_a_damaged_checkpoint_given_as_pretrained_weights_is_one_line(tmp_path, damage):
    _, spoil, _ = DAMAGES[damage]
    TinyState(2.0).save(tmp_path, 2)
    spoil(tmp_path / 'save_2.pdparams')
    # the checksum recorded in save_2.pdopt finds a flip that paddle.load would take as weights
    with pytest.raises(UserError, match=r'save_2.pdparams is damaged: its contents do not match '
                                        r'the checksum recorded in save_2.pdopt'):
        load_state_dict(tmp_path / 'save_2.pdparams')


def test_pretrained_weights_load_without_a_pdopt_and_beside_an_unreadable_one(tmp_path):
    TinyState(2.0).save(tmp_path, 2)
    (tmp_path / 'save_2.pdopt').write_bytes(b'not a checkpoint')
    assert float(load_state_dict(tmp_path / 'save_2.pdparams')['weight'][0, 0]) == 2.0
    (tmp_path / 'save_2.pdopt').unlink()
    assert float(load_state_dict(tmp_path / 'save_2.pdparams')['weight'][0, 0]) == 2.0


def stepped(value):
    """A TinyState after a step: momentum buffers and a scheduler step in its checkpoint."""
    state = TinyState(value)
    state.model(paddle.ones([1, 2])).sum().backward()
    state.optimizer.step()
    state.scheduler.step()
    return state


def test_a_checkpoint_of_a_version_without_checksums_loads(tmp_path):
    tiny = stepped(2.0)
    tiny.save(tmp_path, 2)
    state = paddle.load(str(tmp_path / 'save_2.pdopt'))
    del state['weights_sha256'], state['state_sha256']
    paddle.save(state, str(tmp_path / 'save_2.pdopt'))
    checkpoint = load_checkpoint(tmp_path, 'tiny')
    assert checkpoint.state['epoch'] == 2
    np.testing.assert_array_equal(checkpoint.weights['weight'].numpy(), tiny.model.weight.numpy())


def test_pretrained_weights_beside_a_damaged_pdopt_are_judged_by_themselves(tmp_path):
    tiny = stepped(2.0)
    tiny.save(tmp_path, 2)
    flip_a_bit_of_the_weights_checksum(tmp_path / 'save_2.pdopt')  # the weights are intact
    np.testing.assert_array_equal(load_state_dict(tmp_path / 'save_2.pdparams')['weight'],
                                  tiny.model.weight.numpy())


def rewrite_state(path, change):
    state = paddle.load(str(path))
    change(state)
    paddle.save(state, str(path))


def as_of_a_newer_version(state):
    """A .pdopt of the next format, with a key this version does not know; its checksum as this
    version would not compute it."""
    state.update(format=CHECKPOINT_FORMAT + 1, ema_weights={'weight': [1.0]})
    state['state_sha256'] = 'computed otherwise'


def test_checkpoints_record_their_format(tmp_path):
    TinyState(1.0).save(tmp_path, 1)
    assert load_checkpoint(tmp_path, 'tiny').state['format'] == CHECKPOINT_FORMAT


def test_a_checkpoint_of_a_newer_version_says_so_rather_than_damaged(tmp_path):
    TinyState(1.0).save(tmp_path, 1)
    TinyState(2.0).save(tmp_path, 2)
    rewrite_state(tmp_path / 'save_2.pdopt', as_of_a_newer_version)
    newer = (r'^--resume_path: .*save_2.pdopt was written by a newer version of this toolkit '
             rf'\(checkpoint format {CHECKPOINT_FORMAT + 1}; this version reads up to '
             rf'{CHECKPOINT_FORMAT}\)')
    with pytest.raises(UserError, match=newer):
        load_checkpoint(tmp_path / 'save_2.pdparams', 'tiny')
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # not skipped for save_1 as if it were damaged
        with pytest.raises(UserError, match=newer):
            load_checkpoint(tmp_path, 'tiny')
    # as pretrained weights, they load: the .pdopt's checksums are not this version's to read
    np.testing.assert_array_equal(load_state_dict(tmp_path / 'save_2.pdparams')['weight'],
                                  np.full([2, 2], 2.0, 'float32'))


def test_a_checkpoint_of_a_version_before_formats_loads(tmp_path):
    TinyState(1.0).save(tmp_path, 1)

    def without_format(state):
        del state['format']
        state['state_sha256'] = state_digest(state)
    rewrite_state(tmp_path / 'save_1.pdopt', without_format)
    assert load_checkpoint(tmp_path, 'tiny').state['epoch'] == 1
