"""3D convolutions on oneDNN for Paddle's dygraph on CPU, forward and both backward passes:
`conv3d` and the `Conv3D` layer (Paddle's where oneDNN cannot serve them)."""
import math
import warnings
from typing import NamedTuple, Optional

import paddle
from paddle.autograd import PyLayer

from . import conv_plan
from .dnnl import OneDNNError, library
from .plans import BYTES, ncdhw, ndhwc
from .settings import active_compute_dtype, enabled
from .tensors import (activations, contiguous, empty, layout_in_effect, on_cpu,
                      refuse_in_channels_last, takes)

# Largest copy of one operand in oneDNN's layout: clips are convolved this many bytes at a time.
CHUNK_BYTES = 32 * 2**20


class Chunk(NamedTuple):
    start: int  # first clip
    count: int  # number of clips


class BatchChunks:
    """A convolution run a few clips at a time, so that the copies of x and y in oneDNN's
    layouts stay small (CHUNK_BYTES): a training step's peak memory then exceeds Paddle's own
    convolution's by a fraction of one activation, not by the largest one.

    `x_shape` is NCDHW; with `channels_last`, x and y are NDHWC tensors (clips outermost too)."""

    def __init__(self, x_shape, w_shape, stride, padding, groups, dtype: str = 'float32',
                 channels_last: bool = False, activations: str = 'float32'):
        n = x_shape[0]
        self.y_shape = conv_plan.output_shape(x_shape, w_shape, stride, padding)
        if channels_last:  # the shape of the tensor y
            self.y_shape = ndhwc(self.y_shape)
        word = BYTES[activations]
        self.x_clip = word * math.prod(x_shape[1:])
        self.y_clip = word * math.prod(self.y_shape[1:])
        size = max(1, min(n, CHUNK_BYTES // max(self.x_clip, self.y_clip)))
        self.chunks = [Chunk(start, min(size, n - start)) for start in range(0, n, size)]
        self.plans = {count: conv_plan.plan(conv_plan.ConvKey(
            (count, *x_shape[1:]), tuple(w_shape), tuple(stride), tuple(padding), groups, dtype,
            channels_last, activations)) for count in {chunk.count for chunk in self.chunks}}

    def forward(self, x: paddle.Tensor, weight: paddle.Tensor) -> paddle.Tensor:
        y = empty(self.y_shape, x.place, x.dtype)
        for start, count in self.chunks:
            self.plans[count].forward(x.data_ptr() + start * self.x_clip, weight.data_ptr(),
                                      y.data_ptr() + start * self.y_clip)
        return y

    def backward(self, x, weight, grad_y, need_x: bool, need_weights: bool):
        grad_x = empty(x.shape, x.place, x.dtype) if need_x else None
        grad_w = chunk_grad_w = None
        if need_weights:  # summed over the chunks
            grad_w = empty(weight.shape, x.place)
            chunk_grad_w = empty(weight.shape, x.place) if len(self.chunks) > 1 else grad_w
        for i, (start, count) in enumerate(self.chunks):
            self.plans[count].backward(
                x.data_ptr() + start * self.x_clip, weight.data_ptr(),
                grad_y.data_ptr() + start * self.y_clip,
                grad_x.data_ptr() + start * self.x_clip if need_x else None,
                (grad_w if i == 0 else chunk_grad_w).data_ptr() if need_weights else None)
            if need_weights and i > 0:
                grad_w.add_(chunk_grad_w)
        return grad_x, grad_w


class _Convolution(PyLayer):
    @staticmethod
    def forward(ctx, x, weight, convolution):
        ctx.convolution = convolution
        ctx.save_for_backward(x, weight)
        return convolution.forward(x, weight)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensor()
        return ctx.convolution.backward(x, weight, contiguous(grad_y), not x.stop_gradient,
                                        not weight.stop_gradient)


@paddle.jit.not_to_static  # Paddle 2.6 may run paddle.jit's rewrite of Conv3D.forward in dygraph
def conv3d(x: paddle.Tensor, weight: paddle.Tensor, stride, padding, groups: int = 1,
           data_format: str = 'NCDHW'):
    """`paddle.nn.functional.conv3d(x, weight, stride=stride, padding=padding, groups=groups,
    data_format=data_format)` (float32 NCDHW or NDHWC, no bias, no dilation) on oneDNN when x
    and weight are on the CPU and the library loads, else on Paddle's kernel."""
    def paddles():
        return paddle.nn.functional.conv3d(x, weight, stride=stride, padding=padding,
                                           groups=groups, data_format=data_format)
    if not (on_cpu(x, weight) and library() is not None):  # on_cpu first: no load on GPUs
        return paddles()
    x = contiguous(x)
    channels_last = data_format == 'NDHWC'
    shape = ncdhw(x.shape) if channels_last else x.shape
    dtype = activations(x)  # bfloat16 activations: bfloat16 products too
    products = 'bfloat16' if dtype == 'bfloat16' else active_compute_dtype()
    try:
        convolution = BatchChunks(shape, weight.shape, stride, padding, groups, products,
                                  channels_last, dtype)
    except OneDNNError as e:  # a shape oneDNN has no implementation for: Paddle's kernel
        warnings.warn(f'a convolution of input {list(x.shape)} ({data_format}) and weights '
                      f'{list(weight.shape)} runs on Paddle\'s kernel: {e}', stacklevel=2)
        return paddles()
    return _Convolution.apply(x, weight, convolution)


class Conv3D(paddle.nn.Conv3D):
    """`paddle.nn.Conv3D` (same parameters, names and state dict) whose dygraph forward runs on
    oneDNN when it can: input and weights on the CPU, float32, NCDHW (NDHWC inside
    `channels_last()`), zeros padding of one number per dimension, no dilation."""

    def forward(self, x):
        padding = self._onednn_padding(x)
        if padding is None:  # Paddle 2.6's paddle.jit rewrites this code: no zero-argument super()
            refuse_in_channels_last(self)
            return paddle.nn.Conv3D.forward(self, x)
        layout = layout_in_effect(self._data_format)
        y = conv3d(x, self.weight, self._stride, padding, self._groups, layout)
        if self.bias is not None:
            y = y + (self.bias if layout == 'NDHWC' else self.bias.reshape([1, -1, 1, 1, 1]))
        return y

    @paddle.jit.not_to_static  # plain Python under paddle.jit: None there
    def _onednn_padding(self, x) -> Optional[list]:
        """The padding per dimension when oneDNN can run this convolution on `x`, else None."""
        padding = self._padding
        if isinstance(padding, int):
            padding = [padding] * 3
        if not (isinstance(padding, (list, tuple)) and len(padding) == 3
                and all(isinstance(p, int) for p in padding)):
            return None
        if (paddle.in_dynamic_mode() and on_cpu(x, self.weight)
                and takes(x) and self._data_format == 'NCDHW'
                and self._padding_mode == 'zeros' and list(self._dilation) == [1, 1, 1]
                and enabled()):  # last: loads the library
            return list(padding)
        return None
