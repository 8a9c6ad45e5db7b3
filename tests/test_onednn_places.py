"""models.onednn hands oneDNN host memory only: tensors on another device (a GPU) run Paddle's
kernel without loading libdnnl, and results are allocated where the input is, whatever the
default device. There is no GPU here: the tests make chosen tensors report a GPU place (their
data stays on the CPU, so Paddle's kernel still runs), and check that every allocation takes a
place a tensor gave, not the default device's."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from models import onednn
from models.onednn import dnnl

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
    monkeypatch.setattr(dnnl, '_loaded', None)
    monkeypatch.setattr(dnnl, 'Library', load)


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
    assert dnnl._loaded is None


@pytest.mark.parametrize('entry', ['layer', 'function'])
def test_pooling_off_the_cpu_runs_paddles_kernel_without_loading_onednn(monkeypatch, unloaded,
                                                                         entry):
    x = paddle.randn([1, 2, 4, 8, 8])
    expected = F.max_pool3d(x, 3, 2, 1).numpy()
    calls = []
    pool = F.max_pool3d
    monkeypatch.setattr(F, 'max_pool3d', lambda *args, **kwargs: calls.append(args) or pool(
        *args, **kwargs))
    report_gpu_place(monkeypatch, x)
    if entry == 'layer':
        y = onednn.MaxPool3D(3, 2, 1)(x)
    else:
        y = onednn.max_pool3d(x, [3, 3, 3], [2, 2, 2], [1, 1, 1])
    np.testing.assert_array_equal(y.numpy(), expected)
    assert len(calls) == 1 and dnnl._loaded is None


@pytest.fixture
def allocations(monkeypatch):
    """[(shape, place)] of every paddle._C_ops.empty call, whose place must be one a tensor's
    `.place` returned: paddle.empty(shape) passes the default device's (a GPU on GPU machines;
    the CPU here, which no other test could tell from the input's)."""
    from_tensors = []  # kept alive: `is` tells them apart
    place = paddle.Tensor.place  # the C property

    def recorded_place(t):
        from_tensors.append(place.__get__(t))
        return from_tensors[-1]
    monkeypatch.setattr(paddle.Tensor, 'place', property(recorded_place))
    calls = []
    empty = paddle._C_ops.empty

    def spy(shape, dtype, at):
        assert any(at is p for p in from_tensors), 'allocated on the default device'
        calls.append((list(shape), at))
        return empty(shape, dtype, at)
    monkeypatch.setattr(paddle._C_ops, 'empty', spy)
    return calls


def test_results_are_allocated_on_the_inputs_place_not_the_default_device(monkeypatch,
                                                                            allocations):
    rng = np.random.default_rng(0)
    x_value = rng.standard_normal([5, 4, 6, 8, 8], dtype=np.float32)
    w_value = rng.standard_normal([4, 4, 3, 3, 3], dtype=np.float32)
    monkeypatch.setattr(onednn.conv, 'CHUNK_BYTES', 2 * 4 * (4 * 6 * 8 * 8))  # chunks: grad_w sums
    results = []
    for conv in (lambda x, w: F.conv3d(x, w, padding=1),
                 lambda x, w: onednn.conv3d(x, w, [1, 1, 1], [1, 1, 1])):
        x = paddle.to_tensor(x_value, stop_gradient=False)
        w = paddle.to_tensor(w_value, stop_gradient=False)
        y = conv(x, w)
        (y * y).sum().backward()
        results.append([y.numpy(), x.grad.numpy(), w.grad.numpy()])
    for actual, expected in zip(*results):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-3)
    # y, then grad_x, grad_w and the chunks' grad_w
    assert [shape for shape, _ in allocations] == [list(y.shape), list(x.shape),
                                                   list(w.shape), list(w.shape)]
    assert all(place._equals(x.place) for _, place in allocations)

    allocations.clear()
    y = onednn.max_pool3d(x, [3, 3, 3], [2, 2, 2], [1, 1, 1])
    y.sum().backward()
    shapes = [shape for shape, _ in allocations]  # y, the argmax workspace, grad_x
    assert len(shapes) == 3 and shapes[0] == list(y.shape) and shapes[2] == list(x.shape)
    assert all(place._equals(x.place) for _, place in allocations)
