"""3D DenseNet-BC (Huang et al.): each layer of a dense block sees the features of all before it.

Input [N, C, T, H, W]; parameter names as in the reference (`features.conv1`, `features.norm1`,
`features.denseblock1.denselayer1.conv1`, `features.transition1.conv`, `features.norm5`,
`classifier`). The reference's `DenseNet` names its class count `num_classes`, so the reference's
`model.generate_model` (which passes `n_classes`) fails for densenet; here it is `n_classes`, as in
the other families.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .resnet import ReLU, batch_norm, conv1x1x1, conv3d, conv3x3x3, linear


class _DenseLayer(nn.Sequential):
    """BN-ReLU-conv1x1x1 to `bn_size * growth_rate` channels, BN-ReLU-conv3x3x3 to `growth_rate`;
    the output is the input with the new channels appended."""

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int, drop_rate: float):
        super().__init__(
            ('norm1', batch_norm(num_input_features)),
            ('relu1', ReLU()),
            ('conv1', conv1x1x1(num_input_features, bn_size * growth_rate)),
            ('norm2', batch_norm(bn_size * growth_rate)),
            ('relu2', ReLU()),
            ('conv2', conv3x3x3(bn_size * growth_rate, growth_rate)))
        self.drop_rate = drop_rate

    def forward(self, x):
        new_features = super().forward(x)
        if self.drop_rate > 0:
            new_features = F.dropout(new_features, p=self.drop_rate, training=self.training)
        return paddle.concat([x, new_features], axis=1)  # [N, C + growth_rate, T, H, W]


class _DenseBlock(nn.Sequential):
    """`num_layers` dense layers (`denselayer1`, ...), each adding `growth_rate` channels."""

    def __init__(self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int,
                 drop_rate: float):
        super().__init__(*[
            (f'denselayer{i + 1}',
             _DenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size, drop_rate))
            for i in range(num_layers)])


class _Transition(nn.Sequential):
    """BN-ReLU-conv1x1x1 to `num_output_features`, then 2x2x2 average pooling."""

    def __init__(self, num_input_features: int, num_output_features: int):
        super().__init__(
            ('norm', batch_norm(num_input_features)),
            ('relu', ReLU()),
            ('conv', conv1x1x1(num_input_features, num_output_features)),
            ('pool', nn.AvgPool3D(kernel_size=2, stride=2)))


class DenseNet(nn.Layer):
    """DenseNet-BC: stem, dense blocks (`block_config` layers each) joined by halving transitions,
    final BN, ReLU, global average pooling, `classifier`."""

    def __init__(self, n_input_channels: int = 3, conv1_t_size: int = 7, conv1_t_stride: int = 1,
                 no_max_pool: bool = False, growth_rate: int = 32, block_config=(6, 12, 24, 16),
                 num_init_features: int = 64, bn_size: int = 4, drop_rate: float = 0.0,
                 n_classes: int = 400):
        super().__init__()
        stem = [('conv1', conv3d(n_input_channels, num_init_features, (conv1_t_size, 7, 7),
                                 stride=(conv1_t_stride, 2, 2), padding=(conv1_t_size // 2, 3, 3))),
                ('norm1', batch_norm(num_init_features)),
                ('relu1', ReLU())]
        if not no_max_pool:
            stem.append(('pool1', nn.MaxPool3D(kernel_size=3, stride=2, padding=1)))
        self.features = nn.Sequential(*stem)

        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_sublayer(f'denseblock{i + 1}', _DenseBlock(
                num_layers, num_features, bn_size=bn_size, growth_rate=growth_rate,
                drop_rate=drop_rate))
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_sublayer(f'transition{i + 1}',
                                           _Transition(num_features, num_features // 2))
                num_features //= 2
        self.features.add_sublayer('norm5', batch_norm(num_features))

        self.classifier = linear(num_features, n_classes)
        nn.initializer.Constant(0.0)(self.classifier.bias)  # the reference zeroes this bias

    def forward(self, x):
        features = self.features(x)  # [N, C, T / 16, H / 32, W / 32] with the max-pool
        out = F.adaptive_avg_pool3d(F.relu(features), output_size=1).flatten(1)  # [N, C]
        return self.classifier(out)


# depth -> layers per dense block; all depths start with 64 features and grow by 32 per layer
DEPTHS = {
    121: (6, 12, 24, 16),
    169: (6, 12, 32, 32),
    201: (6, 12, 48, 32),
    264: (6, 12, 64, 48),
}


def generate_model(model_depth: int, **kwargs) -> DenseNet:
    """Build a DenseNet of `model_depth` (one of `DEPTHS`); kwargs go to `DenseNet`."""
    if model_depth not in DEPTHS:
        raise ValueError(f'densenet depth must be one of {sorted(DEPTHS)}, got {model_depth}')
    return DenseNet(num_init_features=64, growth_rate=32, block_config=DEPTHS[model_depth],
                    **kwargs)
