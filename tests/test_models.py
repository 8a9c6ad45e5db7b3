"""Shapes and parameter names of the model families (no PyTorch needed; parity is in
test_parity_pytorch.py)."""
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
