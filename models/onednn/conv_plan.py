"""Convolution plans: oneDNN's forward, backward-data and backward-weights primitives of one
convolution shape, on plain data (NCDHW, or NDHWC channels-last) given by address, with the
reorders to and from the layouts oneDNN picks. No Paddle here (`conv` wraps them for Paddle).
"""
import ctypes
import functools
from typing import NamedTuple, Optional, Sequence

import numpy as np

from .dnnl import (PLAIN_TAGS, Dims, Handle, Library, OneDNNError, dnnl_acdeb,
                   dnnl_convolution_direct, dnnl_f32, dnnl_format_tag_any, dnnl_forward_training,
                   library)
from .plans import DNNL_TYPES, PLANS, Pass, exclusive, ndhwc

# A convolution's copies in oneDNN's layouts: one workspace slot per role (PlanCache.workspace).
# The operands of a pass never share one, and grad_y's copy survives from the weights pass to
# the data pass.
SLOTS = {'forward': {'src': 0, 'weights': 1, 'dst': 2},
         'weights': {'diff_dst': 0, 'src': 1, 'diff_weights': 2},
         'data': {'diff_dst': 0, 'weights': 1, 'diff_src': 2}}


class Operand:
    """One operand of a primitive: its plain descriptor (Paddle's tensor: layout `tag`, by
    default row-major as NCDHW, and `dtype`) and, when the primitive wants another layout or
    data type, the reorders between the two (a reorder converts float32 to bfloat16 and
    back)."""

    def __init__(self, library: Library, shape: Sequence[int], md: Handle, tag: int = None,
                 dtype: int = dnnl_f32):
        self.library = library
        self.plain = library.desc(shape, tag or PLAIN_TAGS[len(shape)], dtype)
        self.md = md
        self.reordered = not library.equal(md, self.plain)
        self.primitives, self.pds = [], []
        if self.reordered:
            self.bytes = library.size(md)
            self.pds = [library.reorder(self.plain, md), library.reorder(md, self.plain)]
            self.to_blocked, self.to_plain = self.primitives = [library.primitive(pd)
                                                                for pd in self.pds]

    def destroy(self) -> None:
        self.library.destroy(self.primitives, self.pds, [self.plain])

    def load(self, pointer: int, slot: int) -> Handle:
        """Memory of the plain data at `pointer` in the primitive's layout (a copy in workspace
        `slot` when the layouts differ)."""
        plain = self.library.memory(self.plain, pointer)
        if not self.reordered:
            return plain
        memory = self.target(pointer, slot)
        self.library.execute(self.to_blocked, {'from': plain, 'to': memory})
        return memory

    def target(self, pointer: int, slot: int) -> Handle:
        """Memory for the primitive to write a result wanted as plain data at `pointer`: that
        data itself, or room in workspace `slot` that `store` copies from."""
        if not self.reordered:
            return self.library.memory(self.plain, pointer)
        return self.library.memory(self.md, PLANS.workspace(slot, self.bytes))

    def store(self, memory: Handle, pointer: int) -> None:
        if self.reordered:
            self.library.execute(self.to_plain,
                                 {'from': memory, 'to': self.library.memory(self.plain, pointer)})


def output_shape(x_shape, w_shape, stride, padding) -> list:
    n, _, *spatial = x_shape
    kernel = w_shape[2:]
    return [n, w_shape[0], *[(s + 2 * p - k) // st + 1
                             for s, p, k, st in zip(spatial, padding, kernel, stride)]]


class ConvKey(NamedTuple):
    """What a convolution plan is built for (and cached by)."""
    x_shape: tuple
    w_shape: tuple
    stride: tuple
    padding: tuple
    groups: int
    dtype: str  # of the products: 'float32' or 'bfloat16' (accumulated in float32)
    channels_last: bool = False  # x and y in memory as NDHWC (shapes as ever NCDHW)
    activations: str = 'float32'  # x, y and their gradients in memory ('bfloat16': channels-last)


class ConvGeometry(NamedTuple):
    """The dnnl_dims_t arguments of oneDNN's convolution descriptors, in their order."""
    strides: ctypes.Array
    dilates: ctypes.Array
    padding_l: ctypes.Array
    padding_r: ctypes.Array


def weights_pass_padding(key: ConvKey) -> tuple:
    """The zeros a plan adds around x, per spatial dimension, before its backward-weights pass
    (which then pads by the rest of `key.padding`): enough that no kernel is deeper, taller or
    wider than the input it reads (see `ConvPlan`). A valid convolution's padding always
    suffices: its output is at least 1 long, so size + 2 x padding >= kernel."""
    return tuple(p if size < kernel else 0
                 for size, kernel, p in zip(key.x_shape[2:], key.w_shape[2:], key.padding))


class ConvPlan:
    """The forward, backward-data and backward-weights primitives of one convolution shape.

    Its methods take the addresses of plain data and write plain results: float32 weights and
    diff_weights, and x, y and their gradients in `key.activations` (float32, or bfloat16 in a
    channels-last trunk). The primitives read src, weights and diff_dst in `key.dtype` (the
    reorders convert them) and write dst and diff_src in `key.activations`.

    When the kernel is deeper (taller, wider) than the input it slides over, as in R3D's layer3
    and layer4 at 16 frames (depth 2 and 1, kernel 3), oneDNN 3.6's bfloat16 backward-weights
    kernel (jit avx512_core_bf16) returns garbage, and in float32 oneDNN declines its jit
    kernel and takes im2col + GEMM, which writes the weight gradient in a layout that needs a
    slow reorder (about twice the time: docs/performance.md). Such a plan pads x with zeros
    in those dimensions itself (a copy in `self.padded`, made on the first backward pass and
    kept with the plan, at most a few times the plan's x: the same weight gradient) and runs
    that pass with the rest of the padding (`weights_pass_padding`).
    """

    def __init__(self, library: Library, key: ConvKey):
        self.library = library
        self.passes, self.pds, self.descs = {}, [], []
        x_shape, w_shape, stride, padding = key.x_shape, key.w_shape, key.stride, key.padding
        groups, dtype, self.channels_last = key.groups, key.dtype, key.channels_last
        self.activations = key.activations
        # x and y: the layout oneDNN picks, or Paddle's channels-last one as it is
        data_tag = dnnl_acdeb if self.channels_last else dnnl_format_tag_any
        out_channels = w_shape[0]
        self.x_shape, self.y_shape = list(x_shape), output_shape(x_shape, w_shape, stride,
                                                                  padding)
        self.w_shape = list(w_shape)
        if groups > 1:  # oneDNN's grouped weights: [groups, out / groups, in / groups, k...]
            self.w_shape = [groups, out_channels // groups, *w_shape[1:]]
        geometry = ConvGeometry(Dims(*stride), Dims(*[0] * len(stride)), Dims(*padding),
                                 Dims(*padding))
        tags = (data_tag, dnnl_format_tag_any, data_tag)
        shapes = (self.x_shape, self.w_shape, self.y_shape)
        x, w, y = (library.desc(s, t, DNNL_TYPES[dtype]) for s, t in zip(shapes, tags))
        results = (DNNL_TYPES[key.activations], dnnl_f32, DNNL_TYPES[key.activations])
        x32, w32, y32 = (library.desc(s, t, r) for s, t, r in zip(shapes, tags, results))
        forward_pd, data_pd, weights_pd = Handle(), Handle(), Handle()
        self.pds = [forward_pd, data_pd, weights_pd]
        self.descs = [x, w, y, x32, w32, y32]
        library.call('dnnl_convolution_forward_primitive_desc_create', ctypes.byref(forward_pd),
                     library.engine, dnnl_forward_training, dnnl_convolution_direct,
                     x, w, None, y32, *geometry, library.attr)
        library.call('dnnl_convolution_backward_data_primitive_desc_create',
                     ctypes.byref(data_pd), library.engine, dnnl_convolution_direct,
                     x32, w, y, *geometry, forward_pd, library.attr)
        added = weights_pass_padding(key)
        # x with the zeros of `added` around it, for the weights pass (made on first use)
        self.padded, self.padded_shape = None, None
        weights_x, weights_x_shape, weights_hint = x, self.x_shape, forward_pd
        if any(added):
            weights_x_shape = [*self.x_shape[:2],
                               *[size + 2 * a for size, a in zip(self.x_shape[2:], added)]]
            spatial = [slice(a, a + size) for a, size in zip(added, self.x_shape[2:])]
            self.interior = ((slice(None), *spatial, slice(None)) if self.channels_last
                             else (slice(None), slice(None), *spatial))
            self.padded_shape = self.in_memory(weights_x_shape)
            rest = Dims(*[p - a for p, a in zip(padding, added)])
            geometry = geometry._replace(padding_l=rest, padding_r=rest)
            weights_x = library.desc(weights_x_shape, data_tag, DNNL_TYPES[dtype])
            weights_hint = Handle()  # oneDNN wants the forward pass of the same geometry as a hint
            self.pds.append(weights_hint)
            self.descs.append(weights_x)
            library.call('dnnl_convolution_forward_primitive_desc_create',
                         ctypes.byref(weights_hint), library.engine, dnnl_forward_training,
                         dnnl_convolution_direct, weights_x, w, None, y32, *geometry,
                         library.attr)
        library.call('dnnl_convolution_backward_weights_primitive_desc_create',
                     ctypes.byref(weights_pd), library.engine, dnnl_convolution_direct,
                     weights_x, w32, None, y, *geometry, weights_hint, library.attr)
        shapes = {'src': self.x_shape, 'diff_src': self.x_shape, 'weights': self.w_shape,
                  'diff_weights': self.w_shape, 'dst': self.y_shape, 'diff_dst': self.y_shape}
        # how Paddle holds each operand: (tag, None for row-major; data type)
        activation = (dnnl_acdeb if self.channels_last else None, DNNL_TYPES[key.activations])
        held = {a: (None, dnnl_f32) if 'weights' in a else activation for a in shapes}
        for name, pd, args in (('forward', forward_pd, ('src', 'weights', 'dst')),
                               ('data', data_pd, ('diff_dst', 'weights', 'diff_src')),
                               ('weights', weights_pd, ('src', 'diff_dst', 'diff_weights'))):
            operands = {a: Operand(library, weights_x_shape if (name, a) == ('weights', 'src')
                                    else shapes[a], library.query(pd, a), *held[a])
                         for a in args}
            scratchpad = library.query(pd, 'scratchpad')
            self.passes[name] = Pass(library.primitive(pd), operands, scratchpad,
                                     library.size(scratchpad))
        # the data pass may take grad_y as the weights pass reordered it
        self.share_grad_y = library.equal(self.passes['data'].operands['diff_dst'].md,
                                          self.passes['weights'].operands['diff_dst'].md)

    def in_memory(self, shape: Sequence[int]) -> list:
        """An activation's NCDHW `shape` in the order its memory holds the dimensions."""
        return ndhwc(shape) if self.channels_last else list(shape)

    def __del__(self):
        """Free the primitives and descriptors: plans dropped from the cache (and by the
        convolutions that used them) take their oneDNN objects with them."""
        try:
            for step in self.passes.values():
                self.library.destroy([step.primitive])
                for operand in step.operands.values():
                    operand.destroy()
            self.library.destroy(pds=self.pds, descs=self.descs)
        except Exception:  # at interpreter exit, ctypes may be gone first
            pass

    def run(self, name: str, inputs: dict, output: str, pointer: int,
            loaded: Optional[dict] = None) -> None:
        """Run pass `name` on the plain data at `inputs` (argument -> address; `loaded`:
        argument -> memory already in its layout, from `Operand.load`), writing `output` as
        plain data at `pointer`."""
        step = self.passes[name]
        memories = dict(loaded or {})
        for arg, address in inputs.items():
            memories[arg] = step.operands[arg].load(address, SLOTS[name][arg])
        memories[output] = step.operands[output].target(pointer, SLOTS[name][output])
        step.execute(self.library, memories)
        step.operands[output].store(memories[output], pointer)

    @exclusive
    def forward(self, x: int, weight: int, y: int) -> None:
        """Write y of the plain data x and weights (addresses)."""
        self.run('forward', {'src': x, 'weights': weight}, 'dst', y)

    @exclusive
    def backward(self, x: int, weight: int, grad_y: int, grad_x: Optional[int],
                 grad_w: Optional[int]) -> None:
        """Write the gradients of x and of the weights (each unless its address is None). The
        weights first: the data pass may reuse grad_y's copy in the weights pass's layout."""
        grad_y_loaded = None
        if grad_w is not None:
            grad_y_loaded = self.passes['weights'].operands['diff_dst'].load(
                grad_y, SLOTS['weights']['diff_dst'])
            if self.padded_shape is not None:
                word = np.float32 if self.activations == 'float32' else np.uint16  # bfloat16's bits
                if self.padded is None:
                    self.padded = np.zeros(self.padded_shape, word)
                self.padded[self.interior] = np.ctypeslib.as_array(
                    ctypes.cast(x, ctypes.POINTER(np.ctypeslib.as_ctypes_type(word))),
                    shape=self.in_memory(self.x_shape))
                x = self.padded.ctypes.data
            self.run('weights', {'src': x}, 'diff_weights', grad_w,
                     {'diff_dst': grad_y_loaded})
        if grad_x is not None:
            if grad_y_loaded is not None and self.share_grad_y:
                inputs, loaded = {'weights': weight}, {'diff_dst': grad_y_loaded}
            else:
                inputs, loaded = {'weights': weight, 'diff_dst': grad_y}, None
            self.run('data', inputs, 'diff_src', grad_x, loaded)


def plan(key: ConvKey) -> ConvPlan:
    """The cached plan of `key`."""
    return PLANS.get(key, lambda: ConvPlan(library(), key))


@functools.lru_cache(maxsize=None)
def bfloat16_supported() -> bool:
    """Whether `compute_dtype('bfloat16')` can be used: the library loads, the CPU has
    bfloat16 instructions and oneDNN builds a bfloat16 convolution (forward and both
    backward passes). Found out once (loading the library), then cached."""
    lib = library()
    if lib is None or not lib.has_bfloat16():
        return False
    try:
        ConvPlan(lib, ConvKey((1, 16, 4, 8, 8), (16, 16, 3, 3, 3), (1, 1, 1), (1, 1, 1), 1,
                              'bfloat16'))
    except OneDNNError:
        return False
    return True
