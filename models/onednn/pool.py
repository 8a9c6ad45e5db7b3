"""3D max pooling (the stem's) on oneDNN, forward and backward: `max_pool3d` and the `MaxPool3D`
layer (Paddle's where oneDNN cannot serve them). Paddle's CPU kernel is several times slower
(docs/performance.md)."""
import ctypes
from typing import NamedTuple, Optional

import paddle
from paddle.autograd import PyLayer

from .dnnl import (Dims, Handle, Library, OneDNNError, dnnl_abcde, dnnl_acdeb,
                   dnnl_forward_inference, dnnl_forward_training, dnnl_pooling_max, library)
from .plans import DNNL_TYPES, PLANS, TensorPlan, exclusive, ncdhw, ndhwc, single_pass
from .settings import enabled
from .tensors import (activations, contiguous, empty, empty_bytes, layout_in_effect, on_cpu,
                      refuse_in_channels_last, takes)


class PoolKey(NamedTuple):
    """What a pooling plan is built for (and cached by)."""
    x_shape: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    training: bool  # with the workspace and the backward pass
    channels_last: bool = False  # x and y NDHWC tensors (x_shape as ever NCDHW)
    activations: str = 'float32'  # their dtype ('bfloat16': channels-last)


class PoolGeometry(NamedTuple):
    """The dnnl_dims_t arguments of oneDNN's pooling descriptors, in their order."""
    strides: ctypes.Array
    kernel: ctypes.Array
    dilation: ctypes.Array
    padding_l: ctypes.Array
    padding_r: ctypes.Array


class PoolPlan(TensorPlan):
    """oneDNN's max pooling of one shape on Paddle's plain tensors (NCDHW, or NDHWC with
    `key.channels_last`): forward (in training with its workspace, the position of each
    maximum) and backward."""

    def __init__(self, library: Library, key: PoolKey):
        self.library = library
        x_shape, kernel, stride, padding = key.x_shape, key.kernel, key.stride, key.padding
        training = key.training
        y_shape = [*x_shape[:2], *[(size + 2 * p - k) // st + 1 for size, k, st, p
                                   in zip(x_shape[2:], kernel, stride, padding)]]
        tag = dnnl_acdeb if key.channels_last else dnnl_abcde
        self.x_md, self.y_md = self.descs = [library.desc(shape, tag, DNNL_TYPES[key.activations])
                                             for shape in (x_shape, y_shape)]
        self.y_shape = ndhwc(y_shape) if key.channels_last else y_shape
        geometry = PoolGeometry(Dims(*stride), Dims(*kernel), Dims(0, 0, 0),
                                Dims(*padding), Dims(*padding))
        forward_pd = Handle()
        library.call('dnnl_pooling_forward_primitive_desc_create', ctypes.byref(forward_pd),
                     library.engine, dnnl_forward_training if training else dnnl_forward_inference,
                     dnnl_pooling_max, self.x_md, self.y_md, *geometry, library.attr)
        self.pds = [forward_pd]
        self.ws_md = library.query(forward_pd, 'workspace') if training else None
        self.ws_bytes = library.size(self.ws_md) if training else 0
        self.passes = {'forward': single_pass(library, forward_pd)}
        if training:
            backward_pd = Handle()
            library.call('dnnl_pooling_backward_primitive_desc_create', ctypes.byref(backward_pd),
                         library.engine, dnnl_pooling_max, self.x_md, self.y_md, *geometry,
                         forward_pd, library.attr)
            self.pds.append(backward_pd)
            self.passes['backward'] = single_pass(library, backward_pd)

    @exclusive
    def forward(self, x: paddle.Tensor):
        """(y, the workspace for `backward`: None outside training)."""
        y = empty(self.y_shape, x.place, x.dtype)
        memories = {'src': self.library.memory(self.x_md, x.data_ptr()),
                    'dst': self.library.memory(self.y_md, y.data_ptr())}
        workspace = None
        if self.ws_md is not None:
            workspace = empty_bytes(self.ws_bytes, x.place)
            memories['workspace'] = self.library.memory(self.ws_md, workspace.data_ptr())
        self.passes['forward'].execute(self.library, memories)
        return y, workspace

    @exclusive
    def backward(self, grad_y: paddle.Tensor, workspace: paddle.Tensor, x_shape):
        grad_x = empty(x_shape, grad_y.place, grad_y.dtype)
        self.passes['backward'].execute(self.library, {
            'diff_dst': self.library.memory(self.y_md, grad_y.data_ptr()),
            'diff_src': self.library.memory(self.x_md, grad_x.data_ptr()),
            'workspace': self.library.memory(self.ws_md, workspace.data_ptr())})
        return grad_x


def plan(key: PoolKey) -> PoolPlan:
    """The cached plan of `key`."""
    return PLANS.get(key, lambda: PoolPlan(library(), key))


class _MaxPooling(PyLayer):
    @staticmethod
    def forward(ctx, x, plan):
        y, ctx.workspace = plan.forward(x)
        ctx.plan, ctx.x_shape = plan, list(x.shape)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        return ctx.plan.backward(contiguous(grad_y), ctx.workspace, ctx.x_shape)


@paddle.jit.not_to_static  # Paddle 2.6's paddle.jit cannot rewrite this code, nor need it
def max_pool3d(x: paddle.Tensor, kernel, stride, padding,
               data_format: str = 'NCDHW') -> paddle.Tensor:
    """`paddle.nn.functional.max_pool3d(x, kernel, stride, padding, data_format=data_format)` of
    a float32 NCDHW or NDHWC tensor on the CPU, on oneDNN (elsewhere, and where oneDNN has no
    implementation, Paddle's kernel)."""
    def paddles():
        return paddle.nn.functional.max_pool3d(x, kernel, stride, padding,
                                               data_format=data_format)
    if not (on_cpu(x) and library() is not None):  # on_cpu first: no load on GPUs
        return paddles()
    x = contiguous(x)
    training = paddle.is_grad_enabled() and not x.stop_gradient
    channels_last = data_format == 'NDHWC'
    try:
        pooling = plan(PoolKey(tuple(ncdhw(x.shape) if channels_last else x.shape),
                               tuple(kernel), tuple(stride), tuple(padding), training,
                               channels_last, activations(x)))
    except OneDNNError:
        return paddles()
    if training:
        return _MaxPooling.apply(x, pooling)
    y, _ = pooling.forward(x)
    return y


class MaxPool3D(paddle.nn.MaxPool3D):
    """`paddle.nn.MaxPool3D` whose dygraph forward (and backward) runs on oneDNN when it can:
    float32 NCDHW on the CPU (NDHWC inside `channels_last()`), one kernel size, stride and
    padding per dimension, no ceil mode, no mask."""

    def forward(self, x):
        geometry = self._onednn_geometry(x)
        if geometry is None:  # Paddle 2.6's paddle.jit rewrites this code: no zero-argument super()
            refuse_in_channels_last(self)
            return paddle.nn.MaxPool3D.forward(self, x)
        return max_pool3d(x, *geometry, layout_in_effect(self.data_format))

    @paddle.jit.not_to_static  # plain Python under paddle.jit: None there
    def _onednn_geometry(self, x) -> Optional[tuple]:
        """(kernel, stride, padding) per dimension when oneDNN can pool `x`, else None."""
        def triple(value):
            value = [value] * 3 if isinstance(value, int) else value
            ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(
                isinstance(v, int) for v in value)
            return tuple(value) if ok else None
        kernel = triple(self.ksize)
        stride = triple(self.stride if self.stride is not None else self.ksize)
        padding = triple(self.padding)
        if None in (kernel, stride, padding) or self.ceil_mode or self.return_mask:
            return None
        if (paddle.in_dynamic_mode() and on_cpu(x) and takes(x)
                and len(x.shape) == 5 and self.data_format == 'NCDHW' and enabled()):
            return kernel, stride, padding
        return None
