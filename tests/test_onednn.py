"""The oneDNN convolutions of dygraph training equal Paddle's own (forward and both gradients),
the in-place ReLU equals ReLU, and the process settings behind the CPU speed."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from conftest import relative
from models import onednn
from models.resnet import ReLU, generate_model

pytestmark = [pytest.mark.skipif(onednn.load_error() is not None,
                                 reason=f'oneDNN not loadable: {onednn.load_error()}'),
              pytest.mark.usefixtures('cpu')]  # oneDNN takes host memory only


def conv_with_grads(conv, x, w, grad_y):
    x, w = paddle.to_tensor(x, stop_gradient=False), paddle.to_tensor(w, stop_gradient=False)
    y = conv(x, w)
    (y * paddle.to_tensor(grad_y)).sum().backward()
    return y.numpy(), x.grad.numpy(), w.grad.numpy()


@pytest.mark.parametrize('x_shape, w_shape, stride, padding, groups', [
    ([2, 3, 8, 32, 32], [16, 3, 7, 7, 7], [1, 2, 2], [3, 3, 3], 1),  # the stem
    ([2, 16, 4, 8, 8], [32, 16, 3, 3, 3], [2, 2, 2], [1, 1, 1], 1),  # a strided 3x3x3
    ([2, 16, 4, 8, 8], [32, 16, 1, 1, 1], [2, 2, 2], [0, 0, 0], 1),  # a downsample
    ([2, 64, 4, 8, 8], [64, 2, 3, 3, 3], [1, 1, 1], [1, 1, 1], 32),  # ResNeXt's grouped conv
    ([3, 8, 5, 7, 9], [8, 8, 1, 3, 3], [1, 2, 2], [0, 1, 1], 1),  # (2+1)D, odd sizes
    # kernels deeper than the input (R3D's layer4 and layer3 at 16 frames): the weights pass
    # pads x itself
    ([2, 32, 1, 4, 4], [32, 32, 3, 3, 3], [1, 1, 1], [1, 1, 1], 1),
    ([2, 16, 2, 7, 7], [32, 16, 3, 3, 3], [2, 2, 2], [1, 1, 1], 1),
])
def test_convolution_and_its_gradients_equal_paddles(x_shape, w_shape, stride, padding, groups):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32)
    expected_y = F.conv3d(paddle.to_tensor(x), paddle.to_tensor(w), stride=stride,
                          padding=padding, groups=groups)
    grad_y = rng.standard_normal(expected_y.shape, dtype=np.float32)
    expected = conv_with_grads(lambda a, b: F.conv3d(a, b, stride=stride, padding=padding,
                                                     groups=groups), x, w, grad_y)
    actual = conv_with_grads(lambda a, b: onednn.conv3d(a, b, stride, padding, groups),
                             x, w, grad_y)
    for name, a, e in zip(('y', 'grad x', 'grad w'), actual, expected):
        assert a.shape == e.shape
        assert relative(a, e) < 1e-4, name


def test_clips_convolved_in_chunks_sum_the_weight_gradient(monkeypatch):
    monkeypatch.setattr(onednn.conv, 'CHUNK_BYTES', 2 * 4 * (4 * 6 * 8 * 8))  # 2 clips at a time
    rng = np.random.default_rng(1)
    x = rng.standard_normal([5, 4, 6, 8, 8], dtype=np.float32)
    w = rng.standard_normal([4, 4, 3, 3, 3], dtype=np.float32)
    grad_y = rng.standard_normal([5, 4, 6, 8, 8], dtype=np.float32)
    chunks = onednn.conv.BatchChunks(x.shape, w.shape, [1, 1, 1], [1, 1, 1], 1).chunks
    assert chunks == [(0, 2), (2, 2), (4, 1)]
    expected = conv_with_grads(lambda a, b: F.conv3d(a, b, padding=1), x, w, grad_y)
    actual = conv_with_grads(lambda a, b: onednn.conv3d(a, b, [1, 1, 1], [1, 1, 1]), x, w,
                             grad_y)
    for name, a, e in zip(('y', 'grad x', 'grad w'), actual, expected):
        assert relative(a, e) < 1e-4, name


def test_a_convolution_onednn_cannot_build_runs_on_paddles_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise onednn.OneDNNError('oneDNN dnnl_convolution_forward_primitive_desc_create failed '
                                 '(status 3)')
    monkeypatch.setattr(onednn.conv_plan, 'plan', refuse)
    x, w = paddle.randn([1, 2, 3, 4, 4]), paddle.randn([3, 2, 3, 3, 3])
    with pytest.warns(UserWarning, match="runs on Paddle's kernel.*status 3"):
        y = onednn.conv3d(x, w, [1, 1, 1], [1, 1, 1])
    np.testing.assert_allclose(y.numpy(), F.conv3d(x, w, padding=1).numpy(), rtol=1e-6)


def test_conv3d_layer_runs_on_onednn_where_it_can():
    layer = onednn.Conv3D(4, 8, 3, padding=1, bias_attr=False)
    plain = paddle.nn.Conv3D(4, 8, 3, padding=1, bias_attr=False)
    plain.set_state_dict(layer.state_dict())
    assert list(layer.state_dict()) == list(plain.state_dict())
    x = paddle.randn([2, 4, 3, 5, 5])
    onednn.PLANS.clear()
    np.testing.assert_allclose(layer(x).numpy(), plain(x).numpy(), rtol=1e-4, atol=1e-5)
    assert len(onednn.PLANS.keys(onednn.conv_plan.ConvKey)) == 1
    with onednn.use_onednn(False):
        np.testing.assert_allclose(layer(x).numpy(), plain(x).numpy(), rtol=1e-4, atol=1e-5)
    dilated = onednn.Conv3D(4, 8, 3, padding=2, dilation=2, bias_attr=False)
    dilated(x)  # Paddle's own kernel: oneDNN is asked for no dilation here
    assert len(onednn.PLANS.keys(onednn.conv_plan.ConvKey)) == 1


@pytest.mark.parametrize('train', [False, True])
def test_model_loss_and_gradients_equal_paddles_convolutions(train):
    """A ResNet-18 (BN, residuals, in-place ReLU) on oneDNN and on Paddle's convolutions.

    In training mode, BN's batch statistics and ReLU's zero crossings turn differences of 1e-6 in
    a convolution into larger ones of a few gradient entries, for either kernel alike; the loss
    is compared there, and the gradients with BN on its running statistics (eval mode, where
    autograd still runs through every convolution)."""
    paddle.seed(3)
    model = generate_model(18, n_classes=2, conv1_t_size=3, widen_factor=0.25)
    model.train() if train else model.eval()
    x = paddle.to_tensor(np.random.default_rng(3).standard_normal([4, 3, 8, 64, 64],
                                                                  dtype=np.float32))
    labels = paddle.to_tensor([1, 0, 1, 0])
    results = []
    for on in (False, True):
        with onednn.use_onednn(on):
            model.clear_gradients()
            loss = F.cross_entropy(model(x), labels)
            loss.backward()
        results.append((float(loss), {n: p.grad.numpy() for n, p in model.named_parameters()
                                      if p.grad is not None}))
    (loss_paddle, grads_paddle), (loss_onednn, grads_onednn) = results
    assert loss_onednn == pytest.approx(loss_paddle, rel=1e-4)
    if not train:
        assert grads_paddle.keys() == grads_onednn.keys() and len(grads_paddle) > 40
        for name, grad in grads_paddle.items():
            assert relative(grads_onednn[name], grad) < 1e-4, name


def test_in_place_relu_gives_relus_gradients():
    rng = np.random.default_rng(4)
    x_value = rng.standard_normal([2, 4, 3, 5, 5], dtype=np.float32)
    grads = []
    for relu in (F.relu, ReLU()):
        bn = paddle.nn.BatchNorm3D(4)
        x = paddle.to_tensor(x_value, stop_gradient=False)
        y = relu(bn(x))
        (y * paddle.arange(y.numel(), dtype='float32').reshape(y.shape)).sum().backward()
        grads.append((y.numpy(), x.grad.numpy(), bn.weight.grad.numpy()))
    for actual, expected in zip(*grads):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('shape, kernel, stride, padding', [
    ([2, 8, 8, 14, 14], 3, 2, 1),  # R3D's stem pooling
    ([1, 4, 5, 9, 7], 3, 2, 1),  # odd sizes: the last window hangs over the padding
    ([2, 3, 4, 6, 6], [1, 3, 3], [1, 2, 2], [0, 1, 1]),
])
def test_max_pooling_and_its_gradient_equal_paddles(shape, kernel, stride, padding):
    rng = np.random.default_rng(0)
    x_value = rng.standard_normal(shape, dtype=np.float32)
    results = []
    for pool in (onednn.MaxPool3D(kernel, stride, padding),
                 paddle.nn.MaxPool3D(kernel, stride, padding)):
        x = paddle.to_tensor(x_value, stop_gradient=False)
        y = pool(x)
        grad_y = paddle.to_tensor(rng.standard_normal(y.shape, dtype=np.float32)
                                  if not results else results[0][2])
        (y * grad_y).sum().backward()
        results.append((y.numpy(), x.grad.numpy(), grad_y.numpy()))
    (y, grad_x, _), (expected_y, expected_grad_x, _) = results
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_allclose(grad_x, expected_grad_x, rtol=1e-6, atol=1e-6)
    with paddle.no_grad():  # inference: no workspace, the same maxima
        np.testing.assert_array_equal(
            onednn.MaxPool3D(kernel, stride, padding)(paddle.to_tensor(x_value)).numpy(),
            expected_y)
    pooled = onednn.PLANS.keys(onednn.pool.PoolKey)
    assert any(key.x_shape == tuple(shape) for key in pooled)  # it ran on oneDNN
