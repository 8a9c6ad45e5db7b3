"""util_scripts.remove_dataparallel on checkpoints saved as the reference saves them."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from util_scripts.remove_dataparallel import main
from utils import UserError

TORCH_MISSING = 'rewriting .pth files needs PyTorch: pip install torch==2.13.0'


@pytest.fixture(scope='module')
def torch():
    return pytest.importorskip('torch', reason=TORCH_MISSING)


def small_model(torch):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.BatchNorm3d(4),
                               torch.nn.Flatten(), torch.nn.Linear(4, 2))


@pytest.fixture
def reference_checkpoint(torch, tmp_path):
    """save_N.pth of a model trained under DataParallel, as the reference's main.py writes it:
    epoch, arch, state_dict, optimizer and scheduler states."""
    model = torch.nn.DataParallel(small_model(torch))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 3, 3, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [50, 100])
    path = tmp_path / 'save_3.pth'
    torch.save({'epoch': 3, 'arch': 'resnet-10', 'state_dict': model.state_dict(),
                'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict()}, path)
    return path


UNWRAPPED_KEYS = ['0.weight', '0.bias', '1.weight', '1.bias', '1.running_mean', '1.running_var',
                  '1.num_batches_tracked', '3.weight', '3.bias']


def test_a_dataparallel_checkpoint_loads_into_the_plain_model(torch, reference_checkpoint,
                                                              tmp_path, capsys):
    original = reference_checkpoint.read_bytes()
    dst = tmp_path / 'out' / 'plain.pth'
    assert main([str(reference_checkpoint), str(dst)]) == 9
    assert f"'module.' stripped from 9 keys -> {dst}" in capsys.readouterr().out
    assert reference_checkpoint.read_bytes() == original  # SRC untouched

    before = torch.load(reference_checkpoint, weights_only=True)
    after = torch.load(dst, weights_only=True)
    assert list(before['state_dict'])[0] == 'module.0.weight'
    assert list(after['state_dict']) == UNWRAPPED_KEYS
    for key in UNWRAPPED_KEYS:
        assert torch.equal(after['state_dict'][key], before['state_dict'][f'module.{key}'])
    assert (after['epoch'], after['arch']) == (3, 'resnet-10')
    assert after['scheduler']['milestones'] == before['scheduler']['milestones']
    assert torch.equal(after['optimizer']['state'][0]['momentum_buffer'],
                       before['optimizer']['state'][0]['momentum_buffer'])
    small_model(torch).load_state_dict(after['state_dict'])  # strict: every key fits


def test_without_dst_the_file_is_rewritten_in_place(torch, reference_checkpoint):
    main([str(reference_checkpoint)])
    assert list(torch.load(reference_checkpoint, weights_only=True)['state_dict']) == \
        UNWRAPPED_KEYS
    assert not list(reference_checkpoint.parent.glob('*.tmp'))


def test_reference_spelling_through_the_module(torch, reference_checkpoint, tmp_path):
    dst = tmp_path / 'plain.pth'
    run = subprocess.run([sys.executable, '-m', 'util_scripts.remove_dataparallel',
                          str(reference_checkpoint), '--dst_file_path', str(dst)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert list(torch.load(dst, weights_only=True)['state_dict']) == UNWRAPPED_KEYS


def test_only_the_module_prefix_is_cut(torch, tmp_path):
    """A bare state dict; the reference would have cut 'fc.' and 'bn.' off as well."""
    src = tmp_path / 'bare.pth'
    torch.save({'module.conv.weight': torch.ones(2), 'fc.weight': torch.zeros(3),
                'bn.module.bias': torch.full([1], 7.0)}, src)
    assert main([str(src), str(tmp_path / 'out.pth')]) == 1
    after = torch.load(tmp_path / 'out.pth', weights_only=True)
    assert list(after) == ['conv.weight', 'fc.weight', 'bn.module.bias']
    assert after['bn.module.bias'].item() == 7


def test_a_checkpoint_without_the_prefix_is_left_alone(torch, tmp_path, capsys):
    src = tmp_path / 'plain.pth'
    torch.save({'epoch': 1, 'state_dict': small_model(torch).state_dict()}, src)
    original, mtime = src.read_bytes(), src.stat().st_mtime_ns
    assert main([str(src)]) == 0
    assert 'no key starts with' in capsys.readouterr().out
    assert src.read_bytes() == original and src.stat().st_mtime_ns == mtime
    assert main([str(src), str(tmp_path / 'copy.pth')]) == 0
    assert (tmp_path / 'copy.pth').read_bytes() == original


def test_a_paddle_state_dict_is_rewritten_with_paddle(tmp_path):
    import paddle
    src = tmp_path / 'wrapped.pdparams'
    paddle.save({'module.fc.weight': paddle.to_tensor([[1.0, 2.0]]),
                 'module.fc.bias': paddle.to_tensor([3.0])}, str(src))
    assert main([str(src), str(tmp_path / 'plain.pdparams')]) == 2
    after = paddle.load(str(tmp_path / 'plain.pdparams'))
    assert sorted(after) == ['fc.bias', 'fc.weight']
    np.testing.assert_array_equal(after['fc.weight'].numpy(), [[1.0, 2.0]])


def test_mistakes_are_user_errors(torch, tmp_path, monkeypatch):
    with pytest.raises(UserError, match='missing.pth not found'):
        main([str(tmp_path / 'missing.pth')])
    text = tmp_path / 'notes.pth'
    text.write_text('not a checkpoint')
    with pytest.raises(UserError, match='notes.pth cannot be read as a PyTorch checkpoint'):
        main([str(text)])
    both = tmp_path / 'both.pth'
    torch.save({'module.w': torch.ones(1), 'w': torch.zeros(1)}, both)
    with pytest.raises(UserError, match="both module.w and w are in the state dict"):
        main([str(both), str(tmp_path / 'out.pth')])
    listed = tmp_path / 'list.pth'
    torch.save([torch.ones(1)], listed)
    with pytest.raises(UserError, match='neither a state dict nor a checkpoint'):
        main([str(listed)])
    monkeypatch.setitem(sys.modules, 'torch', None)  # as if PyTorch were not installed
    with pytest.raises(UserError, match='needs PyTorch: pip install torch'):
        main([str(both)])


def test_an_unreadable_file_ends_in_one_line(torch, tmp_path):
    text = tmp_path / 'notes.pth'
    text.write_text('not a checkpoint')
    run = subprocess.run([sys.executable, '-m', 'util_scripts.remove_dataparallel', str(text),
                          str(tmp_path / 'out.pth')], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), run.stderr
    assert 'notes.pth' in lines[0]
    assert not (tmp_path / 'out.pth').exists()
