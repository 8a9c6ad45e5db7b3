"""3D convolutions on oneDNN for Paddle's dygraph on CPU (forward and both backward passes).

Paddle's dygraph `conv3d` on CPU is im2col + GEMM (about 80-120 GFLOP/s on a 2-core AVX-512
machine); oneDNN's direct convolution in its blocked layout reaches about 270 there, as in
PyTorch, whose CPU convolutions are oneDNN's. Paddle ships oneDNN (`paddle/libs/libdnnl.so.3`)
but its dygraph does not call it for conv3d, so `Conv3D` below calls it through oneDNN's C API
(ctypes): plain NCDHW tensors are reordered into the layout oneDNN picks, convolved, and the
result reordered back. Where the library cannot be loaded (or is not oneDNN 3.x), or outside
dygraph on CPU (`paddle.jit` export, GPU), `Conv3D` is Paddle's own. oneDNN gets host memory
only: input and weights both on the CPU, results allocated there; the library is loaded on
the first convolution that qualifies, so GPU runs never load it.

bfloat16: under `compute_dtype('bfloat16')` (where `bfloat16_supported()`), the reorders into
oneDNN's layout also convert src, weights and diff_dst to bfloat16, and the primitives
accumulate in float32 and write float32 dst, diff_src and diff_weights: Paddle sees float32
tensors. Inside `channels_last()` the layers also take bfloat16 tensors (ResNet's trunk under
bfloat16, as PyTorch's autocast keeps its activations), and give bfloat16 outputs and input
gradients; weights, their gradients, BN's statistics, scale and shift stay float32.

Max pooling (`MaxPool3D`, the stem's) runs on oneDNN too, forward and backward, on Paddle's
plain float32 tensors: Paddle's CPU kernel took 8x longer.

Channels-last: inside `channels_last()` (which `resnet.ResNet` enters for its trunk), these
layers, `BatchNorm3D` and `add_relu` take NDHWC tensors. The convolutions then read and write
the activations as they are (no reorders; float32 ones under bfloat16 products are converted),
batch normalization runs on oneDNN's channels-last kernels with the ReLU after it fused, forward
and backward (oneDNN's BN on Paddle's NCDHW layout is 8x slower than Paddle's own, on NDHWC 2-3x
faster), and a block's residual sum with its ReLU is one pass. Against the NCDHW trunk, R3D-50's
training step is 6-8% shorter in float32 and 16% in bfloat16, R3D-18's 3-6% (2-core AMD EPYC).

Public: `Conv3D`, `conv3d`, `MaxPool3D`, `max_pool3d`, `BatchNorm3D`, `use_onednn`,
`use_channels_last`, `channels_last`, `compute_dtype`, `bfloat16_supported`, `library`,
`load_error`, and the dnnl_*/DNNL_* constants (named as in oneDNN's C headers). Inside:
`_SIGNATURES` declares every C function called; `_Library` owns the engine, stream and memory
objects; `_Plan` holds the three primitives of one convolution shape; `_BatchChunks` runs a
batch through plans a few clips at a time; `_PoolPlan` and `_NormPlan` a pooling and a batch
normalization shape's.
"""
import collections
import ctypes
import math
import os
import threading
import warnings
from typing import NamedTuple, Optional, Sequence

import numpy as np
import paddle
from paddle.autograd import PyLayer

# oneDNN 3.x's C API: the enum values used here, named as in oneapi/dnnl/dnnl_types.h and
# dnnl_common_types.h (checked against v3.6.2, the one in Paddle 3.3's wheel; fixed across 3.x).
dnnl_success = 0  # dnnl_status_t
_STATUS_NAMES = {1: 'dnnl_out_of_memory', 2: 'dnnl_invalid_arguments', 3: 'dnnl_unimplemented',
                 4: 'dnnl_last_impl_reached', 5: 'dnnl_runtime_error', 6: 'dnnl_not_required'}
dnnl_cpu = 1  # dnnl_engine_kind_t
dnnl_stream_in_order = 1  # dnnl_stream_flags_t
dnnl_bf16, dnnl_f32 = 2, 3  # dnnl_data_type_t
dnnl_format_tag_any = 1  # dnnl_format_tag_t: the primitive picks the layout
dnnl_a, dnnl_ab, dnnl_abcde, dnnl_abcdef = 2, 3, 6, 7  # dnnl_format_tag_t: plain (row-major)
dnnl_acdeb = 33  # dnnl_format_tag_t: channels-last 5D (NDHWC)
dnnl_forward_training, dnnl_forward_inference, dnnl_backward = 64, 96, 128  # dnnl_prop_kind_t
dnnl_convolution_direct, dnnl_pooling_max = 1, 0x1ff  # dnnl_alg_kind_t
dnnl_eltwise_relu, dnnl_eltwise_relu_use_dst_for_bwd, dnnl_binary_add = 0x20, 0x100, 0x1fff0
dnnl_scratchpad_mode_user = 1  # dnnl_scratchpad_mode_t: scratch memory passed at execution
dnnl_use_global_stats, dnnl_use_scale, dnnl_use_shift = 0x1, 0x2, 0x4  # dnnl_normalization_flags_t
dnnl_fuse_norm_relu = 0x8
dnnl_query_src_md, dnnl_query_diff_src_md = 129, 130  # dnnl_query_t
dnnl_query_weights_md, dnnl_query_diff_weights_md = 131, 132
dnnl_query_dst_md, dnnl_query_diff_dst_md = 133, 134
dnnl_query_workspace_md, dnnl_query_scratchpad_md = 135, 136
DNNL_ARG_SRC, DNNL_ARG_SRC_1, DNNL_ARG_DST, DNNL_ARG_WEIGHTS = 1, 2, 17, 33  # arguments
DNNL_ARG_DIFF_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS = 129, 145, 161
DNNL_ARG_FROM, DNNL_ARG_TO = DNNL_ARG_SRC, DNNL_ARG_DST  # a reorder's source and destination
DNNL_ARG_WORKSPACE, DNNL_ARG_SCRATCHPAD = 64, 80
DNNL_ARG_MEAN, DNNL_ARG_VARIANCE, DNNL_ARG_SCALE, DNNL_ARG_SHIFT = 49, 50, 51, 52
DNNL_ARG_DIFF_SCALE, DNNL_ARG_DIFF_SHIFT = 255, 256
DNNL_MAX_NDIMS = 12
dnnl_cpu_isa_avx512_core_bf16 = 0xE7  # dnnl_cpu_isa_t: a bit mask, included in the AMX ISAs'

# Paddle's dense tensors in oneDNN's words: the plain tag of each number of dimensions.
PLAIN_TAGS = {2: dnnl_ab, 5: dnnl_abcde, 6: dnnl_abcdef}
# Arguments by their oneDNN names (what `_Library.execute` takes) and the queries of their
# memory descriptors.
ARGS = {'src': DNNL_ARG_SRC, 'src_1': DNNL_ARG_SRC_1, 'dst': DNNL_ARG_DST,
        'weights': DNNL_ARG_WEIGHTS,
        'diff_src': DNNL_ARG_DIFF_SRC, 'diff_dst': DNNL_ARG_DIFF_DST,
        'diff_weights': DNNL_ARG_DIFF_WEIGHTS, 'from': DNNL_ARG_FROM, 'to': DNNL_ARG_TO,
        'scratchpad': DNNL_ARG_SCRATCHPAD, 'workspace': DNNL_ARG_WORKSPACE,
        'mean': DNNL_ARG_MEAN, 'variance': DNNL_ARG_VARIANCE, 'scale': DNNL_ARG_SCALE,
        'shift': DNNL_ARG_SHIFT, 'diff_scale': DNNL_ARG_DIFF_SCALE,
        'diff_shift': DNNL_ARG_DIFF_SHIFT}
_QUERIES = {'src': dnnl_query_src_md, 'diff_src': dnnl_query_diff_src_md,
            'weights': dnnl_query_weights_md, 'diff_weights': dnnl_query_diff_weights_md,
            'dst': dnnl_query_dst_md, 'diff_dst': dnnl_query_diff_dst_md,
            'scratchpad': dnnl_query_scratchpad_md, 'workspace': dnnl_query_workspace_md}

# Plans (primitives) kept per convolution shape; training uses a handful of shapes.
PLAN_CACHE_SIZE = 256
# Largest copy of one operand in oneDNN's layout: clips are convolved this many bytes at a time.
CHUNK_BYTES = 32 * 2**20

_Dims = ctypes.c_int64 * DNNL_MAX_NDIMS  # dnnl_dims_t
_c = ctypes.c_void_p  # every oneDNN handle: engine, stream, descriptors, primitives, memory


class _Version(ctypes.Structure):  # dnnl_version_t
    _fields_ = [('major', ctypes.c_int), ('minor', ctypes.c_int), ('patch', ctypes.c_int),
                ('hash', ctypes.c_char_p), ('cpu_runtime', ctypes.c_uint),
                ('gpu_runtime', ctypes.c_uint)]


class _ExecArg(ctypes.Structure):  # dnnl_exec_arg_t
    _fields_ = [('arg', ctypes.c_int), ('memory', ctypes.c_void_p)]


_status = _int = ctypes.c_int  # dnnl_status_t and every enum are C ints
_out = ctypes.POINTER(_c)  # where a create function writes the new handle
_dims = ctypes.POINTER(ctypes.c_int64)  # a dnnl_dims_t argument
_GEOMETRY = [_dims] * 4  # strides, dilates, padding_l, padding_r
# name: (restype, argtypes) of every C function called (here and by util_scripts.benchmark),
# from oneapi/dnnl/dnnl.h and dnnl_common.h; set once when the library loads.
_SIGNATURES = {
    'dnnl_version': (ctypes.POINTER(_Version), []),
    'dnnl_get_effective_cpu_isa': (_int, []),
    'dnnl_set_verbose': (_status, [_int]),
    'dnnl_engine_create': (_status, [_out, _int, ctypes.c_size_t]),
    'dnnl_stream_create': (_status, [_out, _c, ctypes.c_uint]),
    'dnnl_stream_wait': (_status, [_c]),
    'dnnl_primitive_attr_create': (_status, [_out]),
    'dnnl_primitive_attr_set_scratchpad_mode': (_status, [_c, _int]),
    'dnnl_primitive_attr_set_post_ops': (_status, [_c, _c]),
    'dnnl_post_ops_create': (_status, [_out]),
    'dnnl_post_ops_append_eltwise': (_status, [_c, _int, ctypes.c_float, ctypes.c_float]),
    'dnnl_post_ops_destroy': (_status, [_c]),
    'dnnl_memory_desc_create_with_tag': (_status, [_out, _int, _dims, _int, _int]),
    'dnnl_memory_desc_equal': (_int, [_c, _c]),
    'dnnl_memory_desc_get_size': (ctypes.c_size_t, [_c]),
    'dnnl_memory_desc_destroy': (_status, [_c]),
    'dnnl_memory_create': (_status, [_out, _c, _c, _c]),
    'dnnl_memory_destroy': (_status, [_c]),
    'dnnl_reorder_primitive_desc_create': (_status, [_out, _c, _c, _c, _c, _c]),
    'dnnl_convolution_forward_primitive_desc_create': (
        _status, [_out, _c, _int, _int, _c, _c, _c, _c, *_GEOMETRY, _c]),
    'dnnl_convolution_backward_data_primitive_desc_create': (
        _status, [_out, _c, _int, _c, _c, _c, *_GEOMETRY, _c, _c]),
    'dnnl_convolution_backward_weights_primitive_desc_create': (
        _status, [_out, _c, _int, _c, _c, _c, _c, *_GEOMETRY, _c, _c]),
    'dnnl_pooling_forward_primitive_desc_create': (  # strides, kernel, dilation, padding l/r
        _status, [_out, _c, _int, _int, _c, _c, *[_dims] * 5, _c]),
    'dnnl_pooling_backward_primitive_desc_create': (
        _status, [_out, _c, _int, _c, _c, *[_dims] * 5, _c, _c]),
    'dnnl_matmul_primitive_desc_create': (_status, [_out, _c, _c, _c, _c, _c, _c]),
    'dnnl_binary_primitive_desc_create': (_status, [_out, _c, _int, _c, _c, _c, _c]),
    'dnnl_eltwise_forward_primitive_desc_create': (  # alpha, beta
        _status, [_out, _c, _int, _int, _c, _c, ctypes.c_float, ctypes.c_float, _c]),
    'dnnl_eltwise_backward_primitive_desc_create': (
        _status, [_out, _c, _int, _c, _c, _c, ctypes.c_float, ctypes.c_float, _c, _c]),
    'dnnl_batch_normalization_forward_primitive_desc_create': (  # epsilon, flags
        _status, [_out, _c, _int, _c, _c, ctypes.c_float, ctypes.c_uint, _c]),
    'dnnl_batch_normalization_backward_primitive_desc_create': (
        _status, [_out, _c, _int, _c, _c, _c, ctypes.c_float, ctypes.c_uint, _c, _c]),
    'dnnl_primitive_desc_query_md': (_c, [_c, _int, _int]),
    'dnnl_primitive_desc_destroy': (_status, [_c]),
    'dnnl_primitive_create': (_status, [_out, _c]),
    'dnnl_primitive_execute': (_status, [_c, _c, _int, ctypes.POINTER(_ExecArg)]),
    'dnnl_primitive_destroy': (_status, [_c]),
}


class OneDNNError(RuntimeError):
    pass


class OneDNNVersionError(OneDNNError):
    """The library is not oneDNN 3.x, whose C API this module is written for."""


def _version(lib: ctypes.CDLL) -> _Version:
    """The loaded library's dnnl_version_t (major, minor, patch, ...)."""
    function = lib.dnnl_version
    function.restype, function.argtypes = _SIGNATURES['dnnl_version']
    return function().contents


class _Library:
    """libdnnl.so.3 from Paddle's wheel, a CPU engine and a stream.

    Not thread-safe: `transient` (and the module's workspaces) serve one call at a time, which
    the module lock `_lock` ensures."""

    def __init__(self):
        self.lib = ctypes.CDLL(library_path())
        self.version = _version(self.lib)
        if self.version.major != 3:  # the enum values and signatures above are 3.x's
            v = self.version
            raise OneDNNVersionError(f'oneDNN {v.major}.{v.minor}.{v.patch} (3.x needed)')
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(self.lib, name)
            function.restype, function.argtypes = restype, argtypes
        self.engine, self.stream = _c(), _c()
        self.call('dnnl_engine_create', ctypes.byref(self.engine), dnnl_cpu, 0)
        self.call('dnnl_stream_create', ctypes.byref(self.stream), self.engine,
                  dnnl_stream_in_order)
        self.attr, self.relu_attr = self._attributes(), self._attributes(relu=True)
        self.transient = []  # memory objects of the current call: see `release`

    def _attributes(self, relu: bool = False) -> _c:
        """Primitive attributes: each primitive's scratch memory comes from our workspace at
        execution (oneDNN would otherwise keep one per primitive, for as long as the primitive
        lives); with `relu`, a ReLU is applied to the primitive's result."""
        attr = _c()
        self.call('dnnl_primitive_attr_create', ctypes.byref(attr))
        self.call('dnnl_primitive_attr_set_scratchpad_mode', attr, dnnl_scratchpad_mode_user)
        if relu:
            post_ops = _c()
            self.call('dnnl_post_ops_create', ctypes.byref(post_ops))
            self.call('dnnl_post_ops_append_eltwise', post_ops, dnnl_eltwise_relu, 0.0, 0.0)
            self.call('dnnl_primitive_attr_set_post_ops', attr, post_ops)
            self.call('dnnl_post_ops_destroy', post_ops)
        return attr

    def call(self, name: str, *args) -> None:
        """Call a function that returns a dnnl_status_t; raise OneDNNError unless it succeeded."""
        status = getattr(self.lib, name)(*args)
        if status != dnnl_success:
            raise OneDNNError(f'oneDNN {name} failed '
                              f'(status {status}: {_STATUS_NAMES.get(status, "unknown")})')

    def desc(self, shape: Sequence[int], tag: int, dtype: int = dnnl_f32) -> _c:
        """A memory descriptor (destroyed by `destroy`); `tag` and `dtype`: dnnl_* constants."""
        md = _c()
        self.call('dnnl_memory_desc_create_with_tag', ctypes.byref(md), len(shape),
                  _Dims(*shape), dtype, tag)
        return md

    def query(self, pd: _c, what: str) -> _c:
        """The memory descriptor of argument `what` (a key of `ARGS`), owned by `pd`."""
        return _c(self.lib.dnnl_primitive_desc_query_md(pd, _QUERIES[what], 0))

    def size(self, md: _c) -> int:
        """Bytes of data that `md` describes."""
        return self.lib.dnnl_memory_desc_get_size(md)

    def equal(self, a: _c, b: _c) -> bool:
        return bool(self.lib.dnnl_memory_desc_equal(a, b))

    def primitive(self, pd: _c) -> _c:
        primitive = _c()
        self.call('dnnl_primitive_create', ctypes.byref(primitive), pd)
        return primitive

    def memory(self, md: _c, pointer: int) -> _c:
        """A memory object for the data at `pointer`, destroyed by the next `release()`."""
        memory = _c()
        self.call('dnnl_memory_create', ctypes.byref(memory), md, self.engine, pointer)
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
        """Run `primitive` on `args`: argument name (a key of `ARGS`) -> memory object."""
        array = (_ExecArg * len(args))(*[_ExecArg(ARGS[k], m) for k, m in args.items()])
        self.call('dnnl_primitive_execute', primitive, self.stream, len(args), array)


class _Operand:
    """One operand of a primitive: its plain descriptor (Paddle's tensor: layout `tag`, by
    default row-major as NCDHW, and `dtype`) and, when the primitive wants another layout or
    data type, the reorders between the two (a reorder converts float32 to bfloat16 and
    back)."""

    def __init__(self, library: _Library, shape: Sequence[int], md: _c, tag: int = None,
                 dtype: int = dnnl_f32):
        self.library = library
        self.plain = library.desc(shape, tag or PLAIN_TAGS[len(shape)], dtype)
        self.md = md
        self.reordered = not library.equal(md, self.plain)
        self.primitives, self.pds = [], []
        if self.reordered:
            self.bytes = library.size(md)
            self.pds = [_reorder(library, self.plain, md), _reorder(library, md, self.plain)]
            self.to_blocked, self.to_plain = self.primitives = [library.primitive(pd)
                                                                for pd in self.pds]

    def destroy(self) -> None:
        self.library.destroy(self.primitives, self.pds, [self.plain])

    def load(self, pointer: int, slot: int) -> _c:
        """Memory of the plain data at `pointer` in the primitive's layout (a copy in workspace
        `slot` when the layouts differ)."""
        plain = self.library.memory(self.plain, pointer)
        if not self.reordered:
            return plain
        memory = self.target(pointer, slot)
        self.library.execute(self.to_blocked, {'from': plain, 'to': memory})
        return memory

    def target(self, pointer: int, slot: int) -> _c:
        """Memory for the primitive to write a result wanted as plain data at `pointer`: that
        data itself, or room in workspace `slot` that `store` copies from."""
        if not self.reordered:
            return self.library.memory(self.plain, pointer)
        return self.library.memory(self.md, _workspace(slot, self.bytes))

    def store(self, memory: _c, pointer: int) -> None:
        if self.reordered:
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


class _PlanKey(NamedTuple):
    """What a plan is built for (and cached by)."""
    x_shape: tuple
    w_shape: tuple
    stride: tuple
    padding: tuple
    groups: int
    dtype: str  # of the products: 'float32' or 'bfloat16' (accumulated in float32)
    channels_last: bool = False  # x and y in memory as NDHWC (shapes as ever NCDHW)
    activations: str = 'float32'  # x, y and their gradients in memory ('bfloat16': channels-last)


_DNNL_TYPES = {'float32': dnnl_f32, 'bfloat16': dnnl_bf16}


class _ConvGeometry(NamedTuple):
    """The dnnl_dims_t arguments of oneDNN's convolution descriptors, in their order."""
    strides: ctypes.Array
    dilates: ctypes.Array
    padding_l: ctypes.Array
    padding_r: ctypes.Array


class _PoolGeometry(NamedTuple):
    """The dnnl_dims_t arguments of oneDNN's pooling descriptors, in their order."""
    strides: ctypes.Array
    kernel: ctypes.Array
    dilation: ctypes.Array
    padding_l: ctypes.Array
    padding_r: ctypes.Array


class _Pass(NamedTuple):
    """One primitive of a plan (forward, backward-data or backward-weights)."""
    primitive: _c
    operands: dict  # argument name -> _Operand
    scratchpad: _c  # descriptor of the scratch memory it asks for
    scratchpad_bytes: int

    def execute(self, library: '_Library', memories: dict) -> None:
        """Run the primitive on `memories` (argument -> memory), its scratch memory in the
        shared workspace."""
        if self.scratchpad_bytes:
            memories['scratchpad'] = library.memory(
                self.scratchpad, _workspace(_SCRATCHPAD_SLOT, self.scratchpad_bytes))
        library.execute(self.primitive, memories)


def _weights_pass_padding(key: _PlanKey) -> tuple:
    """The zeros a plan adds around x, per spatial dimension, before its backward-weights pass
    (which then pads by the rest of `key.padding`): enough that no kernel is deeper, taller or
    wider than the input it reads (see `_Plan`). A valid convolution's padding always suffices:
    its output is at least 1 long, so size + 2 x padding >= kernel."""
    return tuple(p if size < kernel else 0
                 for size, kernel, p in zip(key.x_shape[2:], key.w_shape[2:], key.padding))


class _Plan:
    """The forward, backward-data and backward-weights primitives of one convolution shape.

    Its methods take the addresses of plain data and write plain results: float32 weights and
    diff_weights, and x, y and their gradients in `key.activations` (float32, or bfloat16 in a
    channels-last trunk). The primitives read src, weights and diff_dst in `key.dtype` (the
    reorders convert them) and write dst and diff_src in `key.activations`.

    When the kernel is deeper (taller, wider) than the input it slides over, as in R3D's layer3
    and layer4 at 16 frames (depth 2 and 1, kernel 3), oneDNN 3.6's bfloat16 backward-weights
    kernel (jit avx512_core_bf16) returns garbage, and in float32 oneDNN declines its jit
    kernel and takes im2col + GEMM, which writes the weight gradient in a layout that needs a
    slow reorder (R3D-18's layer4: 22 + 7 ms a convolution, against 13.5 + 3 ms). Such a plan
    pads x with zeros in those dimensions itself (a copy in `self.padded`, made on the first
    backward pass and kept with the plan, at most a few times the plan's x: the same weight
    gradient) and runs that pass with the rest of the padding (`_weights_pass_padding`).
    """

    def __init__(self, library: _Library, key: _PlanKey):
        self.library = library
        self.passes, self.pds, self.descs = {}, [], []
        x_shape, w_shape, stride, padding = key.x_shape, key.w_shape, key.stride, key.padding
        groups, dtype, self.channels_last = key.groups, key.dtype, key.channels_last
        self.activations = key.activations
        # x and y: the layout oneDNN picks, or Paddle's channels-last one as it is
        data_tag = dnnl_acdeb if self.channels_last else dnnl_format_tag_any
        out_channels = w_shape[0]
        self.x_shape, self.y_shape = list(x_shape), _output_shape(x_shape, w_shape, stride,
                                                                   padding)
        self.w_shape = list(w_shape)
        if groups > 1:  # oneDNN's grouped weights: [groups, out / groups, in / groups, k...]
            self.w_shape = [groups, out_channels // groups, *w_shape[1:]]
        geometry = _ConvGeometry(_Dims(*stride), _Dims(*[0] * len(stride)), _Dims(*padding),
                                 _Dims(*padding))
        tags = (data_tag, dnnl_format_tag_any, data_tag)
        shapes = (self.x_shape, self.w_shape, self.y_shape)
        x, w, y = (library.desc(s, t, _DNNL_TYPES[dtype]) for s, t in zip(shapes, tags))
        results = (_DNNL_TYPES[key.activations], dnnl_f32, _DNNL_TYPES[key.activations])
        x32, w32, y32 = (library.desc(s, t, r) for s, t, r in zip(shapes, tags, results))
        forward_pd, data_pd, weights_pd = _c(), _c(), _c()
        self.pds = [forward_pd, data_pd, weights_pd]
        self.descs = [x, w, y, x32, w32, y32]
        library.call('dnnl_convolution_forward_primitive_desc_create', ctypes.byref(forward_pd),
                     library.engine, dnnl_forward_training, dnnl_convolution_direct,
                     x, w, None, y32, *geometry, library.attr)
        library.call('dnnl_convolution_backward_data_primitive_desc_create',
                     ctypes.byref(data_pd), library.engine, dnnl_convolution_direct,
                     x32, w, y, *geometry, forward_pd, library.attr)
        added = _weights_pass_padding(key)
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
            rest = _Dims(*[p - a for p, a in zip(padding, added)])
            geometry = geometry._replace(padding_l=rest, padding_r=rest)
            weights_x = library.desc(weights_x_shape, data_tag, _DNNL_TYPES[dtype])
            weights_hint = _c()  # oneDNN wants the forward pass of the same geometry as a hint
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
        activation = (dnnl_acdeb if self.channels_last else None, _DNNL_TYPES[key.activations])
        held = {a: (None, dnnl_f32) if 'weights' in a else activation for a in shapes}
        for name, pd, args in (('forward', forward_pd, ('src', 'weights', 'dst')),
                               ('data', data_pd, ('diff_dst', 'weights', 'diff_src')),
                               ('weights', weights_pd, ('src', 'diff_dst', 'diff_weights'))):
            operands = {a: _Operand(library, weights_x_shape if (name, a) == ('weights', 'src')
                                    else shapes[a], library.query(pd, a), *held[a])
                         for a in args}
            scratchpad = library.query(pd, 'scratchpad')
            self.passes[name] = _Pass(library.primitive(pd), operands, scratchpad,
                                      library.size(scratchpad))
        # the data pass may take grad_y as the weights pass reordered it
        self.share_grad_y = library.equal(self.passes['data'].operands['diff_dst'].md,
                                          self.passes['weights'].operands['diff_dst'].md)

    def in_memory(self, shape: Sequence[int]) -> list:
        """An activation's NCDHW `shape` in the order its memory holds the dimensions."""
        return _ndhwc(shape) if self.channels_last else list(shape)

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
        argument -> memory already in its layout, from `_Operand.load`), writing `output` as
        plain data at `pointer`."""
        step = self.passes[name]
        memories = dict(loaded or {})
        for arg, address in inputs.items():
            memories[arg] = step.operands[arg].load(address, _SLOTS[name][arg])
        memories[output] = step.operands[output].target(pointer, _SLOTS[name][output])
        step.execute(self.library, memories)
        step.operands[output].store(memories[output], pointer)

    def backward(self, x: int, weight: int, grad_y: int, grad_x: Optional[int],
                 grad_w: Optional[int]) -> None:
        """Write the gradients of x and of the weights (each unless its address is None). The
        weights first: the data pass may reuse grad_y's copy in the weights pass's layout."""
        grad_y_loaded = None
        if grad_w is not None:
            grad_y_loaded = self.passes['weights'].operands['diff_dst'].load(
                grad_y, _SLOTS['weights']['diff_dst'])
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


# The copies in oneDNN's layouts live in a few buffers that grow to the largest size asked for
# and are kept: no allocation per call (and no page faults on fresh memory), and a fixed memory
# cost of 3 x the largest chunk. One slot per role: the operands of a pass never share one, and
# grad_y's copy survives from the weights pass to the data pass. The buffers are shared by all
# plans, so one convolution runs at a time: `_lock`.
_SLOTS = {'forward': {'src': 0, 'weights': 1, 'dst': 2},
          'weights': {'diff_dst': 0, 'src': 1, 'diff_weights': 2},
          'data': {'diff_dst': 0, 'weights': 1, 'diff_src': 2}}
_SCRATCHPAD_SLOT = 3
_ALIGNMENT = 64  # bytes: a cache line, and oneDNN's preferred alignment
_workspaces = {}
_lock = threading.Lock()  # held by each convolution call: 0.2 us, against >10 us of work


def _workspace(slot: int, size: int) -> int:
    """The address of `size` bytes of workspace `slot` (aligned to _ALIGNMENT)."""
    buffer = _workspaces.get(slot)
    if buffer is None or buffer.size < size + _ALIGNMENT:
        buffer = _workspaces[slot] = np.empty(size + _ALIGNMENT, np.uint8)
    return -buffer.ctypes.data % _ALIGNMENT + buffer.ctypes.data


_state = threading.local()
_library: Optional[_Library] = None
_load_error: Optional[str] = None
_plans: 'collections.OrderedDict[_PlanKey, _Plan]' = collections.OrderedDict()


def library_path() -> str:
    """Where Paddle's wheel keeps the oneDNN it links (Linux x86 wheels; absent elsewhere)."""
    return os.path.join(os.path.dirname(paddle.__file__), 'libs', 'libdnnl.so.3')


def library() -> Optional[_Library]:
    """The loaded library, or None (and the reason in `load_error()`) where it cannot load.

    The first call loads it. A wheel without the file runs Paddle's kernels silently; a file
    that does not load, lacks a function used here or is not oneDNN 3.x: the same, with one
    warning."""
    global _library, _load_error
    if _library is None and _load_error is None:
        try:
            _library = _Library()
        except (OSError, AttributeError, OneDNNError) as e:
            _load_error = f'{type(e).__name__}: {e}'
            if os.path.exists(library_path()):
                warnings.warn(f"{library_path()}: {_load_error}; 3D convolutions and max "
                              "pooling run on Paddle's kernels", stacklevel=2)
    return _library


def load_error() -> Optional[str]:
    library()
    return _load_error


def enabled() -> bool:
    """Whether `Conv3D` layers use oneDNN (default: yes, where it loads); see `use_onednn`."""
    return use_onednn.current() and library() is not None


class _Setting:
    """A setting of this thread (`_state.<name>`, else `default`) for the `with` block."""
    name, default = None, None

    def __init__(self, value):
        self.value = value

    @classmethod
    def current(cls):
        """The value in effect in this thread."""
        return getattr(_state, cls.name, cls.default)

    def __enter__(self):
        self.previous = self.current()
        setattr(_state, self.name, self.value)

    def __exit__(self, *exc_info):
        setattr(_state, self.name, self.previous)


class use_onednn(_Setting):
    """`with use_onednn(False):` runs `Conv3D` layers on Paddle's own kernel (and True on
    oneDNN) in this thread, for comparisons and benchmarks."""
    name, default = 'enabled', True


class use_channels_last(_Setting):
    """`with use_channels_last(False):` models built for it (`resnet.ResNet`) run their trunk in
    Paddle's NCDHW layout (True: channels-last, where `channels_last_enabled()`), in this
    thread, for comparisons and benchmarks."""
    name, default = 'use_channels_last', True


def channels_last_enabled() -> bool:
    """Whether a model may run channels-last on oneDNN (default: yes, where it loads)."""
    return use_channels_last.current() and enabled()


class channels_last(_Setting):
    """`with channels_last():` the `Conv3D`, `BatchNorm3D` and `MaxPool3D` layers called in this
    thread take and give channels-last (NDHWC) tensors, whatever their data_format says, each on
    oneDNN: its convolutions then need no reorders, and its batch normalization (with the ReLU
    after it fused) runs in oneDNN's channels-last kernels, 2-3x Paddle's. Tensors may be
    float32 or bfloat16. Where a layer cannot run there (not on the CPU, not in dygraph), it
    raises OneDNNError: the model that enters this checks that first (`resnet.ResNet`)."""
    name, default = 'channels_last', False

    def __init__(self):
        super().__init__(True)


def channels_last_active() -> bool:
    return channels_last.current()


@paddle.jit.not_to_static
def _refuse_in_channels_last(layer: paddle.nn.Layer) -> None:
    """Raise OneDNNError inside `channels_last()`: `layer` cannot run there on oneDNN, and its
    Paddle kernel would read the channels-last tensor as its own layout."""
    if channels_last_active():
        raise OneDNNError(f'{layer}: no oneDNN pass for it here (CPU, float32, dygraph, its '
                          'padding, dilation and library), in channels_last()')


def _data_format(own: str) -> str:
    """The layout of the tensors that a layer of data_format `own` gets called with."""
    return 'NDHWC' if channels_last_active() else own


_bfloat16: Optional[bool] = None  # bfloat16_supported()'s answer


def _cpu_has_bfloat16(lib: _Library) -> bool:
    """Whether oneDNN runs bfloat16 dot products natively here (AVX512-BF16 or AMX; its ISA
    also honours ONEDNN_MAX_CPU_ISA). Elsewhere it emulates them, slower than float32."""
    isa = lib.lib.dnnl_get_effective_cpu_isa()
    return isa & dnnl_cpu_isa_avx512_core_bf16 == dnnl_cpu_isa_avx512_core_bf16


def bfloat16_supported() -> bool:
    """Whether `compute_dtype('bfloat16')` can be used: the library loads, the CPU has
    bfloat16 instructions and oneDNN builds a bfloat16 convolution (forward and both
    backward passes). Found out once (loading the library), then cached."""
    global _bfloat16
    if _bfloat16 is None:
        lib = library()
        _bfloat16 = lib is not None and _cpu_has_bfloat16(lib)
        if _bfloat16:
            try:
                _Plan(lib, _PlanKey((1, 16, 4, 8, 8), (16, 16, 3, 3, 3), (1, 1, 1), (1, 1, 1),
                                    1, 'bfloat16'))
            except OneDNNError:
                _bfloat16 = False
    return _bfloat16


class compute_dtype(_Setting):
    """`with compute_dtype('bfloat16'):` the oneDNN convolutions started in this thread
    (`Conv3D` layers on the CPU, `conv3d`) multiply in bfloat16 and accumulate in float32;
    'float32' is the default. Wrap the forward pass, as `paddle.amp.auto_cast`: a
    convolution's backward uses its forward's dtype, wherever `backward()` is called. Tensors
    stay float32, so nothing else in the model or optimizer changes (but for a ResNet's
    channels-last trunk, whose activations it makes bfloat16: `resnet.ResNet.forward`).
    'bfloat16' raises OneDNNError unless `bfloat16_supported()`; the setting is per thread, as
    `use_onednn`."""
    name, default = 'dtype', 'float32'

    def __init__(self, dtype: str):
        if dtype not in _DNNL_TYPES:
            raise ValueError(f'compute_dtype: {dtype!r} is not one of {list(_DNNL_TYPES)}')
        if dtype == 'bfloat16' and not bfloat16_supported():
            raise OneDNNError('bfloat16 convolutions need oneDNN 3.x and a CPU with '
                              'AVX512-BF16 or AMX (onednn.bfloat16_supported() is False'
                              + (f'; {load_error()})' if load_error() else ')'))
        super().__init__(dtype)


def active_compute_dtype() -> str:
    """The dtype of `compute_dtype` in effect in this thread ('float32' outside one)."""
    return compute_dtype.current()


def _cached(cache: collections.OrderedDict, key, make):
    """`cache[key]`, made by `make()` on first use; the least recently used entry leaves."""
    value = cache.get(key)
    if value is None:
        value = cache[key] = make()
        if len(cache) > PLAN_CACHE_SIZE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return value


def _plan(key: _PlanKey) -> _Plan:
    """The cached plan of `key`."""
    return _cached(_plans, key, lambda: _Plan(library(), key))


class _Chunk(NamedTuple):
    start: int  # first clip
    count: int  # number of clips


class _BatchChunks:
    """A convolution run a few clips at a time, so that the copies of x and y in oneDNN's
    layouts stay small (CHUNK_BYTES): a training step's peak memory then exceeds Paddle's own
    convolution's by a fraction of one activation, not by the largest one.

    `x_shape` is NCDHW; with `channels_last`, x and y are NDHWC tensors (clips outermost too)."""

    def __init__(self, x_shape, w_shape, stride, padding, groups, dtype: str = 'float32',
                 channels_last: bool = False, activations: str = 'float32'):
        n = x_shape[0]
        self.y_shape = _output_shape(x_shape, w_shape, stride, padding)
        if channels_last:  # the shape of the tensor y
            self.y_shape = _ndhwc(self.y_shape)
        word = _BYTES[activations]
        self.x_clip = word * math.prod(x_shape[1:])
        self.y_clip = word * math.prod(self.y_shape[1:])
        size = max(1, min(n, CHUNK_BYTES // max(self.x_clip, self.y_clip)))
        self.chunks = [_Chunk(start, min(size, n - start)) for start in range(0, n, size)]
        with _lock:
            self.plans = {count: _plan(_PlanKey((count, *x_shape[1:]), tuple(w_shape),
                                                tuple(stride), tuple(padding), groups,
                                                dtype, channels_last, activations))
                          for count in {chunk.count for chunk in self.chunks}}
        self.library = library()

    def forward(self, x: paddle.Tensor, weight: paddle.Tensor) -> paddle.Tensor:
        y = _empty(self.y_shape, x.place, x.dtype)
        with _lock:
            for start, count in self.chunks:
                self.plans[count].run('forward', {'src': x.data_ptr() + start * self.x_clip,
                                                  'weights': weight.data_ptr()},
                                      'dst', y.data_ptr() + start * self.y_clip)
                self.library.release()
        return y

    def backward(self, x, weight, grad_y, need_x: bool, need_weights: bool):
        grad_x = _empty(x.shape, x.place, x.dtype) if need_x else None
        grad_w = chunk_grad_w = None
        if need_weights:  # summed over the chunks
            grad_w = _empty(weight.shape, x.place)
            chunk_grad_w = _empty(weight.shape, x.place) if len(self.chunks) > 1 else grad_w
        with _lock:
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
def _on_cpu(*tensors: paddle.Tensor) -> bool:
    return all(t.place.is_cpu_place() for t in tensors)


def _empty(shape, place, dtype=paddle.float32) -> paddle.Tensor:
    """An uninitialized tensor on `place`; `paddle.empty` would allocate on the default device
    (a GPU on GPU machines) and takes no place in Paddle 2.6."""
    return paddle._C_ops.empty(list(shape), dtype, place)


_BYTES = {'float32': 4, 'bfloat16': 2}


def _takes(x: paddle.Tensor) -> bool:
    """Whether x's dtype is one the layers here run on oneDNN: float32, and bfloat16 inside
    `channels_last()`."""
    return x.dtype == paddle.float32 or (x.dtype == paddle.bfloat16 and channels_last_active())


def _activations(x: paddle.Tensor) -> str:
    """'bfloat16' for a bfloat16 tensor (in a channels-last trunk), else 'float32'."""
    return 'bfloat16' if x.dtype == paddle.bfloat16 else 'float32'


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
def conv3d(x: paddle.Tensor, weight: paddle.Tensor, stride, padding, groups: int = 1,
           data_format: str = 'NCDHW'):
    """`paddle.nn.functional.conv3d(x, weight, stride=stride, padding=padding, groups=groups,
    data_format=data_format)` (float32 NCDHW or NDHWC, no bias, no dilation) on oneDNN when x
    and weight are on the CPU and the library loads, else on Paddle's kernel."""
    def paddles():
        return paddle.nn.functional.conv3d(x, weight, stride=stride, padding=padding,
                                           groups=groups, data_format=data_format)
    if not (_on_cpu(x, weight) and library() is not None):  # _on_cpu first: no load on GPUs
        return paddles()
    if hasattr(x, 'contiguous'):
        x = x.contiguous()
    channels_last = data_format == 'NDHWC'
    shape = _ncdhw(x.shape) if channels_last else x.shape
    activations = _activations(x)  # bfloat16 ones: bfloat16 products too
    dtype = 'bfloat16' if activations == 'bfloat16' else active_compute_dtype()
    try:
        convolution = _BatchChunks(shape, weight.shape, stride, padding, groups, dtype,
                                   channels_last, activations)
    except OneDNNError as e:  # a shape oneDNN has no implementation for: Paddle's kernel
        warnings.warn(f'a convolution of input {list(x.shape)} ({data_format}) and weights '
                      f'{list(weight.shape)} runs on Paddle\'s kernel: {e}', stacklevel=2)
        return paddles()
    return _Convolution.apply(x, weight, convolution)


def _ncdhw(shape: Sequence[int]) -> list:
    """The NCDHW shape of a channels-last (NDHWC) tensor of `shape`."""
    return [shape[0], shape[-1], *shape[1:-1]]


def _ndhwc(shape: Sequence[int]) -> list:
    """The shape of the channels-last (NDHWC) tensor of NCDHW `shape`."""
    return [shape[0], *shape[2:], shape[1]]


class Conv3D(paddle.nn.Conv3D):
    """`paddle.nn.Conv3D` (same parameters, names and state dict) whose dygraph forward runs on
    oneDNN when it can: input and weights on the CPU, float32, NCDHW (NDHWC inside
    `channels_last()`), zeros padding of one number per dimension, no dilation."""

    def forward(self, x):
        padding = self._onednn_padding(x)
        if padding is None:  # Paddle 2.6's paddle.jit rewrites this code: no zero-argument super()
            _refuse_in_channels_last(self)
            return paddle.nn.Conv3D.forward(self, x)
        data_format = _data_format(self._data_format)
        y = conv3d(x, self.weight, self._stride, padding, self._groups, data_format)
        if self.bias is not None:
            y = y + (self.bias if data_format == 'NDHWC' else self.bias.reshape([1, -1, 1, 1, 1]))
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
        if (paddle.in_dynamic_mode() and _on_cpu(x, self.weight)
                and _takes(x) and self._data_format == 'NCDHW'
                and self._padding_mode == 'zeros' and list(self._dilation) == [1, 1, 1]
                and enabled()):  # last: loads the library
            return list(padding)
        return None


# --- Max pooling ------------------------------------------------------------------------------

def _single_pass(library: _Library, pd: _c) -> _Pass:
    """The pass of primitive descriptor `pd`, whose operands are Paddle's tensors as they are."""
    scratchpad = library.query(pd, 'scratchpad')
    return _Pass(library.primitive(pd), {}, scratchpad, library.size(scratchpad))


class _TensorPlan:
    """A plan of passes on Paddle's tensors as they are (`passes`: name -> `_Pass`), which owns
    the primitive descriptors `pds` and memory descriptors `descs` and frees them with itself."""
    library: _Library
    passes: dict
    pds: list
    descs: list

    def __del__(self):
        try:
            self.library.destroy([p.primitive for p in self.passes.values()], self.pds,
                                 self.descs)
        except Exception:  # at interpreter exit, ctypes may be gone first
            pass


class _PoolPlan(_TensorPlan):
    """oneDNN's max pooling of one shape on Paddle's plain float32 tensors (NCDHW, or NDHWC with
    `key.channels_last`): forward (in training with its workspace, the position of each
    maximum) and backward. For R3D's stem, [8, 64, 16, 56, 56] with kernel 3, stride 2, padding
    1: 6 + 8 ms forward + backward against 41 + 79 ms for Paddle's CPU kernel (2-core AMD
    EPYC)."""

    def __init__(self, library: _Library, key: '_PoolKey'):
        self.library = library
        x_shape, kernel, stride, padding = key.x_shape, key.kernel, key.stride, key.padding
        training = key.training
        y_shape = [*x_shape[:2], *[(size + 2 * p - k) // st + 1 for size, k, st, p
                                   in zip(x_shape[2:], kernel, stride, padding)]]
        tag = dnnl_acdeb if key.channels_last else dnnl_abcde
        self.x_md, self.y_md = self.descs = [library.desc(shape, tag, _DNNL_TYPES[key.activations])
                                             for shape in (x_shape, y_shape)]
        self.y_shape = _ndhwc(y_shape) if key.channels_last else y_shape
        geometry = _PoolGeometry(_Dims(*stride), _Dims(*kernel), _Dims(0, 0, 0),
                                 _Dims(*padding), _Dims(*padding))
        forward_pd = _c()
        library.call('dnnl_pooling_forward_primitive_desc_create', ctypes.byref(forward_pd),
                     library.engine, dnnl_forward_training if training else dnnl_forward_inference,
                     dnnl_pooling_max, self.x_md, self.y_md, *geometry, library.attr)
        self.pds = [forward_pd]
        self.ws_md = library.query(forward_pd, 'workspace') if training else None
        self.ws_bytes = library.size(self.ws_md) if training else 0
        self.passes = {'forward': _single_pass(library, forward_pd)}
        if training:
            backward_pd = _c()
            library.call('dnnl_pooling_backward_primitive_desc_create', ctypes.byref(backward_pd),
                         library.engine, dnnl_pooling_max, self.x_md, self.y_md, *geometry,
                         forward_pd, library.attr)
            self.pds.append(backward_pd)
            self.passes['backward'] = _single_pass(library, backward_pd)

    def run(self, name: str, memories: dict) -> None:
        self.passes[name].execute(self.library, memories)
        self.library.release()

    def forward(self, x: paddle.Tensor):
        """(y, the workspace for `backward`: None outside training)."""
        y = _empty(self.y_shape, x.place, x.dtype)
        memories = {'src': self.library.memory(self.x_md, x.data_ptr()),
                    'dst': self.library.memory(self.y_md, y.data_ptr())}
        workspace = None
        if self.ws_md is not None:
            workspace = paddle._C_ops.empty([max(1, self.ws_bytes)], paddle.uint8, x.place)
            memories['workspace'] = self.library.memory(self.ws_md, workspace.data_ptr())
        self.run('forward', memories)
        return y, workspace

    def backward(self, grad_y: paddle.Tensor, workspace: paddle.Tensor, x_shape):
        grad_x = _empty(x_shape, grad_y.place, grad_y.dtype)
        self.run('backward', {'diff_dst': self.library.memory(self.y_md, grad_y.data_ptr()),
                              'diff_src': self.library.memory(self.x_md, grad_x.data_ptr()),
                              'workspace': self.library.memory(self.ws_md,
                                                               workspace.data_ptr())})
        return grad_x


class _PoolKey(NamedTuple):
    """What a pooling plan is built for (and cached by)."""
    x_shape: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    training: bool  # with the workspace and the backward pass
    channels_last: bool = False  # x and y NDHWC tensors (x_shape as ever NCDHW)
    activations: str = 'float32'  # their dtype ('bfloat16': channels-last)


_pool_plans: 'collections.OrderedDict[_PoolKey, _PoolPlan]' = collections.OrderedDict()


def _pool_plan(key: _PoolKey) -> _PoolPlan:
    return _cached(_pool_plans, key, lambda: _PoolPlan(library(), key))


class _MaxPooling(PyLayer):
    @staticmethod
    def forward(ctx, x, plan):
        with _lock:
            y, ctx.workspace = plan.forward(x)
        ctx.plan, ctx.x_shape = plan, list(x.shape)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        if hasattr(grad_y, 'contiguous'):
            grad_y = grad_y.contiguous()
        with _lock:
            return ctx.plan.backward(grad_y, ctx.workspace, ctx.x_shape)


@paddle.jit.not_to_static  # Paddle 2.6's paddle.jit cannot rewrite this code, nor need it
def max_pool3d(x: paddle.Tensor, kernel, stride, padding,
               data_format: str = 'NCDHW') -> paddle.Tensor:
    """`paddle.nn.functional.max_pool3d(x, kernel, stride, padding, data_format=data_format)` of
    a float32 NCDHW or NDHWC tensor on the CPU, on oneDNN (elsewhere, and where oneDNN has no
    implementation, Paddle's kernel)."""
    def paddles():
        return paddle.nn.functional.max_pool3d(x, kernel, stride, padding,
                                               data_format=data_format)
    if not (_on_cpu(x) and library() is not None):  # _on_cpu first: no load on GPUs
        return paddles()
    if hasattr(x, 'contiguous'):
        x = x.contiguous()
    training = paddle.is_grad_enabled() and not x.stop_gradient
    channels_last = data_format == 'NDHWC'
    try:
        with _lock:
            plan = _pool_plan(_PoolKey(tuple(_ncdhw(x.shape) if channels_last else x.shape),
                                       tuple(kernel), tuple(stride), tuple(padding), training,
                                       channels_last, _activations(x)))
    except OneDNNError:
        return paddles()
    if training:
        return _MaxPooling.apply(x, plan)
    with _lock:
        y, _ = plan.forward(x)
    return y


class MaxPool3D(paddle.nn.MaxPool3D):
    """`paddle.nn.MaxPool3D` whose dygraph forward (and backward) runs on oneDNN when it can:
    float32 NCDHW on the CPU, one kernel size, stride and padding per dimension, no ceil mode,
    no mask."""

    def forward(self, x):
        geometry = self._onednn_geometry(x)
        if geometry is None:  # Paddle 2.6's paddle.jit rewrites this code: no zero-argument super()
            _refuse_in_channels_last(self)
            return paddle.nn.MaxPool3D.forward(self, x)
        return max_pool3d(x, *geometry, _data_format(self.data_format))

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
        if (paddle.in_dynamic_mode() and _on_cpu(x) and _takes(x)
                and len(x.shape) == 5 and self.data_format == 'NCDHW' and enabled()):
            return kernel, stride, padding
        return None


# --- Batch normalization (channels-last) ------------------------------------------------------

class _NormKey(NamedTuple):
    """What a batch normalization plan is built for (and cached by)."""
    shape: tuple  # NCDHW; the tensors are NDHWC
    epsilon: float
    relu: bool  # the ReLU after it fused
    training: bool  # the batch's statistics, the backward pass; else the running ones
    activations: str = 'float32'  # x's and y's dtype (the statistics and scale are float32)


class _NormPlan(_TensorPlan):
    """oneDNN's batch normalization of one shape on channels-last tensors, with scale
    and shift: forward in training (the batch's mean and biased variance out, as Paddle's
    kernel) and backward, or forward in inference (the running statistics in). With
    `key.relu`, the ReLU after it runs in the same pass (its workspace: which outputs it
    zeroed). On [8, 64, 16, 56, 56] with the ReLU: 11 + 13 ms forward + backward against
    17 + 37 ms for Paddle's BatchNorm3D and 16 ms for its ReLU's backward (2-core AMD EPYC)."""

    def __init__(self, library: _Library, key: _NormKey):
        self.library = library
        self.md = library.desc(key.shape, dnnl_acdeb, _DNNL_TYPES[key.activations])
        self.channel_md = library.desc(key.shape[1:2], dnnl_a)
        self.descs = [self.md, self.channel_md]
        flags = (dnnl_use_scale | dnnl_use_shift | (dnnl_fuse_norm_relu if key.relu else 0)
                 | (0 if key.training else dnnl_use_global_stats))
        forward_pd = _c()
        library.call('dnnl_batch_normalization_forward_primitive_desc_create',
                     ctypes.byref(forward_pd), library.engine,
                     dnnl_forward_training if key.training else dnnl_forward_inference,
                     self.md, self.md, key.epsilon, flags, library.attr)
        self.pds = [forward_pd]
        self.passes = {'forward': _single_pass(library, forward_pd)}
        self.ws_md = None
        if key.training:
            if key.relu:
                self.ws_md = library.query(forward_pd, 'workspace')
                self.ws_bytes = library.size(self.ws_md)
            backward_pd = _c()
            library.call('dnnl_batch_normalization_backward_primitive_desc_create',
                         ctypes.byref(backward_pd), library.engine, dnnl_backward, self.md,
                         self.md, self.md, key.epsilon, flags, forward_pd, library.attr)
            self.pds.append(backward_pd)
            self.passes['backward'] = _single_pass(library, backward_pd)

    def run(self, name: str, tensors: dict, workspace: Optional[paddle.Tensor]) -> None:
        """Pass `name` on `tensors` (argument -> tensor: NDHWC data or per-channel vectors)."""
        memories = {arg: self.library.memory(
            self.channel_md if arg in _CHANNEL_ARGS else self.md, t.data_ptr())
            for arg, t in tensors.items()}
        if workspace is not None:
            memories['workspace'] = self.library.memory(self.ws_md, workspace.data_ptr())
        with _lock:
            self.passes[name].execute(self.library, memories)
            self.library.release()


_CHANNEL_ARGS = {'mean', 'variance', 'scale', 'shift', 'diff_scale', 'diff_shift'}
_norm_plans: 'collections.OrderedDict[_NormKey, _NormPlan]' = collections.OrderedDict()


def _norm_plan(key: _NormKey) -> _NormPlan:
    with _lock:
        return _cached(_norm_plans, key, lambda: _NormPlan(library(), key))


class _BatchNormalization(PyLayer):
    @staticmethod
    def forward(ctx, x, weight, bias, layer, plan):
        channels = [x.shape[-1]]
        y = _empty(x.shape, x.place, x.dtype)
        mean, variance = _empty(channels, x.place), _empty(channels, x.place)
        workspace = (paddle._C_ops.empty([max(1, plan.ws_bytes)], paddle.uint8, x.place)
                     if plan.ws_md is not None else None)
        plan.run('forward', {'src': x, 'dst': y, 'scale': weight, 'shift': bias, 'mean': mean,
                             'variance': variance}, workspace)
        with paddle.no_grad():  # the running statistics, as Paddle's kernel updates them
            m = layer._momentum
            layer._mean.copy_(layer._mean * m + mean * (1 - m), False)
            layer._variance.copy_(layer._variance * m + variance * (1 - m), False)
        ctx.save_for_backward(x, weight, mean, variance)
        ctx.plan, ctx.workspace = plan, workspace
        ctx.needed = [not t.stop_gradient for t in (x, weight, bias)]  # frozen ones get None
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, mean, variance = ctx.saved_tensor()
        if hasattr(grad_y, 'contiguous'):
            grad_y = grad_y.contiguous()
        grad_x = _empty(x.shape, x.place, x.dtype)
        grad_weight, grad_bias = (_empty(weight.shape, x.place) for _ in range(2))
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
        if hasattr(x, 'contiguous'):
            x = x.contiguous()
        plan = _norm_plan(_NormKey(tuple(_ncdhw(x.shape)), float(self._epsilon),
                                   relu is not None, self.training, _activations(x)))
        if self.training:
            return _BatchNormalization.apply(x, self.weight, self.bias, self, plan)
        y = _empty(x.shape, x.place, x.dtype)
        plan.run('forward', {'src': x, 'dst': y, 'scale': self.weight, 'shift': self.bias,
                             'mean': self._mean, 'variance': self._variance}, None)
        return y


# --- Residual additions (channels-last) --------------------------------------------------------

class _AddReLUPlan(_TensorPlan):
    """`relu(a + b)` of two tensors of one shape and dtype on oneDNN, in one pass (a binary add
    with the ReLU as its post-op), and its backward (the ReLU's, from its output: the gradient
    of both a and b; 4 ms on [8, 256, 8, 28, 28] where Paddle's relu_grad takes 9 ms). R3D-50's
    training step 3% shorter in bfloat16, 1% in float32, than with Paddle's add and ReLU.
    With `relu` False, the plan is `a + b` alone, forward only (`fork`'s backward)."""

    def __init__(self, library: _Library, shape: tuple, activations: str, relu: bool = True):
        self.library = library
        self.md = library.desc(shape, PLAIN_TAGS[len(shape)], _DNNL_TYPES[activations])
        self.descs = [self.md]
        forward_pd = _c()
        library.call('dnnl_binary_primitive_desc_create', ctypes.byref(forward_pd),
                     library.engine, dnnl_binary_add, self.md, self.md, self.md,
                     library.relu_attr if relu else library.attr)
        self.pds = [forward_pd]
        self.passes = {'forward': _single_pass(library, forward_pd)}
        if relu:
            hint_pd, backward_pd = _c(), _c()
            library.call('dnnl_eltwise_forward_primitive_desc_create', ctypes.byref(hint_pd),
                         library.engine, dnnl_forward_training,
                         dnnl_eltwise_relu_use_dst_for_bwd, self.md, self.md, 0.0, 0.0,
                         library.attr)
            library.call('dnnl_eltwise_backward_primitive_desc_create',
                         ctypes.byref(backward_pd), library.engine,
                         dnnl_eltwise_relu_use_dst_for_bwd, self.md, self.md, self.md, 0.0, 0.0,
                         hint_pd, library.attr)
            self.pds += [hint_pd, backward_pd]
            self.passes['backward'] = _single_pass(library, backward_pd)

    def run(self, name: str, tensors: dict) -> paddle.Tensor:
        """Pass `name` on `tensors` (argument -> tensor); returns the one it writes."""
        output = 'dst' if name == 'forward' else 'diff_src'
        first = next(iter(tensors.values()))
        tensors = dict(tensors, **{output: _empty(first.shape, first.place, first.dtype)})
        with _lock:
            self.passes[name].execute(self.library, {
                arg: self.library.memory(self.md, t.data_ptr()) for arg, t in tensors.items()})
            self.library.release()
        return tensors[output]


_add_relu_plans: 'collections.OrderedDict[tuple, _AddReLUPlan]' = collections.OrderedDict()


class _AddReLU(PyLayer):
    @staticmethod
    def forward(ctx, a, b, plan):
        y = plan.run('forward', {'src': a, 'src_1': b})
        ctx.save_for_backward(y)
        ctx.plan, ctx.needed = plan, [not t.stop_gradient for t in (a, b)]
        return y

    @staticmethod
    def backward(ctx, grad_y):
        y, = ctx.saved_tensor()
        if hasattr(grad_y, 'contiguous'):
            grad_y = grad_y.contiguous()
        grad = ctx.plan.run('backward', {'dst': y, 'diff_dst': grad_y})
        if all(ctx.needed):
            return grad, grad.clone()  # a tensor each: Paddle may sum into either in place
        return tuple(grad if needed else None for needed in ctx.needed)


@paddle.jit.not_to_static  # Paddle 2.6's paddle.jit would rewrite the library's loading
def add_relu(a: paddle.Tensor, b: paddle.Tensor, relu: paddle.nn.Layer) -> paddle.Tensor:
    """`relu(a + b)` (a ResNet block's output), in one oneDNN pass inside `channels_last()`,
    else by `relu`."""
    if not channels_last_active():
        return relu(a + b)
    if hasattr(a, 'contiguous'):
        a, b = a.contiguous(), b.contiguous()
    plan = _add_plan(a, relu=True)
    if paddle.is_grad_enabled() and not (a.stop_gradient and b.stop_gradient):
        return _AddReLU.apply(a, b, plan)
    return plan.run('forward', {'src': a, 'src_1': b})


def _add_plan(x: paddle.Tensor, relu: bool) -> _AddReLUPlan:
    key = (tuple(x.shape), _activations(x), relu)
    with _lock:
        return _cached(_add_relu_plans, key, lambda: _AddReLUPlan(library(), *key))


class _Fork(PyLayer):
    @staticmethod
    def forward(ctx, x):
        return x.view(x.shape), x.view(x.shape)  # x's data; x itself would lose its gradient

    @staticmethod
    def backward(ctx, grad_a, grad_b):
        if grad_a is None or grad_b is None:
            return grad_b if grad_a is None else grad_a
        if hasattr(grad_a, 'contiguous'):
            grad_a, grad_b = grad_a.contiguous(), grad_b.contiguous()
        return _add_plan(grad_a, relu=False).run('forward', {'src': grad_a, 'src_1': grad_b})


@paddle.jit.not_to_static
def fork(x: paddle.Tensor):
    """(x, x), for a tensor used twice (a ResNet block's input: its branch and its shortcut).
    For bfloat16 x inside `channels_last()`, in training, the two gradients are summed in one
    oneDNN pass: Paddle's autograd, which sums the gradients of a tensor used twice, has no
    bfloat16 CPU kernel for it and adds element by element on one thread ([8, 8, 28, 28, 256]:
    89 ms, 3 ms here). R3D-50's bfloat16 training step 5% shorter; float32 sums gain nothing."""
    if (channels_last_active() and x.dtype == paddle.bfloat16 and paddle.is_grad_enabled()
            and not x.stop_gradient):
        return _Fork.apply(x)
    return x, x
