"""models/: shapes, parameter names, options and initialisation of every family (no PyTorch
needed; parity with the reference is in test_parity_pytorch.py)."""
import numpy as np
import paddle
import pytest

from models import densenet, pre_act_resnet, resnet, resnet2p1d, resnext, wide_resnet

N_CLASSES = 5
# family module -> options that keep the model small for the shape test
SMALL = {
    resnet: {'widen_factor': 0.125},
    resnet2p1d: {'widen_factor': 0.125},
    pre_act_resnet: {'widen_factor': 0.125},
    wide_resnet: {'k': 1, 'widen_factor': 0.125},
    resnext: {'widen_factor': 0.25},  # every group needs >= 1 channel: planes >= 32
    densenet: {},
}
CASES = [(module, depth) for module in SMALL for depth in module.DEPTHS]


def shapes(model) -> dict:
    return {name: list(tensor.shape) for name, tensor in model.state_dict().items()}


def full_size(module, depth: int, **kwargs):
    """The model at the reference's width, parameters not allocated (names and shapes only)."""
    with paddle.LazyGuard():
        return module.generate_model(depth, n_classes=N_CLASSES, **kwargs)


@pytest.mark.parametrize('module, depth', CASES,
                         ids=[f'{m.__name__.split(".")[-1]}-{d}' for m, d in CASES])
def test_output_shape_for_every_depth(module, depth):
    paddle.seed(0)
    model = module.generate_model(depth, n_classes=N_CLASSES, **SMALL[module])
    model.eval()
    # DenseNet halves T five times (max-pool and three transitions): T >= 16
    frames = 16 if module is densenet else 8
    logits = model(paddle.randn([2, 3, frames, 32, 32]))
    assert logits.shape == [2, N_CLASSES]
    assert bool(paddle.isfinite(logits).all())


@pytest.mark.parametrize('module', list(SMALL), ids=lambda m: m.__name__.split('.')[-1])
def test_unknown_depth_is_rejected(module):
    with pytest.raises(ValueError, match='depth must be one of'):
        module.generate_model(11, n_classes=N_CLASSES, **SMALL[module])


def test_resnet_parameter_names_follow_the_reference():
    names = set(resnet.generate_model(50, n_classes=7).state_dict())
    for name in ['conv1.weight', 'bn1.weight', 'bn1._mean', 'bn1._variance',
                 'layer1.0.conv3.weight', 'layer1.0.downsample.0.weight',
                 'layer1.0.downsample.1.bias', 'layer4.2.bn3.weight', 'fc.weight', 'fc.bias']:
        assert name in names
    # ResNet-50: the stem, 16 blocks of 3 convolutions and 4 downsampling convolutions
    convs = [n for n in names if n.endswith(('conv1.weight', 'conv2.weight', 'conv3.weight',
                                             'downsample.0.weight'))]
    assert len(convs) == 1 + 16 * 3 + 4


def test_shortcut_a_has_no_downsample_parameters_and_pads_channels():
    model = resnet.generate_model(18, n_classes=2, shortcut_type='A')
    assert not any('downsample' in name for name in model.state_dict())
    x = paddle.arange(2 * 3 * 2 * 4 * 4, dtype='float32').reshape([2, 3, 2, 4, 4])
    out = resnet.downsample_basic_block(x, planes=5, stride=2)
    assert out.shape == [2, 5, 1, 2, 2]
    np.testing.assert_array_equal(out[:, :3].numpy(), x[:, :, ::2, ::2, ::2].numpy())
    assert float(out[:, 3:].abs().sum()) == 0


def test_resnet_conv1_options_no_max_pool_widen_and_input_channels():
    model = resnet.generate_model(10, n_classes=4, conv1_t_size=3, conv1_t_stride=2,
                                  n_input_channels=2, widen_factor=0.5)
    assert model.conv1.weight.shape == [32, 2, 3, 7, 7]
    assert model.fc.weight.shape == [256, 4]
    assert model.conv1._stride == [2, 2, 2]
    x = paddle.randn([1, 2, 8, 32, 32])
    pooled = resnet.generate_model(10, n_classes=4, n_input_channels=2)
    unpooled = resnet.generate_model(10, n_classes=4, n_input_channels=2, no_max_pool=True)
    stem = lambda m: m.relu(m.bn1(m.conv1(x)))  # noqa: E731
    assert stem(pooled).shape == stem(unpooled).shape == [1, 64, 8, 16, 16]
    assert pooled.maxpool(stem(pooled)).shape == [1, 64, 4, 8, 8]
    assert unpooled(x).shape == [1, 4]


def test_resnet_initialisation_is_the_references():
    paddle.seed(0)
    model = resnet.generate_model(18, n_classes=10)
    w = model.layer2[0].conv2.weight.numpy()  # 128 filters of 128x3x3x3: std sqrt(2/fan_out)
    assert abs(w.std() - np.sqrt(2 / (128 * 27))) < 0.02 * np.sqrt(2 / (128 * 27))
    assert np.all(model.bn1.weight.numpy() == 1) and np.all(model.bn1.bias.numpy() == 0)
    bound = 1 / np.sqrt(512)
    fc = model.fc.weight.numpy()
    assert fc.min() >= -bound and fc.max() <= bound and fc.std() > bound / 2


def test_resnet2p1d_names_and_widths():
    params = shapes(full_size(resnet2p1d, 18))
    # stem: 3 * 64 * 7 * 7 * 7 weights // (3 * 7 * 7 + 7 * 64) = 110 channels between the convs
    assert params['conv1_s.weight'] == [110, 3, 1, 7, 7]
    assert params['conv1_t.weight'] == [64, 110, 7, 1, 1]
    assert params['layer1.0.conv1_s.weight'] == [144, 64, 1, 3, 3]
    assert params['layer1.0.conv2_t.weight'] == [64, 144, 3, 1, 1]
    assert params['layer2.0.downsample.0.weight'] == [128, 64, 1, 1, 1]
    assert 'conv1.weight' not in params
    # the stem's parameters come first, as in the reference
    assert list(params)[:3] == ['conv1_s.weight', 'bn1_s.weight', 'bn1_s.bias']
    assert list(params)[-2:] == ['fc.weight', 'fc.bias']
    bottleneck = shapes(full_size(resnet2p1d, 50))
    assert bottleneck['layer1.0.conv1.weight'] == [64, 64, 1, 1, 1]
    assert bottleneck['layer1.0.conv2_s.weight'] == [144, 64, 1, 3, 3]
    assert bottleneck['layer1.0.bn2_t._variance'] == [64]
    assert bottleneck['layer1.0.conv3.weight'] == [256, 64, 1, 1, 1]
    assert bottleneck['fc.weight'] == [2048, N_CLASSES]


def test_resnet2p1d_stem_options():
    params = shapes(full_size(resnet2p1d, 10, n_input_channels=2, conv1_t_size=3,
                              widen_factor=0.5))
    # the reference sizes the stem for 3 input channels whatever the input has
    assert params['conv1_s.weight'] == [3 * 32 * 3 * 49 // (3 * 49 + 3 * 32), 2, 1, 7, 7]
    assert params['conv1_t.weight'][2] == 3


def test_pre_act_resnet_names():
    params = shapes(full_size(pre_act_resnet, 50))
    assert params['layer1.0.bn1.weight'] == [64]  # normalises the block's input
    assert params['layer2.0.bn1.weight'] == [256]
    assert params['layer1.0.bn3._mean'] == [64]
    assert params['layer1.0.conv3.weight'] == [256, 64, 1, 1, 1]
    assert params['layer4.0.downsample.1._variance'] == [2048]
    assert list(params)[-3:] == ['layer4.2.conv3.weight', 'fc.weight', 'fc.bias']
    basic = shapes(full_size(pre_act_resnet, 34, shortcut_type='A'))
    assert 'layer2.0.downsample.0.weight' not in basic
    assert basic['layer3.5.conv2.weight'] == [256, 256, 3, 3, 3]


def test_wide_resnet_names():
    params = shapes(full_size(wide_resnet, 50, k=2))
    assert params['conv1.weight'] == [128, 3, 7, 7, 7]
    assert params['layer1.0.conv1.weight'] == [128, 128, 1, 1, 1]
    assert params['layer1.0.conv3.weight'] == [256, 128, 1, 1, 1]  # expands x2
    assert params['layer4.2.bn3.weight'] == [2048]
    assert params['fc.weight'] == [2048, N_CLASSES]
    with pytest.raises(TypeError):
        wide_resnet.generate_model(50)  # k has no default, as in the reference


def test_resnext_names():
    params = shapes(full_size(resnext, 101))
    assert params['conv1.weight'] == [128, 3, 7, 7, 7]
    assert params['layer1.0.conv1.weight'] == [128, 128, 1, 1, 1]
    assert params['layer1.0.conv2.weight'] == [128, 4, 3, 3, 3]  # 32 groups of 4 channels
    assert params['layer1.0.conv3.weight'] == [256, 128, 1, 1, 1]
    assert params['layer3.22.conv2.weight'] == [512, 16, 3, 3, 3]
    assert params['layer4.0.downsample.0.weight'] == [2048, 1024, 1, 1, 1]
    assert params['fc.weight'] == [2048, N_CLASSES]


def test_resnext_cardinality_sets_the_groups_and_keeps_fc_in_step():
    model = resnext.generate_model(50, n_classes=N_CLASSES, cardinality=8, widen_factor=0.5)
    params = shapes(model)
    # mid width cardinality * planes / 32: 8 * 64 / 32 = 16, in 8 groups
    assert params['layer1.0.conv2.weight'] == [16, 2, 3, 3, 3]
    assert params['fc.weight'] == [1024, N_CLASSES]
    model.eval()
    assert model(paddle.randn([1, 3, 8, 32, 32])).shape == [1, N_CLASSES]


def test_densenet_names():
    widths = {121: 1024, 169: 1664, 201: 1920, 264: 2688}  # as torchvision's 2D DenseNets
    for depth, width in widths.items():
        params = shapes(full_size(densenet, depth))
        assert params['features.norm5.weight'] == [width]
        assert params['classifier.weight'] == [width, N_CLASSES]
    params = shapes(full_size(densenet, 121))
    assert params['features.conv1.weight'] == [64, 3, 7, 7, 7]
    assert params['features.norm1._mean'] == [64]
    assert params['features.denseblock1.denselayer1.conv1.weight'] == [128, 64, 1, 1, 1]
    assert params['features.denseblock1.denselayer6.norm1.weight'] == [64 + 5 * 32]
    assert params['features.denseblock2.denselayer1.conv2.weight'] == [32, 128, 3, 3, 3]
    assert params['features.transition1.conv.weight'] == [128, 256, 1, 1, 1]
    assert 'features.transition4.conv.weight' not in params
    assert 'classifier.bias' in params


def test_densenet_options():
    model = densenet.generate_model(121, n_classes=N_CLASSES, n_input_channels=2,
                                    conv1_t_size=3, no_max_pool=True)
    assert shapes(model)['features.conv1.weight'] == [64, 2, 3, 7, 7]
    assert 'pool1' not in dict(model.features.named_children())
    assert float(model.classifier.bias.abs().sum()) == 0.0  # zero-initialised as in the reference
    model.eval()
    assert model(paddle.randn([1, 2, 8, 32, 32])).shape == [1, N_CLASSES]
