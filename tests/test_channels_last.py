"""ResNets' channels-last trunk on oneDNN (models.onednn.channels_last): each layer against
Paddle's own kernel in the same layout, whole models against float64, and where it must not
run."""
import contextlib
import types

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from conftest import relative
from model import track_unbiased_variance
from models import onednn, pre_act_resnet, resnet, resnext, wide_resnet

pytestmark = [pytest.mark.skipif(onednn.load_error() is not None,
                                 reason=f'oneDNN not loadable: {onednn.load_error()}'),
              pytest.mark.usefixtures('cpu')]
needs_bfloat16 = pytest.mark.skipif(not onednn.bfloat16_supported(),
                                    reason='this CPU has no bfloat16 instructions')


def ndhwc(t):
    return t.transpose([0, 2, 3, 4, 1]).contiguous()


def leaf(array):
    t = paddle.to_tensor(array)
    t.stop_gradient = False
    return t


def grads(y, inputs, seed=1):
    """Gradients of a random projection of `y` with respect to `inputs`."""
    g = paddle.to_tensor(np.random.default_rng(seed).standard_normal(y.shape).astype('float32'))
    return paddle.grad([y], inputs, [g])


@pytest.mark.parametrize('relu', [False, True])
def test_batch_norm_in_training_is_paddles_with_its_running_statistics(relu):
    rng = np.random.default_rng(0)
    x = rng.standard_normal([3, 5, 4, 6, 16]).astype('float32') * 2 + 1  # NDHWC
    ours, paddles = resnet.batch_norm(16), paddle.nn.BatchNorm3D(16, momentum=0.9,
                                                                 data_format='NDHWC')
    for layer in (ours, paddles):
        layer.weight.set_value(rng.uniform(0.5, 2, 16).astype('float32'))
        layer.bias.set_value(rng.standard_normal(16).astype('float32'))
        layer._mean.set_value(rng.standard_normal(16).astype('float32'))
        layer._variance.set_value(rng.uniform(0.5, 2, 16).astype('float32'))
    mean, variance = ours._mean.numpy().copy(), ours._variance.numpy().copy()
    paddles.set_state_dict(ours.state_dict())
    results = []
    for layer, channels_last in ((ours, True), (paddles, False)):
        xt = leaf(x)
        with onednn.channels_last() if channels_last else onednn.use_onednn(True):
            y = layer(xt, F.relu) if channels_last and relu else layer(xt)
        y = F.relu(y) if relu and not channels_last else y
        results.append([y, *grads(y, [xt, layer.weight, layer.bias]), layer._mean,
                        layer._variance])
    for actual, expected in zip(*results):
        assert relative(actual.numpy(), expected.numpy()) < 1e-5
    batch = x.reshape(-1, 16)  # and the statistics moved as Paddle moves them: 10% of the batch's
    np.testing.assert_allclose(ours._mean.numpy(), 0.9 * mean + 0.1 * batch.mean(0), rtol=1e-5)
    np.testing.assert_allclose(ours._variance.numpy(), 0.9 * variance + 0.1 * batch.var(0),
                               rtol=1e-5)
    assert relu == bool((results[0][0].numpy() == 0).any())


@pytest.mark.parametrize('relu', [False, True])
def test_batch_norm_in_eval_mode_uses_the_running_statistics(relu):
    rng = np.random.default_rng(1)
    bn = resnet.batch_norm(8)
    bn._mean.set_value(rng.standard_normal(8).astype('float32'))
    bn._variance.set_value(rng.uniform(0.5, 2, 8).astype('float32'))
    bn.eval()
    x = rng.standard_normal([2, 3, 4, 5, 8]).astype('float32')
    with paddle.no_grad(), onednn.channels_last():
        y = bn(paddle.to_tensor(x), F.relu if relu else None).numpy()
    expected = (x - bn._mean.numpy()) / np.sqrt(bn._variance.numpy() + 1e-5)
    np.testing.assert_allclose(y, np.maximum(expected, 0) if relu else expected, atol=1e-5)


def ours_and_paddles(x, ours, paddles, parameters=()):
    """[output, gradient of x, of each parameter] of `ours` inside channels_last() and of
    `paddles` (Paddle's own kernel on NDHWC data), each given a leaf copy of `x`."""
    results = []
    for layer, inside in ((ours, onednn.channels_last), (paddles, contextlib.nullcontext)):
        xt = leaf(x)
        with inside():
            y = layer(xt)
        results.append([y, *grads(y, [xt, *parameters])])
    return results


@pytest.mark.parametrize('kernel, stride, padding, groups', [
    (1, 1, 0, 1), (1, 2, 0, 1), (3, 1, 1, 1), (3, 2, 1, 1), ((3, 7, 7), (1, 2, 2), (1, 3, 3), 1),
    (3, 1, 1, 4)])
def test_convolution_on_channels_last_data_is_paddles(kernel, stride, padding, groups):
    x = np.random.default_rng(2).standard_normal([3, 6, 9, 10, 8]).astype('float32')  # NDHWC
    conv = resnet.conv3d(8, 16, kernel, stride=stride, padding=padding, groups=groups)
    results = ours_and_paddles(
        x, conv, lambda t: F.conv3d(t, conv.weight, stride=conv._stride, padding=conv._padding,
                                    groups=groups, data_format='NDHWC'), [conv.weight])
    for actual, expected in zip(*results):
        assert relative(actual.numpy(), expected.numpy()) < 1e-5


def test_max_pooling_on_channels_last_data_is_paddles():
    x = np.random.default_rng(3).standard_normal([2, 5, 9, 9, 4]).astype('float32')
    (y, grad_x), (expected_y, expected_grad_x) = ours_and_paddles(
        x, onednn.MaxPool3D(kernel_size=3, stride=2, padding=1),
        lambda t: F.max_pool3d(t, 3, 2, 1, data_format='NDHWC'))
    np.testing.assert_array_equal(y.numpy(), expected_y.numpy())
    assert relative(grad_x.numpy(), expected_grad_x.numpy()) < 1e-6  # overlapping windows' sums


def test_residual_sum_and_relu_is_paddles():
    rng = np.random.default_rng(7)
    a, b = (rng.standard_normal([2, 3, 4, 5, 8]).astype('float32') for _ in range(2))
    results = []
    for channels_last in (True, False):
        at, bt = leaf(a), leaf(b)
        with onednn.channels_last() if channels_last else onednn.use_onednn(True):
            y = onednn.add_relu(at, bt, F.relu)
        results.append([y, *grads(y, [at, bt])])
    for actual, expected in zip(*results):
        np.testing.assert_array_equal(actual.numpy(), expected.numpy())
    grad_a, grad_b = results[0][1:]
    assert grad_a.data_ptr() != grad_b.data_ptr()  # Paddle may add into either in place
    with paddle.no_grad(), onednn.channels_last():
        np.testing.assert_array_equal(onednn.add_relu(paddle.to_tensor(a), paddle.to_tensor(b),
                                                      F.relu).numpy(), np.maximum(a + b, 0))


MODELS = {
    'R3D-10, shortcut B': lambda: resnet.generate_model(10, n_classes=5, widen_factor=0.5),
    'R3D-10, shortcut A': lambda: resnet.generate_model(10, n_classes=5, widen_factor=0.5,
                                                        shortcut_type='A'),
    'R3D-50 (bottlenecks)': lambda: resnet.generate_model(50, n_classes=5, widen_factor=0.25),
    'ResNeXt-50 (grouped)': lambda: resnext.generate_model(50, n_classes=5, cardinality=4),
}


def step(model, clips, dtype='float32'):
    """Logits, parameter gradients and running statistics after a training step's backward."""
    model.train()
    x = paddle.to_tensor(clips.astype(dtype))
    y = model(x)
    loss = (y * paddle.arange(y.shape[1], dtype=dtype)).sum() + (y ** 2).sum()
    loss.backward()
    grads = [p.grad.numpy() for p in model.parameters() if p.grad is not None]
    model.clear_gradients()
    return y.numpy(), grads, [b.numpy() for b in model.buffers()]


def cosine(a, b) -> float:
    a, b = a.ravel().astype('float64'), b.ravel().astype('float64')
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize('name', list(MODELS))
def test_a_training_step_channels_last_is_a_float64_step(name, monkeypatch):
    """Logits and running statistics of a step against float64 on Paddle's kernels, and the
    direction of every gradient: float32 kernels, Paddle's own included, put the gradients of
    early layers up to 5e-2 (of their largest value) off float64's here, by cancellations in
    BN's backward; a layout error points them elsewhere."""
    paddle.seed(0)
    model = track_unbiased_variance(MODELS[name]())
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    clips = np.random.default_rng(4).standard_normal([4, 3, 16, 48, 48]).astype('float32')
    entered = []
    enter = onednn.channels_last.__enter__
    monkeypatch.setattr(onednn.channels_last, '__enter__',
                        lambda self: entered.append(self) or enter(self))
    y, grads, statistics = step(model, clips)
    assert entered
    paddle.set_default_dtype('float64')
    try:
        paddle.seed(0)
        twin = track_unbiased_variance(MODELS[name]())
    finally:
        paddle.set_default_dtype('float32')
    twin.set_state_dict({k: v.astype('float64') for k, v in state.items()})
    with onednn.use_onednn(False):
        expected_y, expected_grads, expected_statistics = step(twin, clips, 'float64')
    assert relative(y, expected_y) < 1e-3
    for actual, expected in zip(statistics, expected_statistics, strict=True):
        assert relative(actual, expected) < 1e-4
    assert len(grads) == len(expected_grads)
    for actual, expected in zip(grads, expected_grads):
        if np.abs(expected).max() > 1e-9:  # some BN biases' gradients are 0 (1e-13 here)
            assert cosine(actual, expected) > 0.995


@pytest.mark.parametrize('frozen', ['stem', 'BN scales and shifts'])
def test_frozen_parameters_get_no_gradient_and_the_others_the_ncdhw_trunks(frozen):
    """As `--ft_begin_module layer1` freezes the stem (a block's residual then needs no
    gradient), and with BN's affine parameters frozen."""
    paddle.seed(0)
    model = resnet.generate_model(18, n_classes=3, widen_factor=0.25)
    for name, parameter in model.named_parameters():
        if name.startswith(('conv1', 'bn1')) if frozen == 'stem' else '.bn' in name:
            parameter.stop_gradient = True
    trainable = sum(not p.stop_gradient for p in model.parameters())
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    clips = np.random.default_rng(9).standard_normal([4, 3, 8, 48, 48]).astype('float32')
    results = []
    for on in (True, False):
        model.set_state_dict(state)
        with onednn.use_channels_last(on):
            results.append(step(model, clips)[1])
    assert len(results[0]) == len(results[1]) == trainable
    for actual, expected in zip(*results):
        assert cosine(actual, expected) > 0.995


def test_eval_mode_channels_last_is_the_ncdhw_trunk():
    paddle.seed(0)
    model = MODELS['R3D-50 (bottlenecks)']()
    step(model, np.random.default_rng(5).standard_normal([2, 3, 8, 32, 32]).astype('float32'))
    model.eval()
    clips = paddle.to_tensor(np.random.default_rng(6).standard_normal([2, 3, 8, 32, 32]),
                             dtype='float32')
    with paddle.no_grad():
        ours = model(clips).numpy()
        with onednn.use_channels_last(False):
            expected = model(clips).numpy()
    assert relative(ours, expected) < 1e-5


def runs_channels_last(model) -> bool:
    return model.runs_channels_last(paddle.zeros([1, 3, 4, 16, 16]))


def test_channels_last_only_where_every_layer_can_run_there():
    assert runs_channels_last(resnet.generate_model(10, n_classes=5))
    assert runs_channels_last(resnext.generate_model(50, n_classes=5, cardinality=4))
    # blocks written for NCDHW only
    assert not runs_channels_last(pre_act_resnet.generate_model(10, n_classes=5))
    # clips on a GPU
    gpu = types.SimpleNamespace(place=types.SimpleNamespace(is_cpu_place=lambda: False),
                                dtype=paddle.float32, shape=[1, 3, 4, 16, 16])
    assert not resnet.generate_model(10, n_classes=5).runs_channels_last(gpu)
    # data parallelism's SyncBatchNorm
    synced = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(resnet.generate_model(10))
    assert not runs_channels_last(synced)
    with onednn.use_channels_last(False):
        assert not runs_channels_last(resnet.generate_model(10, n_classes=5))
    with onednn.use_onednn(False):
        assert not runs_channels_last(resnet.generate_model(10, n_classes=5))


# Layers that give the same result in either layout (elementwise, or containers whose code is
# written for both: ResNet's blocks call fork / add_relu and read the layout where it matters).
LAYOUT_FREE = (resnet.ReLU, paddle.nn.ReLU, paddle.nn.Identity, paddle.nn.Sequential,
               resnet.BasicBlock, resnet.Bottleneck)


def trunk_layers(model: resnet.ResNet) -> list:
    """The layers of the trunk, which runs channels-last: all but the head (fc, and avgpool,
    which the channels-last forward replaces by a mean)."""
    head = {id(model.fc), id(model.avgpool)}
    return [layer for layer in model.sublayers() if id(layer) not in head]


def not_layout_aware(model: resnet.ResNet) -> list:
    """The trunk's layers that would read an NDHWC tensor as NCDHW: neither the onednn
    package's (which take NDHWC inside channels_last()) nor LAYOUT_FREE."""
    return [layer for layer in trunk_layers(model)
            if not type(layer).__module__.startswith('models.onednn.')
            and not isinstance(layer, LAYOUT_FREE)]


CHANNELS_LAST_MODELS = {
    'resnet B': lambda: resnet.generate_model(10, n_classes=5, widen_factor=0.25),
    'resnet A': lambda: resnet.generate_model(18, n_classes=5, widen_factor=0.25,
                                              shortcut_type='A'),
    'resnext': lambda: resnext.generate_model(50, n_classes=5, cardinality=4),
    'wide resnet': lambda: wide_resnet.generate_model(50, k=1, n_classes=5, widen_factor=0.125),
}


@pytest.mark.parametrize('name', CHANNELS_LAST_MODELS)
def test_a_channels_last_trunk_holds_only_layout_aware_layers(name):
    model = CHANNELS_LAST_MODELS[name]()
    clips = paddle.zeros([2, 3, 4, 16, 16])
    assert model.runs_channels_last(clips)
    assert not_layout_aware(model) == []
    called = []  # the layers that run inside channels_last(): all in trunk_layers
    hooks = [layer.register_forward_pre_hook(
        lambda layer, inputs: called.append(layer) if onednn.channels_last_active() else None)
        for layer in model.sublayers()]
    model.train()
    model(clips)
    for hook in hooks:
        hook.remove()
    trunk = {id(layer) for layer in trunk_layers(model)}
    assert called and all(id(layer) in trunk for layer in called)


def test_a_plain_paddle_layer_in_a_channels_last_block_is_found():
    model = CHANNELS_LAST_MODELS['resnet B']()
    block = model.layer2[0]
    block.conv2 = paddle.nn.Conv3D(32, 32, 3, padding=1, bias_attr=False)  # NCDHW only
    block.bn2 = paddle.nn.BatchNorm3D(32)
    assert not_layout_aware(model) == [block.conv2, block.bn2]


def test_a_layer_that_cannot_run_channels_last_says_so():
    """Rather than Paddle's kernel reading NDHWC data as NCDHW."""
    dilated = onednn.Conv3D(4, 4, 3, padding=2, dilation=2)
    with onednn.channels_last(), pytest.raises(onednn.OneDNNError, match='channels_last'):
        dilated(paddle.zeros([1, 4, 5, 5, 4]))


def bfloat16(array) -> np.ndarray:
    """`array` rounded to bfloat16 (to nearest even), as float32."""
    bits = np.asarray(array, np.float32).view(np.uint32)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


@needs_bfloat16
def test_bfloat16_activations_through_each_layer():
    """Inside channels_last(), bfloat16 tensors in, bfloat16 tensors out (gradients too), each
    layer within bfloat16's rounding of its float32 result on the same (rounded) input."""
    rng = np.random.default_rng(8)
    x = bfloat16(rng.standard_normal([2, 4, 6, 6, 16]))
    conv, bn = resnet.conv3d(16, 16, 3, stride=2, padding=1), resnet.batch_norm(16)
    layers = {'conv': (conv, [conv.weight]),
              'bn+relu': (lambda t: bn(t, F.relu), [bn.weight, bn.bias]),
              'pool': (onednn.MaxPool3D(3, 2, 1), []),
              'add+relu': (lambda t: onednn.add_relu(t, t * 0.5, F.relu), [])}
    for name, (layer, parameters) in layers.items():
        results = []
        for dtype in ('bfloat16', 'float32'):
            xt = leaf(x).astype(dtype).detach()
            xt.stop_gradient = False
            with onednn.channels_last():
                y = layer(xt)
            assert y.dtype == xt.dtype, name
            g, *parameter_grads = grads(y.astype('float32'), [xt, *parameters])
            assert g.dtype == xt.dtype, name
            results.append([t.astype('float32').numpy() for t in (y, g, *parameter_grads)])
        for bfloat16_result, float32_result in zip(*results):
            assert relative(bfloat16_result, float32_result) < 2e-2, name


@needs_bfloat16
def test_under_bfloat16_the_trunk_keeps_bfloat16_activations_except_with_shortcut_a(
        monkeypatch):
    seen = []
    forward = onednn.Conv3D.forward
    monkeypatch.setattr(onednn.Conv3D, 'forward',
                        lambda self, x: seen.append(x.dtype) or forward(self, x))
    clips = paddle.zeros([1, 3, 4, 32, 32])
    for shortcut, dtype in (('B', paddle.bfloat16), ('A', paddle.float32)):
        model = resnet.generate_model(10, n_classes=3, shortcut_type=shortcut)
        seen.clear()
        with onednn.compute_dtype('bfloat16'):
            logits = model(clips)
        assert set(seen) == {dtype} and logits.dtype == paddle.float32


@needs_bfloat16
def test_fork_sums_the_gradients_of_a_bfloat16_block_input_as_paddles_autograd(monkeypatch):
    """A block's input feeds its branch and its shortcut: `fork` sums the two gradients on
    oneDNN instead of Paddle's autograd, to the same result."""
    x = leaf(bfloat16(np.random.default_rng(6).standard_normal([2, 2, 4, 4, 8])))
    x = x.astype('bfloat16')  # a non-leaf, as a block's input
    w1, w2 = (paddle.to_tensor(bfloat16(np.random.default_rng(s).standard_normal(x.shape)))
              .astype('bfloat16') for s in (7, 8))

    def grad_of_x(split):
        with onednn.channels_last():
            a, b = split(x)
            y = onednn.add_relu(onednn.add_relu(a, w1, None), onednn.add_relu(b, w2, None), None)
        return paddle.grad(y.astype('float32').sum(), x)[0].astype('float32').numpy()
    forked = grad_of_x(onednn.fork)
    assert np.array_equal(forked, grad_of_x(lambda t: (t, t)))
    assert forked.any() and np.all(np.isin(forked, [0, 1, 2]))  # ReLU masks of two ones each

    # in a model's bfloat16 training step: the parameters' gradients agree within bfloat16's
    # tolerance (equal on Paddle 3.3; Paddle 2.6's autograd sums bfloat16 otherwise: 1.2e-2)
    clips = np.random.default_rng(9).standard_normal([2, 3, 4, 32, 32]).astype('float32')
    model = resnet.generate_model(10, n_classes=5)
    with onednn.compute_dtype('bfloat16'):
        _, forked, _ = step(model, clips)
        monkeypatch.setattr(resnet, 'fork', lambda t: (t, t))
        _, summed_by_paddle, _ = step(model, clips)
    assert len(forked) == len(summed_by_paddle)
    for a, b in zip(forked, summed_by_paddle):
        assert relative(a, b) < 2e-2
