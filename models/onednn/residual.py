"""A ResNet block's residual sum inside `channels_last()`: `add_relu` (the sum and its ReLU in
one oneDNN pass, and the ReLU's backward), and `fork` (a tensor used twice, whose two
gradients oneDNN sums in bfloat16)."""
import ctypes
from typing import NamedTuple

import paddle
from paddle.autograd import PyLayer

from .dnnl import (PLAIN_TAGS, Handle, Library, dnnl_binary_add,
                   dnnl_eltwise_relu_use_dst_for_bwd, dnnl_forward_training, library)
from .plans import DNNL_TYPES, PLANS, TensorPlan, exclusive, single_pass
from .settings import channels_last_active
from .tensors import activations, contiguous, empty, needs_grad


class AddKey(NamedTuple):
    """What a residual sum's plan is built for (and cached by)."""
    shape: tuple  # of both tensors, as they are
    activations: str  # their dtype
    relu: bool  # the ReLU after the sum, and its backward; else the sum alone


class AddReLUPlan(TensorPlan):
    """`relu(a + b)` of two tensors of one shape and dtype on oneDNN, in one pass (a binary add
    with the ReLU as its post-op), and its backward (the ReLU's, from its output: the gradient
    of both a and b). With `key.relu` False, the plan is `a + b` alone, forward only (`fork`'s
    backward)."""

    def __init__(self, library: Library, key: AddKey):
        self.library = library
        self.md = library.desc(key.shape, PLAIN_TAGS[len(key.shape)],
                               DNNL_TYPES[key.activations])
        self.descs = [self.md]
        forward_pd = Handle()
        library.call('dnnl_binary_primitive_desc_create', ctypes.byref(forward_pd),
                     library.engine, dnnl_binary_add, self.md, self.md, self.md,
                     library.relu_attr if key.relu else library.attr)
        self.pds = [forward_pd]
        self.passes = {'forward': single_pass(library, forward_pd)}
        if key.relu:
            hint_pd, backward_pd = Handle(), Handle()
            library.call('dnnl_eltwise_forward_primitive_desc_create', ctypes.byref(hint_pd),
                         library.engine, dnnl_forward_training,
                         dnnl_eltwise_relu_use_dst_for_bwd, self.md, self.md, 0.0, 0.0,
                         library.attr)
            library.call('dnnl_eltwise_backward_primitive_desc_create',
                         ctypes.byref(backward_pd), library.engine,
                         dnnl_eltwise_relu_use_dst_for_bwd, self.md, self.md, self.md, 0.0, 0.0,
                         hint_pd, library.attr)
            self.pds += [hint_pd, backward_pd]
            self.passes['backward'] = single_pass(library, backward_pd)

    @exclusive
    def run(self, name: str, tensors: dict) -> paddle.Tensor:
        """Pass `name` on `tensors` (argument -> tensor); returns the one it writes."""
        output = 'dst' if name == 'forward' else 'diff_src'
        first = next(iter(tensors.values()))
        tensors = dict(tensors, **{output: empty(first.shape, first.place, first.dtype)})
        self.passes[name].execute(self.library, {
            arg: self.library.memory(self.md, t.data_ptr()) for arg, t in tensors.items()})
        return tensors[output]


def plan(x: paddle.Tensor, relu: bool) -> AddReLUPlan:
    """The cached plan of a sum of tensors like `x` (with the ReLU after it, or not)."""
    key = AddKey(tuple(x.shape), activations(x), relu)
    return PLANS.get(key, lambda: AddReLUPlan(library(), key))


class _AddReLU(PyLayer):
    @staticmethod
    def forward(ctx, a, b, plan):
        y = plan.run('forward', {'src': a, 'src_1': b})
        ctx.save_for_backward(y)
        ctx.plan, ctx.needed = plan, needs_grad(a, b)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        y, = ctx.saved_tensor()
        grad = ctx.plan.run('backward', {'dst': y, 'diff_dst': contiguous(grad_y)})
        if all(ctx.needed):
            return grad, grad.clone()  # a tensor each: Paddle may sum into either in place
        return tuple(grad if needed else None for needed in ctx.needed)


@paddle.jit.not_to_static  # Paddle 2.6's paddle.jit would rewrite the library's loading
def add_relu(a: paddle.Tensor, b: paddle.Tensor, relu: paddle.nn.Layer) -> paddle.Tensor:
    """`relu(a + b)` (a ResNet block's output), in one oneDNN pass inside `channels_last()`,
    else by `relu`."""
    if not channels_last_active():
        return relu(a + b)
    a, b = contiguous(a), contiguous(b)
    add = plan(a, relu=True)
    if paddle.is_grad_enabled() and not (a.stop_gradient and b.stop_gradient):
        return _AddReLU.apply(a, b, add)
    return add.run('forward', {'src': a, 'src_1': b})


class _Fork(PyLayer):
    @staticmethod
    def forward(ctx, x):
        return x.view(x.shape), x.view(x.shape)  # x's data; x itself would lose its gradient

    @staticmethod
    def backward(ctx, grad_a, grad_b):
        if grad_a is None or grad_b is None:
            return grad_b if grad_a is None else grad_a
        grad_a, grad_b = contiguous(grad_a), contiguous(grad_b)
        return plan(grad_a, relu=False).run('forward', {'src': grad_a, 'src_1': grad_b})


@paddle.jit.not_to_static
def fork(x: paddle.Tensor):
    """(x, x), for a tensor used twice (a ResNet block's input: its branch and its shortcut).
    For bfloat16 x inside `channels_last()`, in training, the two gradients are summed in one
    oneDNN pass: Paddle's autograd, which sums the gradients of a tensor used twice, has no
    bfloat16 CPU kernel for it and adds element by element on one thread (docs/performance.md);
    float32 sums gain nothing."""
    if (channels_last_active() and x.dtype == paddle.bfloat16 and paddle.is_grad_enabled()
            and not x.stop_gradient):
        return _Fork.apply(x)
    return x, x
