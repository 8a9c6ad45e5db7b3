"""(2+1)D ResNet (Tran et al.): every 3D convolution of the 3D ResNet is split into a spatial
(1xkxk) and a temporal (tx1x1) convolution with BN and ReLU in between.

The width between the two is chosen so that the pair has about as many weights as the 3D
convolution it replaces. Input [N, C, T, H, W]; parameter names as in the reference (`conv1_s`,
`bn1_s`, `conv1_t`, `bn1_t`, `layer1.0.conv2_s`, ...).
"""
import paddle.nn as nn

from . import resnet
from .resnet import ReLU, batch_norm, conv1x1x1, conv3d


def mid_planes(in_planes: int, out_planes: int, t_size: int = 3, s_size: int = 3) -> int:
    """Width between the spatial and temporal convolutions that keeps the weight count of the 3D
    convolution they replace."""
    n_3d_weights = in_planes * out_planes * t_size * s_size * s_size
    return n_3d_weights // (in_planes * s_size * s_size + t_size * out_planes)


def conv1x3x3(in_planes: int, out_planes: int, stride=1) -> nn.Conv3D:
    return conv3d(in_planes, out_planes, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1))


def conv3x1x1(in_planes: int, out_planes: int, stride=1) -> nn.Conv3D:
    return conv3d(in_planes, out_planes, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0))


class BasicBlock(nn.Layer):
    """Two (2+1)D convolutions with a residual connection."""
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride=1, downsample=None):
        super().__init__()
        mid1 = mid_planes(in_planes, planes)
        self.conv1_s = conv1x3x3(in_planes, mid1, stride)
        self.bn1_s = batch_norm(mid1)
        self.conv1_t = conv3x1x1(mid1, planes, stride)
        self.bn1_t = batch_norm(planes)
        mid2 = mid_planes(planes, planes)
        self.conv2_s = conv1x3x3(planes, mid2)
        self.bn2_s = batch_norm(mid2)
        self.conv2_t = conv3x1x1(mid2, planes)
        self.bn2_t = batch_norm(planes)
        self.relu = ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1_s(self.conv1_s(x)))
        out = self.relu(self.bn1_t(self.conv1_t(out)))
        out = self.relu(self.bn2_s(self.conv2_s(out)))
        out = self.bn2_t(self.conv2_t(out))
        return self.relu(out + residual)


class Bottleneck(nn.Layer):
    """1x1x1 reduce, (2+1)D convolution, 1x1x1 expand (x4), with a residual connection."""
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1x1(in_planes, planes)
        self.bn1 = batch_norm(planes)
        mid = mid_planes(planes, planes)
        self.conv2_s = conv1x3x3(planes, mid, stride)
        self.bn2_s = batch_norm(mid)
        self.conv2_t = conv3x1x1(mid, planes, stride)
        self.bn2_t = batch_norm(planes)
        self.conv3 = conv1x1x1(planes, planes * self.expansion)
        self.bn3 = batch_norm(planes * self.expansion)
        self.relu = ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2_s(self.conv2_s(out)))
        out = self.relu(self.bn2_t(self.conv2_t(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class ResNet(resnet.ResNet):
    """`resnet.ResNet` with a (2+1)D stem: conv1_s (1x7x7), bn1_s, relu, conv1_t, bn1_t, relu."""

    def _make_stem(self, n_input_channels: int, conv1_t_size: int, conv1_t_stride: int):
        # the reference sizes the stem for 3 input channels whatever n_input_channels is
        mid = mid_planes(3, self.in_planes, conv1_t_size, 7)
        self.conv1_s = conv3d(n_input_channels, mid, (1, 7, 7), stride=(1, 2, 2),
                              padding=(0, 3, 3))
        self.bn1_s = batch_norm(mid)
        self.conv1_t = conv3d(mid, self.in_planes, (conv1_t_size, 1, 1),
                              stride=(conv1_t_stride, 1, 1), padding=(conv1_t_size // 2, 0, 0))
        self.bn1_t = batch_norm(self.in_planes)

    def stem(self, x):
        x = self.relu(self.bn1_s(self.conv1_s(x)))  # [N, mid, T, H / 2, W / 2]
        return self.relu(self.bn1_t(self.conv1_t(x)))  # [N, 64, T / t_stride, H / 2, W / 2]


# depth -> (block, blocks per stage): resnet's table with the (2+1)D blocks
BLOCKS_2P1D = {resnet.BasicBlock: BasicBlock, resnet.Bottleneck: Bottleneck}
DEPTHS = {depth: (BLOCKS_2P1D[block], layers) for depth, (block, layers) in resnet.DEPTHS.items()}


def generate_model(model_depth: int, **kwargs) -> ResNet:
    """Build a (2+1)D ResNet of `model_depth` (one of `DEPTHS`); kwargs as for resnet's."""
    if model_depth not in DEPTHS:
        raise ValueError(f'resnet2p1d depth must be one of {sorted(DEPTHS)}, got {model_depth}')
    block, layers = DEPTHS[model_depth]
    return ResNet(block, layers, resnet.get_inplanes(), **kwargs)
