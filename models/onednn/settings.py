"""The package's settings, each a `with` block: which kernels run, in which layout and dtype.

Each is a context variable: it holds in the thread (or asyncio task) that enters it, and a new
thread starts with the defaults.
"""
import contextvars

from .conv_plan import bfloat16_supported
from .dnnl import OneDNNError, library, load_error
from .plans import DNNL_TYPES


class _Setting:
    """A setting (`variable`, `default` outside any `with` block) for the `with` block."""
    variable: contextvars.ContextVar

    def __init__(self, value):
        self.value = value

    @classmethod
    def current(cls):
        """The value in effect here."""
        return cls.variable.get()

    def __enter__(self):
        self.token = self.variable.set(self.value)
        return self

    def __exit__(self, *exc_info):
        self.variable.reset(self.token)


class use_onednn(_Setting):
    """`with use_onednn(False):` runs `Conv3D` and `MaxPool3D` layers on Paddle's own kernels
    (and True on oneDNN), for comparisons and benchmarks."""
    variable = contextvars.ContextVar('use_onednn', default=True)


class use_channels_last(_Setting):
    """`with use_channels_last(False):` models built for it (`resnet.ResNet`) run their trunk in
    Paddle's NCDHW layout (True: channels-last, where `channels_last_enabled()`), for
    comparisons and benchmarks."""
    variable = contextvars.ContextVar('use_channels_last', default=True)


class channels_last(_Setting):
    """`with channels_last():` the `Conv3D`, `BatchNorm3D` and `MaxPool3D` layers called here
    take and give channels-last (NDHWC) tensors, whatever their data_format says, each on
    oneDNN: its convolutions then need no reorders, and its batch normalization (with the ReLU
    after it fused) runs in oneDNN's channels-last kernels. Tensors may be float32 or bfloat16.
    Where a layer cannot run there (not on the CPU, not in dygraph), it raises OneDNNError: the
    model that enters this checks that first (`resnet.ResNet.runs_channels_last`)."""
    variable = contextvars.ContextVar('channels_last', default=False)

    def __init__(self):
        super().__init__(True)


class compute_dtype(_Setting):
    """`with compute_dtype('bfloat16'):` the oneDNN convolutions started here (`Conv3D` layers
    on the CPU, `conv3d`) multiply in bfloat16 and accumulate in float32; 'float32' is the
    default. Wrap the forward pass, as `paddle.amp.auto_cast`: a convolution's backward uses
    its forward's dtype, wherever `backward()` is called. Tensors stay float32, so nothing else
    in the model or optimizer changes (but for a ResNet's channels-last trunk, whose
    activations it makes bfloat16: `resnet.ResNet.forward`). 'bfloat16' raises OneDNNError
    unless `bfloat16_supported()`."""
    variable = contextvars.ContextVar('compute_dtype', default='float32')

    def __init__(self, dtype: str):
        if dtype not in DNNL_TYPES:
            raise ValueError(f'compute_dtype: {dtype!r} is not one of {list(DNNL_TYPES)}')
        if dtype == 'bfloat16' and not bfloat16_supported():
            raise OneDNNError('bfloat16 convolutions need oneDNN 3.x and a CPU with '
                              'AVX512-BF16 or AMX (onednn.bfloat16_supported() is False'
                              + (f'; {load_error()})' if load_error() else ')'))
        super().__init__(dtype)


def enabled() -> bool:
    """Whether `Conv3D` layers use oneDNN (default: yes, where it loads); see `use_onednn`."""
    return use_onednn.current() and library() is not None


def channels_last_enabled() -> bool:
    """Whether a model may run channels-last on oneDNN (default: yes, where it loads)."""
    return use_channels_last.current() and enabled()


def channels_last_active() -> bool:
    """Whether a `channels_last()` block is in effect here."""
    return channels_last.current()


def active_compute_dtype() -> str:
    """The dtype of `compute_dtype` in effect here ('float32' outside one)."""
    return compute_dtype.current()
