"""Parity with the reference: PyTorch models of its layout (tests/torch_reference.py), saved as the
reference saves checkpoints, converted by util_scripts.convert_pytorch_weights and loaded into our
models, give the same logits. Also the converter's error messages and its PyTorch-free reader."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from conftest import relative
from models import densenet, pre_act_resnet, resnet, resnet2p1d, resnext, wide_resnet
from util_scripts import convert_pytorch_weights as convert
from utils import UserError

REPO = Path(__file__).resolve().parents[1]
TORCH_MISSING = 'parity tests need PyTorch: pip install torch==2.13.0'
MODULES = {'resnet': resnet, 'resnet2p1d': resnet2p1d, 'preresnet': pre_act_resnet,
           'wideresnet': wide_resnet, 'resnext': resnext, 'densenet': densenet}
# keyword of generate_model -> converter option
FLAGS = {'shortcut_type': '--resnet_shortcut', 'widen_factor': '--resnet_widen_factor',
         'k': '--wide_resnet_k', 'cardinality': '--resnext_cardinality',
         'conv1_t_size': '--conv1_t_size', 'conv1_t_stride': '--conv1_t_stride',
         'n_input_channels': '--n_input_channels'}
N_CLASSES = 7
BRANCH_SCALE = 0.2  # of the last BN of each residual branch, see reference_model

# (model, depth, options): every depth of the reference. Most ResNet-like models are built narrow
# (widen_factor scales every stage alike) to keep the test fast; one model per family (and
# resnet-50, the layout of most pretrained models) keeps the reference's full width. DenseNet
# cannot be narrowed: its input is just tiny.
CASES = [
    ('resnet', 10, {}),
    ('resnet', 18, {'shortcut_type': 'A', 'widen_factor': 0.25}),
    ('resnet', 34, {'widen_factor': 0.25, 'conv1_t_size': 3, 'conv1_t_stride': 2}),
    ('resnet', 50, {}),
    ('resnet', 101, {'widen_factor': 0.25}),
    ('resnet', 152, {'widen_factor': 0.25}),
    ('resnet', 200, {'widen_factor': 0.25, 'shortcut_type': 'A'}),
    ('resnet2p1d', 10, {}),
    ('resnet2p1d', 18, {'widen_factor': 0.25, 'n_input_channels': 2}),
    ('resnet2p1d', 34, {'widen_factor': 0.25, 'conv1_t_size': 5, 'no_max_pool': True}),
    ('resnet2p1d', 50, {'widen_factor': 0.25}),
    ('resnet2p1d', 101, {'widen_factor': 0.25}),
    ('resnet2p1d', 152, {'widen_factor': 0.25}),
    ('resnet2p1d', 200, {'widen_factor': 0.25}),
    ('preresnet', 10, {}),
    ('preresnet', 18, {'widen_factor': 0.25}),
    ('preresnet', 34, {'widen_factor': 0.25, 'shortcut_type': 'A'}),
    ('preresnet', 50, {'widen_factor': 0.25}),
    ('preresnet', 101, {'widen_factor': 0.25}),
    ('preresnet', 152, {'widen_factor': 0.25}),
    ('preresnet', 200, {'widen_factor': 0.25}),
    ('wideresnet', 50, {'k': 1}),
    ('wideresnet', 101, {'k': 2, 'widen_factor': 0.125}),
    ('wideresnet', 152, {'k': 2, 'widen_factor': 0.125}),
    ('wideresnet', 200, {'k': 3, 'widen_factor': 0.125}),
    ('resnext', 50, {}),
    ('resnext', 101, {'widen_factor': 0.5, 'cardinality': 8}),
    ('resnext', 152, {'widen_factor': 0.5, 'cardinality': 8}),
    ('resnext', 200, {'widen_factor': 0.5, 'cardinality': 16}),
    ('densenet', 121, {}),
    ('densenet', 169, {}),
    ('densenet', 201, {'no_max_pool': True}),
    ('densenet', 264, {}),
]


@pytest.fixture
def torch():
    torch = pytest.importorskip('torch', reason=TORCH_MISSING)
    # for inputs this small, more threads only wait on each other (10x slower on a busy machine)
    torch.set_num_threads(1)
    return torch


def input_shape(model: str, opts: dict):
    """Smallest input [N, C, T, H, W] that keeps T and H at >= 1 down to the last stage."""
    channels = opts.get('n_input_channels', 3)
    t = 16 if model == 'densenet' and not opts.get('no_max_pool') else 8
    return [1, channels, t * opts.get('conv1_t_stride', 1), 32, 32]


def reference_model(torch, model: str, depth: int, opts: dict, shape):
    """A PyTorch model of the reference's layout with random weights and BN statistics in eval mode.

    BN statistics are those of a random batch, perturbed: activations stay of order 1 even through
    200 layers, so that every statistic shows in the logits. A random network whose residual
    branches are as strong as the identity is chaotic: rounding differences (1e-7 per block)
    grow by some 10% per block, to 1e-3 after 66 blocks in float32 (while float64 agrees to 1e-8).
    So the last BN of each branch is scaled down, as in trained networks, keeping the gain near 1.
    """
    import torch_reference
    torch.manual_seed(depth)
    net = torch_reference.build(model, depth, n_classes=N_CLASSES, **opts)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    with torch.no_grad():
        for bn in norms:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
            bn.momentum = 1.0  # running statistics := those of the next batch
        for block in net.modules():
            if isinstance(block, torch_reference.Block):
                last_bn = block.pairs[-1][1]
                last_bn.weight.mul_(BRANCH_SCALE)
                last_bn.bias.mul_(BRANCH_SCALE)
        net.train()
        net(torch.randn([8] + shape[1:]))
        for bn in norms:
            # a variance measured on a few values can be tiny: it would amplify rounding errors
            var = bn.running_var.clamp(min=bn.running_var.mean().item())
            bn.running_var.copy_(var * torch.empty_like(var).uniform_(0.7, 1.4))
            bn.running_mean.add_(0.1 * torch.randn_like(var) * var.sqrt())
    return net.eval()


def save_checkpoint(torch, net, path: Path, arch: str, legacy=False, data_parallel=False,
                    optimizer=None):
    """Save `net` as the reference's `save_checkpoint` does (optionally wrapped in DataParallel)."""
    optimizer = optimizer or torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [50, 100, 150])
    state_dict = (torch.nn.DataParallel(net) if data_parallel else net).state_dict()
    torch.save({'epoch': 1, 'arch': arch, 'state_dict': state_dict,
                'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict()},
               path, _use_new_zipfile_serialization=not legacy)


def converter_args(opts: dict):
    args = []
    for key, value in opts.items():
        args += [f'--{key}'] if key == 'no_max_pool' else [FLAGS[key], str(value)]
    return args


def check_parity(torch, tmp_path, model, depth, opts, legacy=False, data_parallel=False):
    shape = input_shape(model, opts)
    net = reference_model(torch, model, depth, opts, shape)
    x = np.random.default_rng(depth).standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    src, dst = tmp_path / 'save_1.pth', tmp_path / 'save_1.pdparams'
    save_checkpoint(torch, net, src, f'{model}-{depth}', legacy, data_parallel)
    convert.main([str(src), str(dst)] + converter_args(opts))

    ours = MODULES[model].generate_model(depth, n_classes=N_CLASSES, **opts)
    missing, unexpected = ours.set_state_dict(paddle.load(str(dst)))
    assert not missing and not unexpected
    # same parameters in the same order as the reference (--ft_begin_module relies on the order)
    reference_names = [convert.paddle_name(k) for k in net.state_dict()]
    assert [n for n in reference_names if n] == list(ours.state_dict())
    ours.eval()
    logits = ours(paddle.to_tensor(x)).numpy()
    assert logits.shape == (1, N_CLASSES)
    assert np.abs(expected).max() > 1e-3  # the comparison below is not of zeros
    difference = relative(logits, expected)
    print(f'{model}-{depth} {opts}: max relative difference {difference:.2e}')
    assert difference < 1e-4


@pytest.mark.parametrize('model, depth, opts', CASES,
                         ids=[f'{m}-{d}' for m, d, _ in CASES])
def test_parity(torch, tmp_path, model, depth, opts):
    check_parity(torch, tmp_path, model, depth, opts)


def test_parity_legacy_format_and_data_parallel_prefix(torch, tmp_path):
    check_parity(torch, tmp_path, 'resnet', 18, {'widen_factor': 0.25}, legacy=True,
                 data_parallel=True)


def test_every_reference_depth_is_covered():
    covered = {(m, d) for m, d, _ in CASES}
    for model, module in MODULES.items():
        assert {(model, d) for d in module.DEPTHS} <= covered


def test_converter_reads_both_formats_without_torch(torch, tmp_path):
    net = reference_model(torch, 'resnet', 10, {'widen_factor': 0.125}, [1, 3, 8, 32, 32])
    # one training step, so that the optimizer's state holds tensors too
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    net.train()
    net(torch.randn(2, 3, 8, 32, 32)).square().sum().backward()
    optimizer.step()
    net.eval()
    for legacy in (False, True):
        save_checkpoint(torch, net, tmp_path / f'legacy{legacy}.pth', 'resnet-10', legacy,
                        data_parallel=legacy, optimizer=optimizer)
    # torch made unimportable; each conversion runs as `python -m util_scripts...` would
    script = ('import runpy, sys\n'
              "sys.modules['torch'] = None\n"
              'for legacy in (False, True):\n'
              f"    d = {str(tmp_path)!r}\n"
              "    sys.argv = ['convert', f'{d}/legacy{legacy}.pth',\n"
              "                f'{d}/legacy{legacy}.pdparams', '--resnet_widen_factor', '0.125']\n"
              "    runpy.run_module('util_scripts.convert_pytorch_weights', run_name='__main__')\n"
              "print('torch' in sys.modules and sys.modules['torch'] is None)\n")
    result = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('62 tensors written') == 2
    assert result.stdout.strip().endswith('True')
    for legacy in (False, True):
        state = paddle.load(str(tmp_path / f'legacy{legacy}.pdparams'))
        np.testing.assert_array_equal(state['fc.weight'].numpy(), net.fc.weight.detach().numpy().T)
        np.testing.assert_array_equal(state['layer4.0.conv2.weight'].numpy(),
                                      net.layer4[0].conv2.weight.detach().numpy())
        np.testing.assert_array_equal(state['layer1.0.bn1._variance'].numpy(),
                                      net.layer1[0].bn1.running_var.numpy())
        assert 'layer1.0.bn1.num_batches_tracked' not in state


def test_converter_cli_prints_one_error_line(torch, tmp_path):
    src = tmp_path / 'bad.pth'
    torch.save({'arch': 'foonet-50', 'state_dict': {}}, src)
    result = subprocess.run([sys.executable, '-m', 'util_scripts.convert_pytorch_weights',
                             str(src), str(tmp_path / 'out.pdparams')],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith('error: ')
    assert "unknown arch 'foonet-50'" in result.stderr


def small_checkpoint(torch, tmp_path, state_dict_edit=None, arch='resnet-10'):
    import torch_reference
    net = torch_reference.build('resnet', 10, widen_factor=0.125, n_classes=N_CLASSES)
    state_dict = net.state_dict()
    if state_dict_edit:
        state_dict_edit(state_dict)
    src = tmp_path / 'small.pth'
    torch.save({'epoch': 1, 'arch': arch, 'state_dict': state_dict}, src)
    return [str(src), str(tmp_path / 'small.pdparams'), '--resnet_widen_factor', '0.125']


def test_converter_rejects_unknown_arch(torch, tmp_path):
    args = small_checkpoint(torch, tmp_path, arch='resnet-11')
    with pytest.raises(UserError, match='resnet depth must be one of'):
        convert.main(args)
    args = small_checkpoint(torch, tmp_path, arch='vgg-16')
    with pytest.raises(UserError, match="unknown arch 'vgg-16'.*--model and --model_depth"):
        convert.main(args)
    convert.main(args + ['--model', 'resnet', '--model_depth', '10'])  # the override works


def test_converter_lists_missing_unexpected_and_misshapen_tensors(torch, tmp_path):
    def edit(state_dict):
        del state_dict['layer2.0.bn1.running_var']
        del state_dict['fc.bias']
        state_dict['layer3.0.conv1.weight'] = torch.zeros(1, 2, 3)
        state_dict['extra.weight'] = torch.zeros(3)

    args = small_checkpoint(torch, tmp_path, edit)
    with pytest.raises(UserError) as error:
        convert.main(args)
    message = str(error.value)
    assert 'missing: layer2.0.bn1._variance, fc.bias' in message
    assert 'unexpected: extra.weight' in message
    assert 'wrong shape: layer3.0.conv1.weight [1, 2, 3] (model: [32, 16, 3, 3, 3])' in message
    assert '\n' not in message
    assert not Path(args[1]).exists()


def test_converter_needs_arch_or_model_options(torch, tmp_path):
    src = tmp_path / 'bare.pth'
    import torch_reference
    torch.save(torch_reference.build('densenet', 121, n_classes=3).state_dict(), src)
    with pytest.raises(UserError, match='no "arch": pass --model and --model_depth'):
        convert.main([str(src), str(tmp_path / 'out.pdparams')])
    convert.main([str(src), str(tmp_path / 'out.pdparams'), '--model', 'densenet',
                  '--model_depth', '121'])
    assert paddle.load(str(tmp_path / 'out.pdparams'))['classifier.weight'].shape == [1024, 3]


@pytest.mark.parametrize('content', [b'', b'not a checkpoint\n', b'PK\x03\x04garbage'])
def test_converter_rejects_files_that_are_not_checkpoints(tmp_path, content):
    src = tmp_path / 'video.avi'
    src.write_bytes(content)
    with pytest.raises(UserError, match='video.avi'):
        convert.main([str(src), str(tmp_path / 'out.pdparams')])


def test_converter_rejects_a_paddle_state_dict(tmp_path):
    src = tmp_path / 'model.pdparams'
    paddle.save(resnet.generate_model(10, widen_factor=0.125).state_dict(), str(src))
    with pytest.raises(UserError, match='not a PyTorch checkpoint'):
        convert.main([str(src), str(tmp_path / 'out.pdparams')])


def test_converter_rejects_a_missing_file(tmp_path):
    with pytest.raises(UserError, match='does not exist'):
        convert.main([str(tmp_path / 'nothing.pth'), str(tmp_path / 'out.pdparams')])


def test_paddle_names_of_reference_tensors():
    assert convert.paddle_name('layer1.0.bn1.running_mean') == 'layer1.0.bn1._mean'
    assert convert.paddle_name('features.norm5.running_var') == 'features.norm5._variance'
    assert convert.paddle_name('bn1.num_batches_tracked') is None
    assert convert.paddle_name('fc.weight') == 'fc.weight'


def test_batch_norm_running_statistics_follow_the_reference_through_training(torch, tmp_path):
    # R3D-18 from the same weights, 3 SGD steps on the same batches: the running means and
    # variances are PyTorch's (which tracks the unbiased batch variance; Paddle, the biased one).
    # A network at its random initialisation has ill-conditioned gradients (PyTorch's float32
    # and float64 gradients differ by ~1%): a tiny learning rate keeps that out of the weights,
    # so that what is compared is the running statistics' update over the steps.
    from model import track_unbiased_variance
    shape = [4, 3, 16, 64, 64]
    opts = {'widen_factor': 0.25}
    torch.manual_seed(0)
    import torch_reference
    net = torch_reference.build('resnet', 18, n_classes=N_CLASSES, **opts)
    src, dst = tmp_path / 'save_1.pth', tmp_path / 'save_1.pdparams'
    save_checkpoint(torch, net, src, 'resnet-18')
    convert.main([str(src), str(dst)] + converter_args(opts))
    ours = track_unbiased_variance(resnet.generate_model(18, n_classes=N_CLASSES, **opts))
    ours.set_state_dict(paddle.load(str(dst)))
    untracked = resnet.generate_model(18, n_classes=N_CLASSES, **opts)  # Paddle's own BN
    untracked.set_state_dict(paddle.load(str(dst)))

    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal(shape).astype(np.float32),
                rng.integers(0, N_CLASSES, size=shape[0])) for _ in range(3)]
    torch_sgd = torch.optim.SGD(net.parameters(), lr=1e-6)
    net.train()
    for x, y in batches:
        torch_sgd.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        torch_sgd.step()
    for model in (ours, untracked):
        sgd = paddle.optimizer.SGD(1e-6, parameters=model.parameters())
        model.train()
        for x, y in batches:
            sgd.clear_grad()
            paddle.nn.functional.cross_entropy(model(paddle.to_tensor(x)),
                                               paddle.to_tensor(y)).backward()
            sgd.step()

    reference = {convert.paddle_name(k): v.numpy() for k, v in net.state_dict().items()}
    ours_state, untracked_state = ours.state_dict(), untracked.state_dict()
    variances = [k for k in ours_state if k.endswith('_variance')]
    assert len(variances) == 20  # every BN of R3D-18
    worst, untracked_worst = 0.0, 0.0
    for key in variances + [k.replace('_variance', '_mean') for k in variances]:
        worst = max(worst, relative(ours_state[key].numpy(), reference[key]))
        untracked_worst = max(untracked_worst,
                              relative(untracked_state[key].numpy(), reference[key]))
    print(f'running statistics: max relative difference {worst:.2e} '
          f'(Paddle BN without the correction: {untracked_worst:.2e})')
    assert worst < 1e-5
    assert untracked_worst > 1e-4  # the correction is what brings them together
