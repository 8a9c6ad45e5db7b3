"""Batch normalization on oneDNN inside `channels_last()`, with the ReLU after it fused, forward
and backward: the `BatchNorm3D` layer. oneDNN's BN is faster than Paddle's on channels-last
tensors only (on Paddle's NCDHW layout, slower), so outside it the layer is Paddle's
(docs/performance.md)."""
import ctypes
from typing import NamedTuple, Optional

import paddle
from paddle.autograd import PyLayer

from .dnnl import (Handle, Library, dnnl_a, dnnl_acdeb, dnnl_backward, dnnl_forward_inference,
                   dnnl_forward_training, dnnl_fuse_norm_relu, dnnl_use_global_stats,
                   dnnl_use_scale, dnnl_use_shift, library)
from .plans import DNNL_TYPES, PLANS, TensorPlan, exclusive, ncdhw, single_pass
from .settings import channels_last_active
from .tensors import activations, contiguous, empty, empty_bytes, needs_grad

_CHANNEL_ARGS = {'mean', 'variance', 'scale', 'shift', 'diff_scale', 'diff_shift'}


class NormKey(NamedTuple):
    """What a batch normalization plan is built for (and cached by)."""
    shape: tuple  # NCDHW; the tensors are NDHWC
    epsilon: float
    relu: bool  # the ReLU after it fused
    training: bool  # the batch's statistics, the backward pass; else the running ones
    activations: str = 'float32'  # x's and y's dtype (the statistics and scale are float32)


class NormPlan(TensorPlan):
    """oneDNN's batch normalization of one shape on channels-last tensors, with scale
    and shift: forward in training (the batch's mean and biased variance out, as Paddle's
    kernel) and backward, or forward in inference (the running statistics in). With
    `key.relu`, the ReLU after it runs in the same pass (its workspace: which outputs it
    zeroed)."""

    def __init__(self, library: Library, key: NormKey):
        self.library = library
        self.md = library.desc(key.shape, dnnl_acdeb, DNNL_TYPES[key.activations])
        self.channel_md = library.desc(key.shape[1:2], dnnl_a)
        self.descs = [self.md, self.channel_md]
        flags = (dnnl_use_scale | dnnl_use_shift | (dnnl_fuse_norm_relu if key.relu else 0)
                 | (0 if key.training else dnnl_use_global_stats))
        forward_pd = Handle()
        library.call('dnnl_batch_normalization_forward_primitive_desc_create',
                     ctypes.byref(forward_pd), library.engine,
                     dnnl_forward_training if key.training else dnnl_forward_inference,
                     self.md, self.md, key.epsilon, flags, library.attr)
        self.pds = [forward_pd]
        self.passes = {'forward': single_pass(library, forward_pd)}
        self.ws_md = None
        if key.training:
            if key.relu:
                self.ws_md = library.query(forward_pd, 'workspace')
                self.ws_bytes = library.size(self.ws_md)
            backward_pd = Handle()
            library.call('dnnl_batch_normalization_backward_primitive_desc_create',
                         ctypes.byref(backward_pd), library.engine, dnnl_backward, self.md,
                         self.md, self.md, key.epsilon, flags, forward_pd, library.attr)
            self.pds.append(backward_pd)
            self.passes['backward'] = single_pass(library, backward_pd)

    @exclusive
    def run(self, name: str, tensors: dict, workspace: Optional[paddle.Tensor]) -> None:
        """Pass `name` on `tensors` (argument -> tensor: NDHWC data or per-channel vectors)."""
        memories = {arg: self.library.memory(
            self.channel_md if arg in _CHANNEL_ARGS else self.md, t.data_ptr())
            for arg, t in tensors.items()}
        if workspace is not None:
            memories['workspace'] = self.library.memory(self.ws_md, workspace.data_ptr())
        self.passes[name].execute(self.library, memories)


def plan(key: NormKey) -> NormPlan:
    """The cached plan of `key`."""
    return PLANS.get(key, lambda: NormPlan(library(), key))


class _BatchNormalization(PyLayer):
    @staticmethod
    def forward(ctx, x, weight, bias, layer, plan):
        channels = [x.shape[-1]]
        y = empty(x.shape, x.place, x.dtype)
        mean, variance = empty(channels, x.place), empty(channels, x.place)
        workspace = empty_bytes(plan.ws_bytes, x.place) if plan.ws_md is not None else None
        plan.run('forward', {'src': x, 'dst': y, 'scale': weight, 'shift': bias, 'mean': mean,
                             'variance': variance}, workspace)
        with paddle.no_grad():  # the running statistics, as Paddle's kernel updates them
            m = layer._momentum
            layer._mean.copy_(layer._mean * m + mean * (1 - m), False)
            layer._variance.copy_(layer._variance * m + variance * (1 - m), False)
        ctx.save_for_backward(x, weight, mean, variance)
        ctx.plan, ctx.workspace = plan, workspace
        ctx.needed = needs_grad(x, weight, bias)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, mean, variance = ctx.saved_tensor()
        grad_y = contiguous(grad_y)
        grad_x = empty(x.shape, x.place, x.dtype)
        grad_weight, grad_bias = (empty(weight.shape, x.place) for _ in range(2))
        ctx.plan.run('backward', {'src': x, 'diff_dst': grad_y, 'diff_src': grad_x,
                                  'scale': weight, 'mean': mean, 'variance': variance,
                                  'diff_scale': grad_weight, 'diff_shift': grad_bias},
                     ctx.workspace)
        return tuple(grad if needed else None
                     for grad, needed in zip((grad_x, grad_weight, grad_bias), ctx.needed))


class BatchNorm3D(paddle.nn.BatchNorm3D):
    """`paddle.nn.BatchNorm3D` (same parameters, names and state dict) that runs on oneDNN
    inside `channels_last()`, with a ReLU after it fused where the caller passes it:
    `bn(x, relu)` is `relu(bn(x))`. Outside, and in eval mode with gradients or with
    `use_global_stats`, it is Paddle's (in the layout of the tensors it gets)."""

    def forward(self, x, relu: Optional[paddle.nn.Layer] = None):
        if channels_last_active():
            return self._forward_channels_last(x, relu)
        y = paddle.nn.BatchNorm3D.forward(self, x)
        return y if relu is None else relu(y)

    @paddle.jit.not_to_static  # Paddle 2.6's paddle.jit would rewrite the library's loading
    def _forward_channels_last(self, x, relu):
        eval_with_grad = not self.training and paddle.is_grad_enabled() and not x.stop_gradient
        if self._use_global_stats is not None or eval_with_grad:  # Paddle's kernel
            y = paddle.nn.functional.batch_norm(
                x, self._mean, self._variance, weight=self.weight, bias=self.bias,
                training=self.training, momentum=self._momentum, epsilon=self._epsilon,
                data_format='NDHWC', use_global_stats=self._use_global_stats)
            return y if relu is None else relu(y)
        x = contiguous(x)
        norm = plan(NormKey(tuple(ncdhw(x.shape)), float(self._epsilon), relu is not None,
                            self.training, activations(x)))
        if self.training:
            return _BatchNormalization.apply(x, self.weight, self.bias, self, norm)
        y = empty(x.shape, x.place, x.dtype)
        norm.run('forward', {'src': x, 'dst': y, 'scale': self.weight, 'shift': self.bias,
                             'mean': self._mean, 'variance': self._variance}, None)
        return y
