"""models/resnet.py: shapes for every depth, parameter names, shortcut types, init."""
import numpy as np
import paddle
import pytest

from models import resnet


@pytest.mark.parametrize('depth', sorted(resnet.DEPTHS))
def test_every_depth_gives_logits_of_the_right_shape(depth):
    model = resnet.generate_model(depth, n_classes=3, widen_factor=0.125)
    model.eval()
    out = model(paddle.randn([2, 3, 4, 16, 16]))
    assert out.shape == [2, 3]
    block, layers = resnet.DEPTHS[depth]
    n_blocks = sum(1 for name in model.state_dict() if name.endswith('.conv1.weight'))
    assert n_blocks == sum(layers)


def test_parameter_names_follow_the_reference():
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


def test_conv1_options_no_max_pool_widen_and_input_channels():
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


def test_initialisation_is_the_references():
    paddle.seed(0)
    model = resnet.generate_model(18, n_classes=10)
    w = model.layer2[0].conv2.weight.numpy()  # 128 filters of 128x3x3x3: std sqrt(2/fan_out)
    assert abs(w.std() - np.sqrt(2 / (128 * 27))) < 0.02 * np.sqrt(2 / (128 * 27))
    assert np.all(model.bn1.weight.numpy() == 1) and np.all(model.bn1.bias.numpy() == 0)
    bound = 1 / np.sqrt(512)
    fc = model.fc.weight.numpy()
    assert fc.min() >= -bound and fc.max() <= bound and fc.std() > bound / 2


def test_unknown_depth_is_rejected():
    with pytest.raises(ValueError, match='depth must be one of'):
        resnet.generate_model(20)
