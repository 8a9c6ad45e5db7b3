"""model.py: generate_model, pretrained weights (both formats, error cases),
fine-tuning selection."""
import pickle
from argparse import Namespace

import numpy as np
import paddle
import pytest

from conftest import count_host_reads
from model import generate_model, get_fine_tuning_parameters, load_pretrained_model
from models import resnet
from utils import UserError


def opt(**kwargs):
    base = dict(model='resnet', model_depth=10, n_classes=5, n_input_channels=3,
                resnet_shortcut='B', conv1_t_size=7, conv1_t_stride=1, no_max_pool=False,
                resnet_widen_factor=0.25, wide_resnet_k=2, resnext_cardinality=32)
    base.update(kwargs)
    return Namespace(**base)


def random_state(model, seed=0):
    """The model's state dict with every tensor (BN statistics too) set to random values."""
    rng = np.random.default_rng(seed)
    return {k: (rng.random(v.shape) + 0.5).astype('float32') for k, v in model.state_dict().items()}


def test_generate_model_reads_the_options():
    model = generate_model(opt(model_depth=18, n_classes=9, conv1_t_size=3))
    assert model.fc.weight.shape == [128, 9]
    assert model.conv1.weight.shape == [16, 3, 3, 7, 7]
    assert len(model.layer1) == 2
    with pytest.raises(UserError, match='--model_depth 11'):
        generate_model(opt(model_depth=11))


@pytest.mark.parametrize('fmt', ['paddle', 'paddle18'])
def test_pretrained_weights_load_and_fc_is_replaced(tmp_path, fmt):
    source = generate_model(opt(n_classes=7))
    state = random_state(source)
    if fmt == 'paddle':
        paddle.save({k: paddle.to_tensor(v) for k, v in state.items()},
                    str(tmp_path / 'pretrain.pdparams'))
    else:  # Paddle 1.8 save_dygraph: a pickle of arrays plus the name table
        table = {k: f'param_{i}' for i, k in enumerate(state)}
        with open(tmp_path / 'pretrain.pdparams', 'wb') as f:
            pickle.dump({**state, 'StructuredToParameterName@@': table}, f, protocol=2)

    model = generate_model(opt(n_classes=7))
    # the seed's spelling: no extension
    model = load_pretrained_model(model, tmp_path / 'pretrain', 'resnet', 3)
    loaded = model.state_dict()
    for key in ('conv1.weight', 'layer1.0.bn1._mean', 'layer1.0.bn1._variance',
                'layer4.0.downsample.0.weight'):
        np.testing.assert_array_equal(loaded[key].numpy(), state[key])
    assert model.fc.weight.shape == [128, 3] and model.fc.bias.shape == [3]
    assert model(paddle.randn([1, 3, 4, 16, 16])).shape == [1, 3]


def test_wrong_n_pretrain_classes_is_named(tmp_path):
    paddle.save(generate_model(opt(n_classes=7)).state_dict(), str(tmp_path / 'w.pdparams'))
    with pytest.raises(UserError, match=r'--n_pretrain_classes 5 does not fit .*7 outputs'):
        load_pretrained_model(generate_model(opt(n_classes=5)), tmp_path / 'w.pdparams',
                              'resnet', 3)


def test_missing_unexpected_and_misshapen_keys_are_listed(tmp_path):
    state = generate_model(opt()).state_dict()
    state = {k: v.numpy() for k, v in state.items()}
    del state['layer2.0.bn1._mean']
    state['extra.weight'] = np.zeros(3, 'float32')
    state['layer3.0.conv1.weight'] = np.zeros((1, 1, 1, 1, 1), 'float32')
    paddle.save(state, str(tmp_path / 'w.pdparams'))
    with pytest.raises(UserError) as e:
        load_pretrained_model(generate_model(opt()), tmp_path / 'w.pdparams', 'resnet', 3)
    message = str(e.value)
    assert 'missing: layer2.0.bn1._mean' in message
    assert 'unexpected: extra.weight' in message
    assert 'layer3.0.conv1.weight: file [1, 1, 1, 1, 1] vs model [64, 32, 3, 3, 3]' in message


def test_weights_of_another_architecture_are_refused(tmp_path):
    paddle.save(resnet.generate_model(18, n_classes=5, widen_factor=0.25).state_dict(),
                str(tmp_path / 'r18.pdparams'))
    with pytest.raises(UserError, match='unexpected: layer1.1.conv1.weight'):
        load_pretrained_model(generate_model(opt()), tmp_path / 'r18', 'resnet', 3)


def test_missing_file_and_pytorch_file_get_clear_errors(tmp_path):
    with pytest.raises(UserError, match='weights file not found'):
        load_pretrained_model(generate_model(opt()), tmp_path / 'nope', 'resnet', 3)
    (tmp_path / 'r3d50_KM_200ep.pth').write_bytes(b'PK')
    with pytest.raises(UserError, match='convert_pytorch_weights'):
        load_pretrained_model(generate_model(opt()), tmp_path / 'r3d50_KM_200ep.pth', 'resnet', 3)


def param_names(model, parameters):
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for p in parameters]


def test_fine_tuning_parameters_start_at_the_module_and_freeze_the_rest():
    model = generate_model(opt())
    everything = get_fine_tuning_parameters(model, '')
    assert len(everything) == len([p for p in model.parameters() if not p.stop_gradient])
    assert not any(n.endswith(('_mean', '_variance')) for n in param_names(model, everything))
    chosen = get_fine_tuning_parameters(model, 'layer4')
    chosen_names = param_names(model, chosen)
    assert chosen_names[0].startswith('layer4.') and chosen_names[-1] == 'fc.bias'
    assert all(n.startswith(('layer4.', 'fc.')) for n in chosen_names)
    frozen = [n for n, p in model.named_parameters()
              if p.stop_gradient and not n.endswith(('_mean', '_variance'))]
    assert 'conv1.weight' in frozen and 'layer3.0.bn2.bias' in frozen
    assert not any(n.startswith(('layer4.', 'fc.')) for n in frozen)
    with pytest.raises(UserError, match="'layer9' is not a module.*layer4, fc"):
        get_fine_tuning_parameters(generate_model(opt()), 'layer9')


@pytest.mark.parametrize('name, depth', [('resnet2p1d', 10), ('preresnet', 10),
                                         ('wideresnet', 50), ('resnext', 50), ('densenet', 121)])
def test_every_family_is_reachable_from_the_options(name, depth):
    model = generate_model(opt(model=name, model_depth=depth, wide_resnet_k=1,
                               resnext_cardinality=8))
    model.eval()
    assert model(paddle.randn([1, 3, 4, 16, 16])).shape == [1, 5]


def test_densenet_gets_a_new_classifier(tmp_path):
    source = generate_model(opt(model='densenet', model_depth=121, n_classes=7))
    paddle.save(source.state_dict(), str(tmp_path / 'd.pdparams'))
    model = load_pretrained_model(generate_model(opt(model='densenet', model_depth=121,
                                                     n_classes=7)),
                                  tmp_path / 'd.pdparams', 'densenet', 3)
    assert model.classifier.weight.shape[1] == 3
    chosen = param_names(model, get_fine_tuning_parameters(model, 'denseblock4'))
    assert chosen[0].startswith('features.denseblock4.') and chosen[-1] == 'classifier.bias'


def test_the_running_variance_is_corrected_on_the_device(monkeypatch):
    # Paddle 2.6's set_value(tensor) went through NumPy: a GPU sync per BatchNorm layer and step
    model = generate_model(opt())
    model.train()
    x = paddle.randn([2, 3, 2, 8, 8])
    bn = model.bn1
    before = bn._variance.numpy()
    reads = count_host_reads(monkeypatch)
    loss = model(x).mean()
    loss.backward()  # batch_norm's backward accepts how the running variance was changed
    assert reads == []
    monkeypatch.undo()
    # bn1's running variance tracks the unbiased batch variance of conv1's output, as PyTorch's
    h = model.conv1(x).numpy()  # [N, C, T, H, W]
    expected = bn._momentum * before + (1 - bn._momentum) * h.var(axis=(0, 2, 3, 4), ddof=1)
    np.testing.assert_allclose(bn._variance.numpy(), expected, rtol=1e-5)  # biased: 1e-4 off
