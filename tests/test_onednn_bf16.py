"""bfloat16 convolutions on oneDNN (`onednn.compute_dtype('bfloat16')`): bfloat16 inputs,
float32 accumulation and float32 results, for the forward pass and both gradients."""
import os
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from conftest import relative
from models import onednn
from models.onednn import conv_plan, dnnl
from models.resnet import generate_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures('cpu')
needs_bfloat16 = pytest.mark.skipif(not onednn.bfloat16_supported(),
                                    reason='no bfloat16 convolutions on this CPU')
UNIT_ROUNDOFF = 2.0 ** -8  # bfloat16: 8 significant bits, rounded to nearest


def to_bfloat16(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), as oneDNN's reorder does."""
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def conv_with_grads(conv, x, w, grad_y, dtype='float32'):
    x, w = paddle.to_tensor(x, stop_gradient=False), paddle.to_tensor(w, stop_gradient=False)
    with onednn.compute_dtype(dtype):
        y = conv(x, w)
    (y * paddle.to_tensor(grad_y)).sum().backward()  # outside: the forward's dtype holds
    return y.numpy(), x.grad.numpy(), w.grad.numpy()


@needs_bfloat16
@pytest.mark.parametrize('x_shape, w_shape, stride, padding, groups', [
    ([2, 3, 8, 32, 32], [16, 3, 7, 7, 7], [1, 2, 2], [3, 3, 3], 1),  # the stem
    ([2, 16, 4, 8, 8], [32, 16, 3, 3, 3], [2, 2, 2], [1, 1, 1], 1),  # a strided 3x3x3
    ([2, 16, 4, 8, 8], [32, 16, 1, 1, 1], [2, 2, 2], [0, 0, 0], 1),  # a downsample
    ([2, 64, 4, 8, 8], [64, 2, 3, 3, 3], [1, 1, 1], [1, 1, 1], 32),  # ResNeXt's grouped conv
    ([3, 8, 5, 7, 9], [8, 8, 1, 3, 3], [1, 2, 2], [0, 1, 1], 1),  # (2+1)D, odd sizes
])
def test_bfloat16_convolution_and_gradients(x_shape, w_shape, stride, padding, groups):
    """Two checks of y, grad x and grad w:

    - equal to float32 convolutions of the operands rounded to bfloat16 (1e-5): rounding
      happens at the inputs only, and sums are float32 (bfloat16 sums would be 1e-2 off);
    - close to float32 on the exact operands, within bfloat16's error: an output is a sum of K
      products a*b whose factors each carry a relative rounding error up to u = 2^-8 of random
      sign, so its error has a standard deviation of about u sqrt(2/3) sqrt(K) rms(a) rms(b)
      (3.2e-3 sqrt(K) rms(a) rms(b)); the maximum over all outputs is allowed 6 of them (the
      largest seen here is 4.5).
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32)

    def paddle_conv(a, b):
        return F.conv3d(a, b, stride=stride, padding=padding, groups=groups)
    grad_y = rng.standard_normal(paddle_conv(paddle.to_tensor(x), paddle.to_tensor(w)).shape,
                                 dtype=np.float32)
    actual = conv_with_grads(lambda a, b: onednn.conv3d(a, b, stride, padding, groups),
                             x, w, grad_y, 'bfloat16')
    rounded = conv_with_grads(paddle_conv, to_bfloat16(x), to_bfloat16(w), to_bfloat16(grad_y))
    exact = conv_with_grads(paddle_conv, x, w, grad_y)
    kernel = np.prod(w_shape[2:])
    taps = np.prod(-(-np.array(w_shape[2:]) // stride))  # most kernel taps on one input point
    reduced = {'y': (w_shape[1] * kernel, x, w),  # sizes K of the sums, and their factors
               'grad x': (w_shape[0] // groups * taps, grad_y, w),
               'grad w': (x_shape[0] * np.prod(grad_y.shape[2:]), x, grad_y)}
    for (name, (k, a, b)), result, r, e in zip(reduced.items(), actual, rounded, exact):
        assert result.dtype == np.float32 and result.shape == e.shape
        assert relative(result, r) < 1e-5, name
        sigma = UNIT_ROUNDOFF * np.sqrt(2 / 3) * np.sqrt(k) * rms(a) * rms(b)
        assert np.abs(result - e).max() < 6 * sigma, name
        assert relative(result, e) > 1e-4, name  # it did compute in bfloat16


@needs_bfloat16
@pytest.mark.parametrize('x_shape, w_shape', [
    ([2, 64, 2, 7, 7], [64, 64, 3, 3, 3]),  # R3D's layer3 at 16 frames: depth 2, kernel 3
    ([2, 64, 1, 4, 4], [64, 64, 3, 3, 3]),  # and its layer4: depth 1
    ([2, 16, 2, 7, 7], [16, 16, 3, 1, 1]),  # (2+1)D's temporal convolution there
    ([2, 16, 4, 2, 2], [16, 16, 3, 3, 3]),
])
def test_weight_gradient_of_a_kernel_deeper_than_its_input(x_shape, w_shape):
    # oneDNN 3.6's bfloat16 backward-weights kernel returned garbage here (1e29 on a 2-core
    # AMD EPYC, different every call): the plan pads x itself for that pass
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32)
    padding = [k // 2 for k in w_shape[2:]]
    grad_y = rng.standard_normal([x_shape[0], w_shape[0], *x_shape[2:]], dtype=np.float32)

    def conv(a, b):
        return onednn.conv3d(a, b, [1, 1, 1], padding)
    first = conv_with_grads(conv, x, w, grad_y, 'bfloat16')
    second = conv_with_grads(conv, x, w, grad_y, 'bfloat16')
    exact = conv_with_grads(conv, x, w, grad_y)
    for name, a, b, e in zip(('y', 'grad x', 'grad w'), first, second, exact):
        np.testing.assert_array_equal(a, b, err_msg=name)  # the same every call
        assert 1e-4 < relative(a, e) < 2e-2, name  # in bfloat16, and right


@needs_bfloat16
def test_plans_are_cached_per_dtype():
    x, w = paddle.randn([1, 4, 3, 5, 5]), paddle.randn([8, 4, 3, 3, 3])
    onednn.PLANS.clear()
    for dtype in ('float32', 'bfloat16', 'float32'):
        with onednn.compute_dtype(dtype):
            onednn.conv3d(x, w, [1, 1, 1], [1, 1, 1])
    assert sorted(key.dtype for key in onednn.PLANS.keys(conv_plan.ConvKey)) == ['bfloat16',
                                                                                'float32']


@needs_bfloat16
def test_resnet_loss_in_bfloat16_is_close_to_float32():
    """A ResNet-18 training step, its convolutions in float32 and in bfloat16, same weights.

    The losses agree within 2e-2. The gradients point the same way; in this untrained net
    their size is about as sensitive to rounding the input clip alone to bfloat16 (float32
    everywhere else: up to 30% on some layers), so only their direction is compared."""
    paddle.seed(3)
    model = generate_model(18, n_classes=2, conv1_t_size=3, widen_factor=0.25)
    x = paddle.to_tensor(np.random.default_rng(3).standard_normal([4, 3, 8, 64, 64],
                                                                  dtype=np.float32))
    labels = paddle.to_tensor([1, 0, 1, 0])
    losses, gradients = [], []
    for dtype in ('float32', 'bfloat16'):
        model.clear_gradients()
        with onednn.compute_dtype(dtype):
            loss = F.cross_entropy(model(x), labels)
        loss.backward()
        losses.append(float(loss))
        gradients.append(np.concatenate([p.grad.numpy().ravel() for p in model.parameters()
                                         if p.grad is not None]))
    assert abs(losses[1] - losses[0]) < 2e-2
    cosine = gradients[0] @ gradients[1] / np.linalg.norm(gradients[0]) / np.linalg.norm(
        gradients[1])
    assert cosine > 0.8


@pytest.fixture
def unprobed():
    """bfloat16_supported() asked afresh in the test, and again after it."""
    onednn.bfloat16_supported.cache_clear()
    yield
    onednn.bfloat16_supported.cache_clear()


def test_no_bfloat16_without_the_cpus_instructions(monkeypatch, unprobed):
    monkeypatch.setattr(dnnl.Library, 'has_bfloat16', lambda lib: False)
    assert not onednn.bfloat16_supported()
    with pytest.raises(onednn.OneDNNError, match='AVX512-BF16 or AMX'):
        onednn.compute_dtype('bfloat16')
    with onednn.compute_dtype('float32'):
        pass
    with pytest.raises(ValueError):
        onednn.compute_dtype('float16')


def test_no_bfloat16_when_onednn_refuses_it(monkeypatch, unprobed):
    def refuse(*args):
        raise onednn.OneDNNError('oneDNN dnnl_convolution_forward_primitive_desc_create failed')
    monkeypatch.setattr(dnnl.Library, 'has_bfloat16', lambda lib: True)
    monkeypatch.setattr(conv_plan, 'ConvPlan', refuse)
    assert not onednn.bfloat16_supported()


@needs_bfloat16
def test_an_isa_without_bfloat16_is_seen():
    """ONEDNN_MAX_CPU_ISA=AVX512_CORE: oneDNN would emulate bfloat16 (slower than float32)."""
    code = 'from models import onednn; print(onednn.bfloat16_supported())'
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA='AVX512_CORE')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=True)
    assert result.stdout.split()[-1] == 'False'
