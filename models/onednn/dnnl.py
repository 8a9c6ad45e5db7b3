"""oneDNN 3.x's C API (oneapi/dnnl/dnnl.h), bound through ctypes: the constants and functions
this package calls, the library of Paddle's wheel loaded once, its version checked.

No Paddle here: memory is passed by address. `Library`'s memory objects serve one call at a
time, which the plan cache's lock ensures (see the package docstring).
"""
import contextlib
import ctypes
import importlib.util
import os
import warnings
from typing import Iterator, NamedTuple, Optional, Sequence

# The enum values used, named as in oneapi/dnnl/dnnl_types.h and dnnl_common_types.h (checked
# against v3.6.2, the one in Paddle 3.3's wheel; fixed across 3.x).
dnnl_success = 0  # dnnl_status_t
STATUS_NAMES = {1: 'dnnl_out_of_memory', 2: 'dnnl_invalid_arguments', 3: 'dnnl_unimplemented',
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

# Dense row-major tensors in oneDNN's words: the plain tag of each number of dimensions.
PLAIN_TAGS = {1: dnnl_a, 2: dnnl_ab, 5: dnnl_abcde, 6: dnnl_abcdef}
# Arguments by their oneDNN names (what `Library.execute` takes), and the queries of their
# memory descriptors.
ARGS = {'src': DNNL_ARG_SRC, 'src_1': DNNL_ARG_SRC_1, 'dst': DNNL_ARG_DST,
        'weights': DNNL_ARG_WEIGHTS,
        'diff_src': DNNL_ARG_DIFF_SRC, 'diff_dst': DNNL_ARG_DIFF_DST,
        'diff_weights': DNNL_ARG_DIFF_WEIGHTS, 'from': DNNL_ARG_FROM, 'to': DNNL_ARG_TO,
        'scratchpad': DNNL_ARG_SCRATCHPAD, 'workspace': DNNL_ARG_WORKSPACE,
        'mean': DNNL_ARG_MEAN, 'variance': DNNL_ARG_VARIANCE, 'scale': DNNL_ARG_SCALE,
        'shift': DNNL_ARG_SHIFT, 'diff_scale': DNNL_ARG_DIFF_SCALE,
        'diff_shift': DNNL_ARG_DIFF_SHIFT}
QUERIES = {'src': dnnl_query_src_md, 'diff_src': dnnl_query_diff_src_md,
           'weights': dnnl_query_weights_md, 'diff_weights': dnnl_query_diff_weights_md,
           'dst': dnnl_query_dst_md, 'diff_dst': dnnl_query_diff_dst_md,
           'scratchpad': dnnl_query_scratchpad_md, 'workspace': dnnl_query_workspace_md}

Dims = ctypes.c_int64 * DNNL_MAX_NDIMS  # dnnl_dims_t
Handle = ctypes.c_void_p  # every oneDNN handle: engine, stream, descriptors, primitives, memory


class Version(ctypes.Structure):  # dnnl_version_t
    _fields_ = [('major', ctypes.c_int), ('minor', ctypes.c_int), ('patch', ctypes.c_int),
                ('hash', ctypes.c_char_p), ('cpu_runtime', ctypes.c_uint),
                ('gpu_runtime', ctypes.c_uint)]


class ExecArg(ctypes.Structure):  # dnnl_exec_arg_t
    _fields_ = [('arg', ctypes.c_int), ('memory', ctypes.c_void_p)]


_status = _int = ctypes.c_int  # dnnl_status_t and every enum are C ints
_out = ctypes.POINTER(Handle)  # where a create function writes the new handle
_dims = ctypes.POINTER(ctypes.c_int64)  # a dnnl_dims_t argument
_float = ctypes.c_float
_GEOMETRY = [_dims] * 4  # strides, dilates, padding_l, padding_r
_c = Handle
# name: (restype, argtypes) of every C function called, from oneapi/dnnl/dnnl.h and
# dnnl_common.h; set once when the library loads.
SIGNATURES = {
    'dnnl_version': (ctypes.POINTER(Version), []),
    'dnnl_get_effective_cpu_isa': (_int, []),
    'dnnl_set_verbose': (_status, [_int]),
    'dnnl_engine_create': (_status, [_out, _int, ctypes.c_size_t]),
    'dnnl_stream_create': (_status, [_out, _c, ctypes.c_uint]),
    'dnnl_stream_wait': (_status, [_c]),
    'dnnl_primitive_attr_create': (_status, [_out]),
    'dnnl_primitive_attr_set_scratchpad_mode': (_status, [_c, _int]),
    'dnnl_primitive_attr_set_post_ops': (_status, [_c, _c]),
    'dnnl_post_ops_create': (_status, [_out]),
    'dnnl_post_ops_append_eltwise': (_status, [_c, _int, _float, _float]),
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
        _status, [_out, _c, _int, _int, _c, _c, _float, _float, _c]),
    'dnnl_eltwise_backward_primitive_desc_create': (
        _status, [_out, _c, _int, _c, _c, _c, _float, _float, _c, _c]),
    'dnnl_batch_normalization_forward_primitive_desc_create': (  # epsilon, flags
        _status, [_out, _c, _int, _c, _c, _float, ctypes.c_uint, _c]),
    'dnnl_batch_normalization_backward_primitive_desc_create': (
        _status, [_out, _c, _int, _c, _c, _c, _float, ctypes.c_uint, _c, _c]),
    'dnnl_primitive_desc_query_md': (_c, [_c, _int, _int]),
    'dnnl_primitive_desc_destroy': (_status, [_c]),
    'dnnl_primitive_create': (_status, [_out, _c]),
    'dnnl_primitive_execute': (_status, [_c, _c, _int, ctypes.POINTER(ExecArg)]),
    'dnnl_primitive_destroy': (_status, [_c]),
}


class OneDNNError(RuntimeError):
    """A oneDNN function failed, or no oneDNN pass can serve a layer where one must."""


class OneDNNVersionError(OneDNNError):
    """The library is not oneDNN 3.x, whose C API this package is written for."""


def version(lib: ctypes.CDLL) -> Version:
    """The loaded library's dnnl_version_t (major, minor, patch, ...)."""
    function = lib.dnnl_version
    function.restype, function.argtypes = SIGNATURES['dnnl_version']
    return function().contents


class Library:
    """libdnnl.so.3 at `path`, a CPU engine and a stream (oneDNN 3.x, else OneDNNVersionError).

    Not thread-safe: `transient` serves one call at a time."""

    def __init__(self, path: str):
        self.lib = ctypes.CDLL(path)
        self.version = version(self.lib)
        if self.version.major != 3:  # the enum values and signatures above are 3.x's
            v = self.version
            raise OneDNNVersionError(f'oneDNN {v.major}.{v.minor}.{v.patch} (3.x needed)')
        for name, (restype, argtypes) in SIGNATURES.items():
            function = getattr(self.lib, name)
            function.restype, function.argtypes = restype, argtypes
        self.engine, self.stream = Handle(), Handle()
        self.call('dnnl_engine_create', ctypes.byref(self.engine), dnnl_cpu, 0)
        self.call('dnnl_stream_create', ctypes.byref(self.stream), self.engine,
                  dnnl_stream_in_order)
        self.attr, self.relu_attr = self._attributes(), self._attributes(relu=True)
        self.transient = []  # memory objects of the current call: see `release`

    def _attributes(self, relu: bool = False) -> Handle:
        """Primitive attributes: each primitive's scratch memory comes from our workspace at
        execution (oneDNN would otherwise keep one per primitive, for as long as the primitive
        lives); with `relu`, a ReLU is applied to the primitive's result."""
        attr = Handle()
        self.call('dnnl_primitive_attr_create', ctypes.byref(attr))
        self.call('dnnl_primitive_attr_set_scratchpad_mode', attr, dnnl_scratchpad_mode_user)
        if relu:
            post_ops = Handle()
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
                              f'(status {status}: {STATUS_NAMES.get(status, "unknown")})')

    def desc(self, shape: Sequence[int], tag: int, dtype: int = dnnl_f32) -> Handle:
        """A memory descriptor (destroyed by `destroy`); `tag` and `dtype`: dnnl_* constants."""
        md = Handle()
        self.call('dnnl_memory_desc_create_with_tag', ctypes.byref(md), len(shape),
                  Dims(*shape), dtype, tag)
        return md

    def query(self, pd: Handle, what: str) -> Handle:
        """The memory descriptor of argument `what` (a key of `QUERIES`), owned by `pd`."""
        return Handle(self.lib.dnnl_primitive_desc_query_md(pd, QUERIES[what], 0))

    def size(self, md: Handle) -> int:
        """Bytes of data that `md` describes."""
        return self.lib.dnnl_memory_desc_get_size(md)

    def equal(self, a: Handle, b: Handle) -> bool:
        """Whether two memory descriptors describe the same layout, shape and data type."""
        return bool(self.lib.dnnl_memory_desc_equal(a, b))

    def primitive(self, pd: Handle) -> Handle:
        """The primitive of primitive descriptor `pd` (destroyed by `destroy`)."""
        primitive = Handle()
        self.call('dnnl_primitive_create', ctypes.byref(primitive), pd)
        return primitive

    def reorder(self, source: Handle, target: Handle) -> Handle:
        """The primitive descriptor of a reorder from memory descriptor `source` to `target`."""
        pd = Handle()
        self.call('dnnl_reorder_primitive_desc_create', ctypes.byref(pd), source, self.engine,
                  target, self.engine, None)
        return pd

    def memory(self, md: Handle, pointer: int) -> Handle:
        """A memory object for the data at `pointer`, destroyed by the next `release()`."""
        memory = Handle()
        self.call('dnnl_memory_create', ctypes.byref(memory), md, self.engine, pointer)
        self.transient.append(memory)
        return memory

    def release(self) -> None:
        """Wait for the stream, then destroy the memory objects made since the last release."""
        self.call('dnnl_stream_wait', self.stream)
        for memory in self.transient:
            self.lib.dnnl_memory_destroy(memory)
        self.transient.clear()

    def destroy(self, primitives: Sequence[Handle] = (), pds: Sequence[Handle] = (),
                descs: Sequence[Handle] = ()) -> None:
        """Destroy primitives, primitive descriptors and memory descriptors."""
        for primitive in primitives:
            self.lib.dnnl_primitive_destroy(primitive)
        for pd in pds:
            self.lib.dnnl_primitive_desc_destroy(pd)
        for md in descs:
            self.lib.dnnl_memory_desc_destroy(md)

    def execute(self, primitive: Handle, args: dict) -> None:
        """Run `primitive` on `args`: argument name (a key of `ARGS`) -> memory object."""
        array = (ExecArg * len(args))(*[ExecArg(ARGS[k], m) for k, m in args.items()])
        self.call('dnnl_primitive_execute', primitive, self.stream, len(args), array)

    def has_bfloat16(self) -> bool:
        """Whether oneDNN runs bfloat16 dot products natively here (AVX512-BF16 or AMX; its ISA
        also honours ONEDNN_MAX_CPU_ISA). Elsewhere it emulates them, slower than float32."""
        isa = self.lib.dnnl_get_effective_cpu_isa()
        return isa & dnnl_cpu_isa_avx512_core_bf16 == dnnl_cpu_isa_avx512_core_bf16


class Loaded(NamedTuple):
    """The outcome of loading the library: it, or why not."""
    library: Optional[Library]
    error: Optional[str]


_loaded: Optional[Loaded] = None  # the first call of `library()` sets it


def library_path() -> str:
    """Where Paddle's wheel keeps the oneDNN it links (Linux x86 wheels; absent elsewhere).
    Found without importing Paddle."""
    spec = importlib.util.find_spec('paddle')
    root = os.path.dirname(spec.origin) if spec and spec.origin else ''
    return os.path.join(root, 'libs', 'libdnnl.so.3')


def library() -> Optional[Library]:
    """The loaded library, or None (and the reason in `load_error()`) where it cannot load.

    The first call loads it. A wheel without the file runs Paddle's kernels silently; a file
    that does not load, lacks a function used here or is not oneDNN 3.x: the same, with one
    warning."""
    global _loaded
    if _loaded is None:
        path = library_path()
        try:
            _loaded = Loaded(Library(path), None)
        except (OSError, AttributeError, OneDNNError) as e:
            _loaded = Loaded(None, f'{type(e).__name__}: {e}')
            if os.path.exists(path):
                warnings.warn(f"{path}: {_loaded.error}; 3D convolutions, max pooling and "
                              "batch normalization run on Paddle's kernels", stacklevel=2)
    return _loaded.library


def load_error() -> Optional[str]:
    """Why the library does not load (loading it first), or None."""
    library()
    return _loaded.error


@contextlib.contextmanager
def verbose() -> Iterator[None]:
    """oneDNN's verbose mode in the `with` block: a line per primitive run, with its time, on
    the process's stdout (`util_scripts.benchmark --jobs profile`). OneDNNError where the
    library does not load."""
    lib = library()
    if lib is None:
        raise OneDNNError(f'oneDNN is not loaded: {load_error()}')
    lib.call('dnnl_set_verbose', 1)
    try:
        yield
    finally:
        lib.call('dnnl_set_verbose', 0)


# `from .dnnl import *` (the package's __init__): the constants, named as in oneDNN's headers
__all__ = [name for name in dir() if name.startswith(('dnnl_', 'DNNL_'))]
