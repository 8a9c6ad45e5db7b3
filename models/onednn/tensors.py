"""Paddle's tensors as the layers of this package hand them to oneDNN: where they are, their
dtypes, and the results' allocation."""
import paddle

from .dnnl import OneDNNError
from .settings import channels_last_active


def on_cpu(*tensors: paddle.Tensor) -> bool:
    return all(t.place.is_cpu_place() for t in tensors)


def empty(shape, place, dtype=paddle.float32) -> paddle.Tensor:
    """An uninitialized tensor on `place`; `paddle.empty` would allocate on the default device
    (a GPU on GPU machines) and takes no place in Paddle 2.6."""
    return paddle._C_ops.empty(list(shape), dtype, place)


def empty_bytes(size: int, place) -> paddle.Tensor:
    """An uninitialized buffer of `size` bytes (at least 1) on `place`: a primitive's workspace."""
    return paddle._C_ops.empty([max(1, size)], paddle.uint8, place)


def contiguous(x: paddle.Tensor) -> paddle.Tensor:
    """x with its data dense in memory (Paddle 3's views may be strided; 2.6 has no views)."""
    return x.contiguous() if hasattr(x, 'contiguous') else x


def takes(x: paddle.Tensor) -> bool:
    """Whether x's dtype is one the layers here run on oneDNN: float32, and bfloat16 inside
    `channels_last()`."""
    return x.dtype == paddle.float32 or (x.dtype == paddle.bfloat16 and channels_last_active())


def activations(x: paddle.Tensor) -> str:
    """'bfloat16' for a bfloat16 tensor (in a channels-last trunk), else 'float32'."""
    return 'bfloat16' if x.dtype == paddle.bfloat16 else 'float32'


def needs_grad(*tensors: paddle.Tensor) -> list:
    """Per tensor, whether autograd wants its gradient (frozen ones get None)."""
    return [not t.stop_gradient for t in tensors]


@paddle.jit.not_to_static
def refuse_in_channels_last(layer: paddle.nn.Layer) -> None:
    """Raise OneDNNError inside `channels_last()`: `layer` cannot run there on oneDNN, and its
    Paddle kernel would read the channels-last tensor as its own layout."""
    if channels_last_active():
        raise OneDNNError(f'{layer}: no oneDNN pass for it here (CPU, float32, dygraph, its '
                          'padding, dilation and library), in channels_last()')


def layout_in_effect(own: str) -> str:
    """The layout of the tensors that a layer of data_format `own` gets called with."""
    return 'NDHWC' if channels_last_active() else own
