"""3D convolutions on oneDNN for Paddle's dygraph on CPU (forward and both backward passes).

Paddle's dygraph `conv3d` on CPU is im2col + GEMM (about 80-120 GFLOP/s on a 2-core AVX-512
machine); oneDNN's direct convolution in its blocked layout reaches about 270 there, as in
PyTorch, whose CPU convolutions are oneDNN's. Paddle ships oneDNN (`paddle/libs/libdnnl.so.3`)
but its dygraph does not call it for conv3d, so `Conv3D` below calls it through oneDNN's C API
(ctypes): plain NCDHW tensors are reordered into the layout oneDNN picks, convolved, and the
result reordered back. Where the library cannot be loaded, or outside dygraph on CPU
(`paddle.jit` export, GPU), `Conv3D` is Paddle's own.
"""
import collections
import ctypes
import math
import os
import threading
import warnings
from typing import Optional, Sequence

import numpy as np
import paddle
from paddle.autograd import PyLayer

# enum values of oneDNN 3.x's C API (oneapi/dnnl/dnnl_types.h, dnnl_common_types.h)
_CPU, _IN_ORDER, _F32 = 1, 1, 3
_ANY, _PLAIN = 1, {5: 6, 6: 7}  # format_tag_any; abcde, abcdef by number of dimensions
_FORWARD_TRAINING, _CONVOLUTION_DIRECT = 64, 1
_QUERY_MD = {'src': 129, 'diff_src': 130, 'weights': 131, 'diff_weights': 132, 'dst': 133,
             'diff_dst': 134, 'scratchpad': 136}
_ARG = {'src': 1, 'dst': 17, 'weights': 33, 'diff_src': 129, 'diff_dst': 145,
        'diff_weights': 161, 'from': 1, 'to': 17, 'scratchpad': 80}
_SCRATCHPAD_MODE_USER = 1
_MAX_DIMS = 12
_Dims = ctypes.c_int64 * _MAX_DIMS
_c = ctypes.c_void_p

# Plans (primitives) kept per convolution shape; training uses a handful of shapes.
PLAN_CACHE_SIZE = 256
# Largest copy of one operand in oneDNN's layout: clips are convolved this many bytes at a time.
CHUNK_BYTES = 32 * 2**20


class _ExecArg(ctypes.Structure):
    _fields_ = [('arg', ctypes.c_int), ('memory', ctypes.c_void_p)]


class OneDNNError(RuntimeError):
    pass


class _Library:
    """libdnnl.so.3 from Paddle's wheel, a CPU engine and a stream."""

    def __init__(self):
        path = os.path.join(os.path.dirname(paddle.__file__), 'libs', 'libdnnl.so.3')
        self.lib = ctypes.CDLL(path)
        self.lib.dnnl_primitive_desc_query_md.restype = _c
        self.lib.dnnl_primitive_desc_query_md.argtypes = [_c, ctypes.c_int, ctypes.c_int]
        self.lib.dnnl_memory_desc_get_size.restype = ctypes.c_size_t
        self.lib.dnnl_memory_desc_get_size.argtypes = [_c]
        self.lib.dnnl_memory_desc_equal.argtypes = [_c, _c]
        self.engine, self.stream = _c(), _c()
        self.call('dnnl_engine_create', ctypes.byref(self.engine), ctypes.c_int(_CPU),
                  ctypes.c_size_t(0))
        self.call('dnnl_stream_create', ctypes.byref(self.stream), self.engine,
                  ctypes.c_uint(_IN_ORDER))
        # each primitive's scratch memory comes from our workspace at execution: oneDNN would
        # otherwise keep one per primitive, for as long as the primitive lives
        self.attr = _c()
        self.call('dnnl_primitive_attr_create', ctypes.byref(self.attr))
        self.call('dnnl_primitive_attr_set_scratchpad_mode', self.attr,
                  ctypes.c_int(_SCRATCHPAD_MODE_USER))
        self.transient = []  # memory objects of the current call: see `release`

    def call(self, name: str, *args) -> None:
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise OneDNNError(f'oneDNN {name} failed (status {status})')

    def desc(self, shape: Sequence[int], tag: int) -> _c:
        md = _c()
        self.call('dnnl_memory_desc_create_with_tag', ctypes.byref(md), ctypes.c_int(len(shape)),
                  _Dims(*shape), ctypes.c_int(_F32), ctypes.c_int(tag))
        return md

    def query(self, pd: _c, what: str) -> _c:
        return _c(self.lib.dnnl_primitive_desc_query_md(pd, _QUERY_MD[what], 0))

    def primitive(self, pd: _c) -> _c:
        primitive = _c()
        self.call('dnnl_primitive_create', ctypes.byref(primitive), pd)
        return primitive

    def memory(self, md: _c, pointer: int) -> _c:
        """A memory object for the data at `pointer`, destroyed by the next `release()`."""
        memory = _c()
        self.call('dnnl_memory_create', ctypes.byref(memory), md, self.engine, _c(pointer))
        self.transient.append(memory)
        return memory

    def release(self) -> None:
        """Wait for the stream, then destroy the memory objects made since the last release."""
        self.call('dnnl_stream_wait', self.stream)
        for memory in self.transient:
            self.lib.dnnl_memory_destroy(memory)
        self.transient.clear()

    def destroy(self, primitives: Sequence[_c] = (), pds: Sequence[_c] = (),
                descs: Sequence[_c] = ()) -> None:
        for primitive in primitives:
            self.lib.dnnl_primitive_destroy(primitive)
        for pd in pds:
            self.lib.dnnl_primitive_desc_destroy(pd)
        for md in descs:
            self.lib.dnnl_memory_desc_destroy(md)

    def execute(self, primitive: _c, args: dict) -> None:
        array = (_ExecArg * len(args))(*[_ExecArg(_ARG[k], m) for k, m in args.items()])
        self.call('dnnl_primitive_execute', primitive, self.stream, ctypes.c_int(len(args)),
                  array)


class _Operand:
    """One operand of a primitive: its plain NCDHW descriptor and, when the primitive wants
    another layout, the reorders between the two."""

    def __init__(self, library: _Library, shape: Sequence[int], md: _c):
        self.library = library
        self.plain = library.desc(shape, _PLAIN[len(shape)])
        self.md = md
        self.blocked = not library.lib.dnnl_memory_desc_equal(md, self.plain)
        self.primitives, self.pds = [], []
        if self.blocked:
            self.size = library.lib.dnnl_memory_desc_get_size(md) // 4
            self.pds = [_reorder(library, self.plain, md), _reorder(library, md, self.plain)]
            self.to_blocked, self.to_plain = self.primitives = [library.primitive(pd)
                                                                for pd in self.pds]

    def destroy(self) -> None:
        self.library.destroy(self.primitives, self.pds, [self.plain])

    def load(self, pointer: int, slot: int) -> _c:
        """Memory of the plain data at `pointer` in the primitive's layout (a copy in workspace
        `slot` when the layouts differ)."""
        plain = self.library.memory(self.plain, pointer)
        if not self.blocked:
            return plain
        memory = self.target(pointer, slot)
        self.library.execute(self.to_blocked, {'from': plain, 'to': memory})
        return memory

    def target(self, pointer: int, slot: int) -> _c:
        """Memory for the primitive to write a result wanted as plain data at `pointer`: that
        data itself, or room in workspace `slot` that `store` copies from."""
        if not self.blocked:
            return self.library.memory(self.plain, pointer)
        return self.library.memory(self.md, _workspace(slot, self.size).ctypes.data)

    def store(self, memory: _c, pointer: int) -> None:
        if self.blocked:
            self.library.execute(self.to_plain,
                                 {'from': memory, 'to': self.library.memory(self.plain, pointer)})


def _output_shape(x_shape, w_shape, stride, padding) -> list:
    n, _, *spatial = x_shape
    kernel = w_shape[2:]
    return [n, w_shape[0], *[(s + 2 * p - k) // st + 1
                             for s, p, k, st in zip(spatial, padding, kernel, stride)]]


def _reorder(library: _Library, source: _c, target: _c) -> _c:
    pd = _c()
    library.call('dnnl_reorder_primitive_desc_create', ctypes.byref(pd), source,
                 library.engine, target, library.engine, None)
    return pd


class _Plan:
    """The forward, backward-data and backward-weights primitives of one convolution shape.

    Its methods take the addresses of plain float32 data and write plain results.
    """

    def __init__(self, library: _Library, x_shape, w_shape, stride, padding, groups: int):
        self.library = library
        self.passes, self.pds, self.descs = {}, [], []
        out_channels = w_shape[0]
        self.x_shape, self.y_shape = list(x_shape), _output_shape(x_shape, w_shape, stride,
                                                                   padding)
        self.w_shape = list(w_shape)
        if groups > 1:  # oneDNN's grouped weights: [groups, out / groups, in / groups, k...]
            self.w_shape = [groups, out_channels // groups, *w_shape[1:]]
        geometry = (_Dims(*stride), _Dims(*[0] * len(stride)), _Dims(*padding),
                    _Dims(*padding))
        any_x, any_w, any_y = (library.desc(s, _ANY)
                               for s in (self.x_shape, self.w_shape, self.y_shape))
        forward_pd, data_pd, weights_pd = self.pds = _c(), _c(), _c()
        self.descs = [any_x, any_w, any_y]
        library.call('dnnl_convolution_forward_primitive_desc_create', ctypes.byref(forward_pd),
                     library.engine, ctypes.c_int(_FORWARD_TRAINING),
                     ctypes.c_int(_CONVOLUTION_DIRECT), any_x, any_w, None, any_y, *geometry,
                     library.attr)
        library.call('dnnl_convolution_backward_data_primitive_desc_create',
                     ctypes.byref(data_pd), library.engine, ctypes.c_int(_CONVOLUTION_DIRECT),
                     any_x, any_w, any_y, *geometry, forward_pd, library.attr)
        library.call('dnnl_convolution_backward_weights_primitive_desc_create',
                     ctypes.byref(weights_pd), library.engine,
                     ctypes.c_int(_CONVOLUTION_DIRECT), any_x, any_w, None, any_y, *geometry,
                     forward_pd, library.attr)
        shapes = {'src': self.x_shape, 'diff_src': self.x_shape, 'weights': self.w_shape,
                  'diff_weights': self.w_shape, 'dst': self.y_shape, 'diff_dst': self.y_shape}
        self.passes = {}
        for name, pd, args in (('forward', forward_pd, ('src', 'weights', 'dst')),
                               ('data', data_pd, ('diff_dst', 'weights', 'diff_src')),
                               ('weights', weights_pd, ('src', 'diff_dst', 'diff_weights'))):
            operands = {a: _Operand(library, shapes[a], library.query(pd, a)) for a in args}
            scratchpad = library.query(pd, 'scratchpad')
            self.passes[name] = (library.primitive(pd), operands, scratchpad,
                                 library.lib.dnnl_memory_desc_get_size(scratchpad) // 4)
        # the data pass may take grad_y as the weights pass reordered it
        self.share_grad_y = bool(library.lib.dnnl_memory_desc_equal(
            self.passes['data'][1]['diff_dst'].md, self.passes['weights'][1]['diff_dst'].md))

    def __del__(self):
        """Free the primitives and descriptors: plans dropped from the cache (and by the
        convolutions that used them) take their oneDNN objects with them."""
        try:
            for primitive, operands, _, _ in self.passes.values():
                self.library.destroy([primitive])
                for operand in operands.values():
                    operand.destroy()
            self.library.destroy(pds=self.pds, descs=self.descs)
        except Exception:  # at interpreter exit, ctypes may be gone first
            pass

    def run(self, name: str, inputs: dict, output: str, pointer: int,
            loaded: Optional[dict] = None) -> None:
        """Run pass `name` on the plain data at `inputs` (argument -> address; `loaded`:
        argument -> memory already in its layout, from `_Operand.load`), writing `output` as
        plain data at `pointer`."""
        primitive, operands, scratchpad, scratchpad_size = self.passes[name]
        memories = dict(loaded or {})
        for arg, address in inputs.items():
            memories[arg] = operands[arg].load(address, _SLOTS[name][arg])
        memories[output] = operands[output].target(pointer, _SLOTS[name][output])
        if scratchpad_size:
            scratch = _workspace(_SCRATCHPAD_SLOT, scratchpad_size)
            memories['scratchpad'] = self.library.memory(scratchpad, scratch.ctypes.data)
        self.library.execute(primitive, memories)
        operands[output].store(memories[output], pointer)

    def backward(self, x: int, weight: int, grad_y: int, grad_x: Optional[int],
                 grad_w: Optional[int]) -> None:
        """Write the gradients of x and of the weights (each unless its address is None). The
        weights first: the data pass may reuse grad_y's copy in the weights pass's layout."""
        grad_y_loaded = None
        if grad_w is not None:
            grad_y_loaded = self.passes['weights'][1]['diff_dst'].load(grad_y,
                                                                      _SLOTS['weights']['diff_dst'])
            self.run('weights', {'src': x}, 'diff_weights', grad_w,
                     {'diff_dst': grad_y_loaded})
        if grad_x is not None:
            if grad_y_loaded is not None and self.share_grad_y:
                inputs, loaded = {'weights': weight}, {'diff_dst': grad_y_loaded}
            else:
                inputs, loaded = {'weights': weight, 'diff_dst': grad_y}, None
            self.run('data', inputs, 'diff_src', grad_x, loaded)


# The copies in oneDNN's layouts live in three buffers that grow to the largest size asked for
# and are kept: no allocation per call (and no page faults on fresh memory), and a fixed memory
# cost of 3 x the largest chunk. One slot per role: the operands of a pass never share one, and
# grad_y's copy survives from the weights pass to the data pass.
_SLOTS = {'forward': {'src': 0, 'weights': 1, 'dst': 2},
          'weights': {'diff_dst': 0, 'src': 1, 'diff_weights': 2},
          'data': {'diff_dst': 0, 'weights': 1, 'diff_src': 2}}
_SCRATCHPAD_SLOT = 3
_workspaces = {}


def _workspace(slot: int, size: int) -> np.ndarray:
    buffer = _workspaces.get(slot)
    if buffer is None or buffer.size < size:
        buffer = _workspaces[slot] = np.empty(size, np.float32)
    return buffer[:size]


_state = threading.local()
_library: Optional[_Library] = None
_load_error: Optional[str] = None
_plans: 'collections.OrderedDict' = collections.OrderedDict()


def library() -> Optional[_Library]:
    """The loaded library, or None (and the reason in `load_error()`) where it cannot load."""
    global _library, _load_error
    if _library is None and _load_error is None:
        try:
            _library = _Library()
        except (OSError, AttributeError, OneDNNError) as e:
            _load_error = f'{type(e).__name__}: {e}'
    return _library


def load_error() -> Optional[str]:
    library()
    return _load_error


def enabled() -> bool:
    """Whether `Conv3D` layers use oneDNN (default: yes, where it loads); see `use_onednn`."""
    return getattr(_state, 'enabled', True) and library() is not None


class use_onednn:
    """`with use_onednn(False):` runs `Conv3D` layers on Paddle's own kernel (and True on
    oneDNN) in this thread, for comparisons and benchmarks."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        self.previous = getattr(_state, 'enabled', True)
        _state.enabled = self.on

    def __exit__(self, *exc_info):
        _state.enabled = self.previous


def _plan(x_shape, w_shape, stride, padding, groups) -> _Plan:
    key = (tuple(x_shape), tuple(w_shape), tuple(stride), tuple(padding), groups)
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = _Plan(library(), x_shape, w_shape, stride, padding, groups)
        if len(_plans) > PLAN_CACHE_SIZE:
            _plans.popitem(last=False)
    else:
        _plans.move_to_end(key)
    return plan


class _BatchChunks:
    """A convolution run a few clips at a time, so that the copies of x and y in oneDNN's
    layouts stay small (CHUNK_BYTES): a training step's peak memory then exceeds Paddle's own
    convolution's by a fraction of one activation, not by the largest one."""

    def __init__(self, x_shape, w_shape, stride, padding, groups):
        n = x_shape[0]
        self.y_shape = _output_shape(x_shape, w_shape, stride, padding)
        self.x_clip, self.y_clip = 4 * math.prod(x_shape[1:]), 4 * math.prod(self.y_shape[1:])
        size = max(1, min(n, CHUNK_BYTES // max(self.x_clip, self.y_clip)))
        self.chunks = [(start, min(size, n - start)) for start in range(0, n, size)]
        self.plans = {c: _plan([c, *x_shape[1:]], w_shape, stride, padding, groups)
                      for c in {c for _, c in self.chunks}}
        self.library = library()

    def forward(self, x: paddle.Tensor, weight: paddle.Tensor) -> paddle.Tensor:
        y = paddle.empty(self.y_shape, dtype='float32')
        for start, count in self.chunks:
            self.plans[count].run('forward', {'src': x.data_ptr() + start * self.x_clip,
                                              'weights': weight.data_ptr()},
                                  'dst', y.data_ptr() + start * self.y_clip)
            self.library.release()
        return y

    def backward(self, x, weight, grad_y, need_x: bool, need_weights: bool):
        grad_x = paddle.empty(x.shape, dtype='float32') if need_x else None
        grad_w = chunk_grad_w = None
        if need_weights:  # summed over the chunks
            grad_w = paddle.empty(weight.shape, dtype='float32')
            chunk_grad_w = paddle.empty(weight.shape, dtype='float32') if len(
                self.chunks) > 1 else grad_w
        for i, (start, count) in enumerate(self.chunks):
            self.plans[count].backward(
                x.data_ptr() + start * self.x_clip, weight.data_ptr(),
                grad_y.data_ptr() + start * self.y_clip,
                grad_x.data_ptr() + start * self.x_clip if need_x else None,
                (grad_w if i == 0 else chunk_grad_w).data_ptr() if need_weights else None)
            self.library.release()
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
        if hasattr(grad_y, 'contiguous'):
            grad_y = grad_y.contiguous()
        return ctx.convolution.backward(x, weight, grad_y, not x.stop_gradient,
                                        not weight.stop_gradient)


@paddle.jit.not_to_static  # Paddle 2.6 may run paddle.jit's rewrite of Conv3D.forward in dygraph
def conv3d(x: paddle.Tensor, weight: paddle.Tensor, stride, padding, groups: int = 1):
    """`paddle.nn.functional.conv3d(x, weight, stride=stride, padding=padding, groups=groups)`
    (NCDHW, no bias, no dilation) on oneDNN."""
    if hasattr(x, 'contiguous'):
        x = x.contiguous()
    try:
        convolution = _BatchChunks(x.shape, weight.shape, stride, padding, groups)
    except OneDNNError as e:  # a shape oneDNN has no implementation for: Paddle's kernel
        warnings.warn(f'a convolution of input {list(x.shape)} and weights '
                      f'{list(weight.shape)} runs on Paddle\'s kernel: {e}', stacklevel=2)
        return paddle.nn.functional.conv3d(x, weight, stride=stride, padding=padding,
                                           groups=groups)
    return _Convolution.apply(x, weight, convolution)


class Conv3D(paddle.nn.Conv3D):
    """`paddle.nn.Conv3D` (same parameters, names and state dict) whose dygraph forward on CPU
    runs on oneDNN when it can: float32, NCDHW, zeros padding of one number per dimension, no
    dilation."""

    def forward(self, x):
        padding = self._onednn_padding(x)
        if padding is None:  # Paddle 2.6's paddle.jit rewrites this code: no zero-argument super()
            return paddle.nn.Conv3D.forward(self, x)
        y = conv3d(x, self.weight, self._stride, padding, self._groups)
        if self.bias is not None:
            y = y + self.bias.reshape([1, -1, 1, 1, 1])
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
        if (paddle.in_dynamic_mode() and enabled() and x.place.is_cpu_place()
                and x.dtype == paddle.float32 and self._data_format == 'NCDHW'
                and self._padding_mode == 'zeros' and list(self._dilation) == [1, 1, 1]):
            return list(padding)
        return None
