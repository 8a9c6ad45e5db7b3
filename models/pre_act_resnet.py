"""Pre-activation 3D ResNet (He et al., "Identity Mappings"): BN and ReLU before each convolution.

The trunk (stem, stages, `fc`) is `resnet.ResNet`; only the blocks differ. Input [N, C, T, H, W].
"""
import paddle.nn as nn

from . import resnet
from .resnet import ReLU, batch_norm, conv1x1x1, conv3x3x3


class PreActivationBasicBlock(nn.Layer):
    """BN-ReLU-conv3x3x3 twice, plus the (unactivated) residual."""
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride=1, downsample=None):
        super().__init__()
        self.bn1 = batch_norm(in_planes)
        self.conv1 = conv3x3x3(in_planes, planes, stride)
        self.bn2 = batch_norm(planes)
        self.conv2 = conv3x3x3(planes, planes)
        self.relu = ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return out + residual


class PreActivationBottleneck(nn.Layer):
    """BN-ReLU before each of the 1x1x1 reduce, 3x3x3 and 1x1x1 expand (x4) convolutions."""
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride=1, downsample=None):
        super().__init__()
        self.bn1 = batch_norm(in_planes)
        self.conv1 = conv1x1x1(in_planes, planes)
        self.bn2 = batch_norm(planes)
        self.conv2 = conv3x3x3(planes, planes, stride)
        self.bn3 = batch_norm(planes)
        self.conv3 = conv1x1x1(planes, planes * self.expansion)
        self.relu = ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + residual


PRE_ACTIVATION = {resnet.BasicBlock: PreActivationBasicBlock,
                  resnet.Bottleneck: PreActivationBottleneck}

# depth -> (block, blocks per stage): resnet's table with the pre-activation blocks
DEPTHS = {depth: (PRE_ACTIVATION[block], layers)
          for depth, (block, layers) in resnet.DEPTHS.items()}


def generate_model(model_depth: int, **kwargs) -> resnet.ResNet:
    """Build a pre-activation ResNet of `model_depth` (one of `DEPTHS`); kwargs as for resnet's."""
    if model_depth not in DEPTHS:
        raise ValueError(f'preresnet depth must be one of {sorted(DEPTHS)}, got {model_depth}')
    block, layers = DEPTHS[model_depth]
    return resnet.ResNet(block, layers, resnet.get_inplanes(), **kwargs)
