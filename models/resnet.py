"""3D ResNet (Hara et al.): input [N, C, T, H, W], parameter names as in the reference.

Depths 10-34 use `BasicBlock`, 50-200 `Bottleneck`. Shortcut 'A' is a strided identity padded with
zero channels; 'B' is a 1x1x1 convolution + BN (`downsample.0`, `downsample.1`).

On the CPU in dygraph, `ResNet` runs its trunk channels-last (NDHWC) on oneDNN
(`onednn.channels_last`): convolutions without reorders of float32 data, BN with the ReLU after
it in one oneDNN pass, and so each block's residual sum with its ReLU. Elsewhere (GPUs,
`paddle.jit`), and with `onednn.use_channels_last(False)`, it runs in Paddle's NCDHW layout.
The parameters and their layouts are the same either way.
"""
import math
from functools import partial

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .onednn import (BatchNorm3D, Conv3D, MaxPool3D, active_compute_dtype, add_relu,
                     channels_last, channels_last_active, channels_last_enabled, fork)


def get_inplanes():
    return [64, 128, 256, 512]


def kaiming_normal_fan_out(out_channels: int, kernel_size) -> paddle.ParamAttr:
    """He-normal init over fan-out,
    as `nn.init.kaiming_normal_(mode='fan_out')` in the reference."""
    fan_out = out_channels * math.prod(kernel_size)
    return paddle.ParamAttr(initializer=nn.initializer.KaimingNormal(fan_in=fan_out))


def conv3d(in_planes: int, out_planes: int, kernel_size, stride=1, padding=0,
           groups: int = 1) -> nn.Conv3D:
    """Bias-free 3D convolution with the reference's initialisation."""
    if isinstance(kernel_size, int):
        kernel_size = (kernel_size,) * 3
    return Conv3D(in_planes, out_planes, kernel_size, stride=stride, padding=padding,
                     groups=groups, weight_attr=kaiming_normal_fan_out(out_planes, kernel_size),
                     bias_attr=False)


def conv3x3x3(in_planes: int, out_planes: int, stride=1) -> nn.Conv3D:
    return conv3d(in_planes, out_planes, 3, stride=stride, padding=1)


def conv1x1x1(in_planes: int, out_planes: int, stride=1) -> nn.Conv3D:
    return conv3d(in_planes, out_planes, 1, stride=stride)


class ReLU(nn.Layer):
    """ReLU, in place while training, as the reference's `nn.ReLU(inplace=True)`: its input (a
    BN's output or a residual sum) is needed by nothing else, and a training step then makes
    and keeps one activation fewer per ReLU (R3D-18, batch 8: 1.1 GB less to allocate)."""

    def forward(self, x):
        return F.relu_(x) if self.training else F.relu(x)


def batch_norm(num_features: int) -> BatchNorm3D:
    """BN with PyTorch's defaults (momentum 0.1 there is 0.9 here), weight 1, bias 0."""
    return BatchNorm3D(num_features, momentum=0.9, epsilon=1e-5,
                       weight_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(1.0)),
                       bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0)))


def norm_relu(bn: nn.Layer, relu: nn.Layer, x):
    """`relu(bn(x))`, in one oneDNN pass where `bn` runs there (see `onednn.BatchNorm3D`); `bn`
    may have become a SyncBatchNorm (data parallelism) or an Identity (BN folding)."""
    return bn(x, relu) if isinstance(bn, BatchNorm3D) else relu(bn(x))


def linear(in_features: int, out_features: int) -> nn.Linear:
    """Linear layer with PyTorch's default init, U(-1/sqrt(in), 1/sqrt(in)) for weight and bias."""
    bound = 1.0 / math.sqrt(in_features)
    init = nn.initializer.Uniform(-bound, bound)
    return nn.Linear(in_features, out_features, weight_attr=paddle.ParamAttr(initializer=init),
                     bias_attr=paddle.ParamAttr(initializer=init))


class BasicBlock(nn.Layer):
    """Two 3x3x3 convolutions with a residual connection."""
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3x3(in_planes, planes, stride)
        self.bn1 = batch_norm(planes)
        self.relu = ReLU()
        self.conv2 = conv3x3x3(planes, planes)
        self.bn2 = batch_norm(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        x, shortcut = fork(x)
        residual = shortcut if self.downsample is None else self.downsample(shortcut)
        out = norm_relu(self.bn1, self.relu, self.conv1(x))
        out = self.bn2(self.conv2(out))
        return add_relu(out, residual, self.relu)


class Bottleneck(nn.Layer):
    """1x1x1 reduce, 3x3x3, 1x1x1 expand (x4), with a residual connection.

    The middle width is `planes` unless `mid_planes` says otherwise; `groups` splits the 3x3x3
    convolution (ResNeXt uses both).
    """
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride=1, downsample=None,
                 mid_planes: int = None, groups: int = 1):
        super().__init__()
        mid_planes = mid_planes or planes
        self.conv1 = conv1x1x1(in_planes, mid_planes)
        self.bn1 = batch_norm(mid_planes)
        self.conv2 = conv3d(mid_planes, mid_planes, 3, stride=stride, padding=1, groups=groups)
        self.bn2 = batch_norm(mid_planes)
        self.conv3 = conv1x1x1(mid_planes, planes * self.expansion)
        self.bn3 = batch_norm(planes * self.expansion)
        self.relu = ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        x, shortcut = fork(x)
        residual = shortcut if self.downsample is None else self.downsample(shortcut)
        out = norm_relu(self.bn1, self.relu, self.conv1(x))
        out = norm_relu(self.bn2, self.relu, self.conv2(out))
        out = self.bn3(self.conv3(out))
        return add_relu(out, residual, self.relu)


def downsample_basic_block(x, planes: int, stride: int):
    """Shortcut 'A': strided identity, zero-padded to `planes` channels. [N, C, T, H, W], or
    [N, T, H, W, C] inside `onednn.channels_last()`."""
    axis = -1 if channels_last_active() else 1
    out = F.avg_pool3d(x, kernel_size=1, stride=stride,
                       data_format='NDHWC' if axis == -1 else 'NCDHW')
    shape = list(out.shape)
    shape[axis] = planes - shape[axis]
    return paddle.concat([out, paddle.zeros(shape, dtype=out.dtype)], axis=axis)


class ResNet(nn.Layer):
    """The 3D ResNet trunk: conv1 - bn1 - relu - [maxpool] - layer1..4 - avgpool - fc."""

    def __init__(self, block, layers, block_inplanes, n_input_channels: int = 3,
                 conv1_t_size: int = 7, conv1_t_stride: int = 1, no_max_pool: bool = False,
                 shortcut_type: str = 'B', widen_factor: float = 1.0, n_classes: int = 400):
        super().__init__()
        if shortcut_type not in ('A', 'B'):
            raise ValueError(f"resnet shortcut must be 'A' or 'B', got {shortcut_type!r}")
        block_inplanes = [int(x * widen_factor) for x in block_inplanes]
        self.in_planes = block_inplanes[0]
        self.no_max_pool = no_max_pool
        # the blocks written for both layouts (and their subclasses: ResNeXt's, wide ones)
        self.channels_last_blocks = issubclass(block, (BasicBlock, Bottleneck))
        self.shortcut_type = shortcut_type

        self._make_stem(n_input_channels, conv1_t_size, conv1_t_stride)
        self.relu = ReLU()
        self.maxpool = MaxPool3D(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, block_inplanes[0], layers[0], shortcut_type)
        self.layer2 = self._make_layer(block, block_inplanes[1], layers[1], shortcut_type, stride=2)
        self.layer3 = self._make_layer(block, block_inplanes[2], layers[2], shortcut_type, stride=2)
        self.layer4 = self._make_layer(block, block_inplanes[3], layers[3], shortcut_type, stride=2)
        self.avgpool = nn.AdaptiveAvgPool3D((1, 1, 1))
        self.fc = linear(block_inplanes[3] * block.expansion, n_classes)

    def _make_stem(self, n_input_channels: int, conv1_t_size: int, conv1_t_stride: int):
        """conv1 (t x 7 x 7, stride (t_stride, 2, 2)) and bn1;
        registered first, as in the reference."""
        self.conv1 = conv3d(n_input_channels, self.in_planes, (conv1_t_size, 7, 7),
                            stride=(conv1_t_stride, 2, 2), padding=(conv1_t_size // 2, 3, 3))
        self.bn1 = batch_norm(self.in_planes)

    def stem(self, x):
        return norm_relu(self.bn1, self.relu, self.conv1(x))  # [N, 64, T / t_stride, H/2, W/2]

    def _make_layer(self, block, planes: int, blocks: int, shortcut_type: str, stride=1):
        downsample = None
        if stride != 1 or self.in_planes != planes * block.expansion:
            if shortcut_type == 'A':
                downsample = partial(downsample_basic_block, planes=planes * block.expansion,
                                     stride=stride)
            else:
                downsample = nn.Sequential(
                    conv1x1x1(self.in_planes, planes * block.expansion, stride),
                    batch_norm(planes * block.expansion))
        layers = [block(self.in_planes, planes, stride=stride, downsample=downsample)]
        self.in_planes = planes * block.expansion
        layers += [block(self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        if self.runs_channels_last(x):
            x = x.transpose([0, 2, 3, 4, 1])
            if active_compute_dtype() == 'bfloat16' and self.shortcut_type == 'B':
                x = x.astype('bfloat16')  # activations in bfloat16, as PyTorch's autocast
            with channels_last():
                x = self.trunk(x)
            x = x.astype('float32').mean(axis=[1, 2, 3])  # [N, C]
        else:
            x = self.avgpool(self.trunk(x)).flatten(1)  # [N, C]
        return self.fc(x)

    def trunk(self, x):
        """Stem, max pooling, layer1..4."""
        x = self.stem(x)
        if not self.no_max_pool:
            x = self.maxpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    @paddle.jit.not_to_static  # plain Python under paddle.jit: False there
    def runs_channels_last(self, x: paddle.Tensor) -> bool:
        """Whether `forward(x)` runs the trunk channels-last on oneDNN: float32 clips on the CPU
        in dygraph, blocks written for it, and every BN oneDNN's (not a SyncBatchNorm)."""
        return (self.channels_last_blocks and paddle.in_dynamic_mode()
                and x.place.is_cpu_place() and x.dtype == paddle.float32 and len(x.shape) == 5
                and all(isinstance(layer, BatchNorm3D) for layer in self.sublayers()
                        if isinstance(layer, nn.layer.norm._BatchNormBase))
                and channels_last_enabled())  # last: loads the library


# depth -> (block, blocks per stage)
DEPTHS = {
    10: (BasicBlock, [1, 1, 1, 1]),
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
    200: (Bottleneck, [3, 24, 36, 3]),
}


def generate_model(model_depth: int, **kwargs) -> ResNet:
    """Build a 3D ResNet of `model_depth` (one of `DEPTHS`)."""
    if model_depth not in DEPTHS:
        raise ValueError(f'resnet depth must be one of {sorted(DEPTHS)}, got {model_depth}')
    block, layers = DEPTHS[model_depth]
    return ResNet(block, layers, get_inplanes(), **kwargs)
