"""Wide 3D ResNet: `resnet.ResNet` with stage widths times `k`, bottlenecks expanding x2 (not x4).

Input [N, C, T, H, W]; parameter names as in `resnet`.
"""
from . import resnet


class WideBottleneck(resnet.Bottleneck):
    """`resnet.Bottleneck` whose last 1x1x1 convolution expands the width x2."""
    expansion = 2


# depth -> blocks per stage (the bottleneck depths of resnet)
DEPTHS = {depth: layers for depth, (block, layers) in resnet.DEPTHS.items()
          if block is resnet.Bottleneck}


def generate_model(model_depth: int, k: int, **kwargs) -> resnet.ResNet:
    """Build a wide ResNet of `model_depth` (one of `DEPTHS`) with stages `k` times wider."""
    if model_depth not in DEPTHS:
        raise ValueError(f'wideresnet depth must be one of {sorted(DEPTHS)}, got {model_depth}')
    inplanes = [planes * k for planes in resnet.get_inplanes()]
    return resnet.ResNet(WideBottleneck, DEPTHS[model_depth], inplanes, **kwargs)
