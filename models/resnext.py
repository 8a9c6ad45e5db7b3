"""3D ResNeXt (Xie et al.): bottlenecks whose 3x3x3 convolution is split into `cardinality` groups.

The trunk is `resnet.ResNet` with stage widths 128-256-512-1024 and bottlenecks that expand x2.
Input [N, C, T, H, W]; parameter names as in the reference.

The reference's `ResNeXt` passes `n_classes` where `ResNet` expects `widen_factor` (so it cannot
build a model with the default options) and sizes `fc` as `cardinality * 32 * 2`, which is right
only for cardinality 32. Here `widen_factor` keeps its default 1 and `fc` takes the width of the
last stage.
"""
from functools import partialmethod

from . import resnet


def get_inplanes():
    return [128, 256, 512, 1024]


class ResNeXtBottleneck(resnet.Bottleneck):
    """`resnet.Bottleneck` (same names, same forward) whose 3x3x3 convolution is
    `cardinality * planes / 32` wide and split into `cardinality` groups."""
    expansion = 2

    def __init__(self, in_planes: int, planes: int, cardinality: int, stride=1, downsample=None):
        super().__init__(in_planes, planes, stride, downsample,
                         mid_planes=cardinality * planes // 32, groups=cardinality)


def with_cardinality(block, cardinality: int):
    """`block` with `cardinality` bound; still a class, so that `ResNet` reads `block.expansion`."""
    return type(block.__name__, (block,),
                {'__init__': partialmethod(block.__init__, cardinality=cardinality)})


class ResNeXt(resnet.ResNet):
    """`resnet.ResNet` built from ResNeXt blocks of the given cardinality."""

    def __init__(self, block, layers, block_inplanes, cardinality: int = 32, **kwargs):
        super().__init__(with_cardinality(block, cardinality), layers, block_inplanes, **kwargs)


# depth -> blocks per stage (the bottleneck depths of resnet)
DEPTHS = {depth: layers for depth, (block, layers) in resnet.DEPTHS.items()
          if block is resnet.Bottleneck}


def generate_model(model_depth: int, **kwargs) -> ResNeXt:
    """Build a ResNeXt of `model_depth` (one of `DEPTHS`); kwargs include `cardinality` (32)."""
    if model_depth not in DEPTHS:
        raise ValueError(f'resnext depth must be one of {sorted(DEPTHS)}, got {model_depth}')
    return ResNeXt(ResNeXtBottleneck, DEPTHS[model_depth], get_inplanes(), **kwargs)
