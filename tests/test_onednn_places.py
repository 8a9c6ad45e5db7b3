"""models.onednn hands oneDNN host memory only: tensors on another device (a GPU) run Paddle's
kernel without loading libdnnl, and results are allocated where the input is, whatever the
default device. There is no GPU here: the tests make chosen tensors report a GPU place (their
data stays on the CPU, so Paddle's kernel still runs), and make `paddle.empty` refuse to
allocate on the default device."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from models import onednn

pytestmark = [pytest.mark.skipif(onednn.load_error() is not None,
                                 reason=f'oneDNN not loadable: {onednn.load_error()}'),
              pytest.mark.usefixtures('cpu')]


class GpuPlace:
    def is_cpu_place(self):
        return False

    def is_gpu_place(self):
        return True

    def __repr__(self):
        return 'Place(gpu:0)'


def report_gpu_place(monkeypatch, *tensors):
    place = paddle.Tensor.place  # the C property
    on_gpu = {id(t) for t in tensors}
    monkeypatch.setattr(paddle.Tensor, 'place', property(
        lambda t: GpuPlace() if id(t) in on_gpu else place.__get__(t)))


@pytest.fixture
def unloaded(monkeypatch):
    """libdnnl not loaded yet, and loading it fails the test."""
    def load():
        raise AssertionError('libdnnl loaded for a tensor that is not on the CPU')
    monkeypatch.setattr(onednn, '_library', None)
    monkeypatch.setattr(onednn, '_load_error', None)
    monkeypatch.setattr(onednn, '_Library', load)


@pytest.mark.parametrize('entry', ['layer', 'function'])
@pytest.mark.parametrize('on_gpu', ['x', 'weight', 'both'])
def test_tensors_off_the_cpu_run_paddles_kernel_without_loading_onednn(monkeypatch, unloaded,
                                                                        entry, on_gpu):
    layer = onednn.Conv3D(2, 3, 3, padding=1, bias_attr=False)
    x = paddle.randn([1, 2, 3, 4, 4])
    expected = F.conv3d(x, layer.weight, padding=1).numpy()
    report_gpu_place(monkeypatch, *{'x': [x], 'weight': [layer.weight],
                                    'both': [x, layer.weight]}[on_gpu])
    if entry == 'layer':
        y = layer(x)
    else:
        y = onednn.conv3d(x, layer.weight, [1, 1, 1], [1, 1, 1])
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6)
    assert onednn._library is None


def test_results_are_allocated_on_the_inputs_place_not_the_default_device(monkeypatch):
    empty = paddle.empty

    def empty_on_device(shape, dtype=None, *args, device=None, **kwargs):
        if device is None:
            raise AssertionError('allocated on the default device (a GPU on GPU machines)')
        return empty(shape, dtype, *args, device=device, **kwargs)
    monkeypatch.setattr(paddle, 'empty', empty_on_device)
    rng = np.random.default_rng(0)
    x_value = rng.standard_normal([5, 4, 6, 8, 8], dtype=np.float32)
    w_value = rng.standard_normal([4, 4, 3, 3, 3], dtype=np.float32)
    monkeypatch.setattr(onednn, 'CHUNK_BYTES', 2 * 4 * (4 * 6 * 8 * 8))  # chunks: grad_w sums
    results = []
    for conv in (lambda x, w: F.conv3d(x, w, padding=1),
                 lambda x, w: onednn.conv3d(x, w, [1, 1, 1], [1, 1, 1])):
        x = paddle.to_tensor(x_value, stop_gradient=False)
        w = paddle.to_tensor(w_value, stop_gradient=False)
        y = conv(x, w)
        (y * y).sum().backward()
        results.append([y.numpy(), x.grad.numpy(), w.grad.numpy()])
        assert all(t.place.is_cpu_place() for t in (y, x.grad, w.grad))
    for actual, expected in zip(*results):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-3)
