"""3D convolutions, max pooling, batch normalization and residual sums on oneDNN for Paddle's
dygraph on CPU, forward and backward.

Paddle's dygraph `conv3d` on CPU is im2col + GEMM; oneDNN's direct convolution in its blocked
layout is several times faster, as in PyTorch, whose CPU convolutions are oneDNN's
(docs/performance.md). Paddle ships oneDNN (`paddle/libs/libdnnl.so.3`) but its dygraph does
not call it for conv3d, so `Conv3D` calls it through oneDNN's C API (ctypes): plain NCDHW
tensors are reordered into the layout oneDNN picks, convolved, and the result reordered back.
Where the library cannot be loaded (or is not oneDNN 3.x), or outside dygraph on CPU
(`paddle.jit` export, GPU), the layers are Paddle's own. oneDNN gets host memory only: inputs
on the CPU, results allocated there; the library is loaded on the first call that qualifies,
so GPU runs never load it. `MaxPool3D` (the stem's) runs on oneDNN too.

bfloat16: under `compute_dtype('bfloat16')` (where `bfloat16_supported()`), the reorders into
oneDNN's layout also convert src, weights and diff_dst to bfloat16, and the primitives
accumulate in float32 and write float32 dst, diff_src and diff_weights: Paddle sees float32
tensors. Inside `channels_last()` the layers also take bfloat16 tensors (ResNet's trunk under
bfloat16, as PyTorch's autocast keeps its activations), and give bfloat16 outputs and input
gradients; weights, their gradients, BN's statistics, scale and shift stay float32.

Channels-last: inside `channels_last()` (which `resnet.ResNet` enters for its trunk), the
layers, `BatchNorm3D` and `add_relu` take NDHWC tensors. The convolutions then read and write
the activations as they are (no reorders), batch normalization runs on oneDNN's channels-last
kernels with the ReLU after it fused, forward and backward, and a block's residual sum with its
ReLU is one pass.

Modules, bottom up (the first three import no Paddle):
    dnnl       the C API: constants named as the C identifiers, `SIGNATURES`, `Library`
               (engine, stream, memory objects), `library()` loading it once, its version checked
    plans      `PLANS`, the plan cache (and its workspaces and lock); `Pass`, `TensorPlan`
    conv_plan  `ConvPlan`: a convolution's three primitives and reorders; `bfloat16_supported`
    settings   `use_onednn`, `use_channels_last`, `channels_last`, `compute_dtype`
    tensors    Paddle's tensors as handed to oneDNN (place, dtype, allocation)
    conv, pool, norm, residual   the layers and functions: Paddle's autograd on the plans
    matmul     oneDNN's GEMM, for the benchmark's peak

The lock rule: the package has one lock, owned by the plan cache `plans.PLANS`. It is taken
only inside: by `PLANS.get` (finding or building a plan) and by the plan methods marked
`@exclusive` (running oneDNN on the shared workspaces and the library's memory objects, which
are freed when such a method returns). No other code takes it, and an exclusive method never
calls another or `PLANS.get` (the lock is not reentrant). So callers use plans freely from any
thread.
"""
from . import dnnl
from .conv import Conv3D, conv3d
from .conv_plan import bfloat16_supported
from .dnnl import *  # noqa: F401,F403  the dnnl_*/DNNL_* constants
from .dnnl import OneDNNError, OneDNNVersionError, library, library_path, load_error, verbose
from .matmul import MatmulPlan
from .norm import BatchNorm3D
from .plans import PLANS
from .pool import MaxPool3D, max_pool3d
from .residual import add_relu, fork
from .settings import (active_compute_dtype, channels_last, channels_last_active,
                       channels_last_enabled, compute_dtype, enabled, use_channels_last,
                       use_onednn)

__all__ = ['Conv3D', 'conv3d', 'MaxPool3D', 'max_pool3d', 'BatchNorm3D', 'add_relu', 'fork',
           'use_onednn', 'use_channels_last', 'channels_last', 'compute_dtype', 'enabled',
           'channels_last_enabled', 'channels_last_active', 'active_compute_dtype',
           'bfloat16_supported', 'library', 'library_path', 'load_error', 'verbose',
           'MatmulPlan', 'PLANS', 'OneDNNError', 'OneDNNVersionError', *dnnl.__all__]
