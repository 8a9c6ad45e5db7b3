"""PyTorch models with the layout of the reference (kenshohara/3D-ResNets-PyTorch), for parity.

Written independently of our Paddle models and compactly: a residual block is a list of
(conv name, conv, bn name, bn) units, run post-activation (`relu(bn(conv(x)))`, no ReLU after the
last unit, ReLU after the sum) or pre-activation (`conv(relu(bn(x)))`, no ReLU after the sum).
Module and parameter names, their order and the layer shapes are the reference's. ResNeXt takes
the reference's intended widths (`widen_factor` 1, `fc` as wide as the last stage).
"""
from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

STAGES = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3],
          101: [3, 4, 23, 3], 152: [3, 8, 36, 3], 200: [3, 24, 36, 3]}
DENSE_BLOCKS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32),
                264: (6, 12, 64, 48)}


def conv(cin, cout, kernel, stride=1, padding=0, groups=1):
    return nn.Conv3d(cin, cout, kernel, stride, padding, groups=groups, bias=False)


def mid_2p1d(cin, cout, t=3, s=3):
    return cin * cout * t * s * s // (cin * s * s + t * cout)


def units_2p1d(index, cin, cout, stride):
    mid = mid_2p1d(cin, cout)
    return [(f'conv{index}_s', conv(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1)),
             f'bn{index}_s', nn.BatchNorm3d(mid)),
            (f'conv{index}_t', conv(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0)),
             f'bn{index}_t', nn.BatchNorm3d(cout))]


# block kind -> (expansion, units(cin, planes, stride, cardinality)); a unit is
# (conv name, conv, bn name, bn); pre-activation blocks normalise the unit's input, not its output
BLOCKS = {
    'basic': (1, lambda cin, p, s, c: [
        ('conv1', conv(cin, p, 3, s, 1), 'bn1', nn.BatchNorm3d(p)),
        ('conv2', conv(p, p, 3, 1, 1), 'bn2', nn.BatchNorm3d(p))]),
    'bottleneck': (4, lambda cin, p, s, c: [
        ('conv1', conv(cin, p, 1), 'bn1', nn.BatchNorm3d(p)),
        ('conv2', conv(p, p, 3, s, 1), 'bn2', nn.BatchNorm3d(p)),
        ('conv3', conv(p, 4 * p, 1), 'bn3', nn.BatchNorm3d(4 * p))]),
    'preact_basic': (1, lambda cin, p, s, c: [
        ('conv1', conv(cin, p, 3, s, 1), 'bn1', nn.BatchNorm3d(cin)),
        ('conv2', conv(p, p, 3, 1, 1), 'bn2', nn.BatchNorm3d(p))]),
    'preact_bottleneck': (4, lambda cin, p, s, c: [
        ('conv1', conv(cin, p, 1), 'bn1', nn.BatchNorm3d(cin)),
        ('conv2', conv(p, p, 3, s, 1), 'bn2', nn.BatchNorm3d(p)),
        ('conv3', conv(p, 4 * p, 1), 'bn3', nn.BatchNorm3d(p))]),
    '2p1d_basic': (1, lambda cin, p, s, c: units_2p1d(1, cin, p, s) + units_2p1d(2, p, p, 1)),
    '2p1d_bottleneck': (4, lambda cin, p, s, c: [
        ('conv1', conv(cin, p, 1), 'bn1', nn.BatchNorm3d(p))] + units_2p1d(2, p, p, s) + [
        ('conv3', conv(p, 4 * p, 1), 'bn3', nn.BatchNorm3d(4 * p))]),
    'wide_bottleneck': (2, lambda cin, p, s, c: [
        ('conv1', conv(cin, p, 1), 'bn1', nn.BatchNorm3d(p)),
        ('conv2', conv(p, p, 3, s, 1), 'bn2', nn.BatchNorm3d(p)),
        ('conv3', conv(p, 2 * p, 1), 'bn3', nn.BatchNorm3d(2 * p))]),
    'resnext_bottleneck': (2, lambda cin, p, s, c: [
        ('conv1', conv(cin, c * p // 32, 1), 'bn1', nn.BatchNorm3d(c * p // 32)),
        ('conv2', conv(c * p // 32, c * p // 32, 3, s, 1, groups=c), 'bn2',
         nn.BatchNorm3d(c * p // 32)),
        ('conv3', conv(c * p // 32, 2 * p, 1), 'bn3', nn.BatchNorm3d(2 * p))]),
}


class Block(nn.Module):
    """A residual block made of units (see the module docstring)."""

    def __init__(self, units, downsample, pre_act):
        super().__init__()
        self.pairs = []
        for conv_name, conv_layer, bn_name, bn_layer in units:
            named = [(bn_name, bn_layer), (conv_name, conv_layer)] if pre_act else \
                [(conv_name, conv_layer), (bn_name, bn_layer)]
            for name, layer in named:
                self.add_module(name, layer)
            self.pairs.append((conv_layer, bn_layer))
        self.downsample = downsample
        self.pre_act = pre_act

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = x
        for i, (conv_layer, bn_layer) in enumerate(self.pairs):
            if self.pre_act:
                out = conv_layer(F.relu(bn_layer(out)))
            else:
                out = bn_layer(conv_layer(out))
                out = out if i == len(self.pairs) - 1 else F.relu(out)
        out = out + residual
        return out if self.pre_act else F.relu(out)


def shortcut_a(x, planes, stride):
    out = F.avg_pool3d(x, kernel_size=1, stride=stride)
    pad = out.new_zeros((out.shape[0], planes - out.shape[1]) + out.shape[2:])
    return torch.cat([out, pad], 1)


class ResNet(nn.Module):
    """The reference's ResNet trunk (3D or (2+1)D stem) for any block kind of `BLOCKS`."""

    def __init__(self, kind, layers, widths, n_input_channels=3, conv1_t_size=7, conv1_t_stride=1,
                 no_max_pool=False, shortcut_type='B', cardinality=32, n_classes=400):
        super().__init__()
        expansion, units = BLOCKS[kind]
        self.in_planes = widths[0]
        if kind.startswith('2p1d'):
            mid = mid_2p1d(3, widths[0], conv1_t_size, 7)
            stem = [('conv1_s', conv(n_input_channels, mid, (1, 7, 7), (1, 2, 2), (0, 3, 3))),
                    ('bn1_s', nn.BatchNorm3d(mid)), ('relu_s', nn.ReLU()),
                    ('conv1_t', conv(mid, widths[0], (conv1_t_size, 1, 1), (conv1_t_stride, 1, 1),
                                     (conv1_t_size // 2, 0, 0))),
                    ('bn1_t', nn.BatchNorm3d(widths[0]))]
        else:
            stem = [('conv1', conv(n_input_channels, widths[0], (conv1_t_size, 7, 7),
                                   (conv1_t_stride, 2, 2), (conv1_t_size // 2, 3, 3))),
                    ('bn1', nn.BatchNorm3d(widths[0]))]
        for name, layer in stem:  # at the top level, as in the reference
            self.add_module(name, layer)
        self.stem = [layer for _, layer in stem] + [nn.ReLU()]
        self.maxpool = nn.Identity() if no_max_pool else nn.MaxPool3d(3, 2, 1)
        for i, (planes, n_blocks) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n_blocks):
                downsample = None
                if j == 0 and (stride != 1 or self.in_planes != planes * expansion):
                    downsample = partial(shortcut_a, planes=planes * expansion, stride=stride) \
                        if shortcut_type == 'A' else nn.Sequential(
                            conv(self.in_planes, planes * expansion, 1, stride),
                            nn.BatchNorm3d(planes * expansion))
                blocks.append(Block(units(self.in_planes, planes, stride if j == 0 else 1,
                                          cardinality), downsample, kind.startswith('preact')))
                self.in_planes = planes * expansion
            setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
        self.fc = nn.Linear(widths[3] * expansion, n_classes)

    def forward(self, x):
        for layer in self.stem:
            x = layer(x)
        x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool3d(x, 1).flatten(1))


class DenseLayer(nn.Sequential):
    def __init__(self, cin, growth_rate, bn_size):
        super().__init__(OrderedDict([
            ('norm1', nn.BatchNorm3d(cin)), ('relu1', nn.ReLU()),
            ('conv1', conv(cin, bn_size * growth_rate, 1)),
            ('norm2', nn.BatchNorm3d(bn_size * growth_rate)), ('relu2', nn.ReLU()),
            ('conv2', conv(bn_size * growth_rate, growth_rate, 3, 1, 1))]))

    def forward(self, x):
        return torch.cat([x, super().forward(x)], 1)


class DenseNet(nn.Module):
    """The reference's DenseNet-BC (growth 32, 64 initial features, bottleneck x4, no dropout)."""

    def __init__(self, block_config, n_input_channels=3, conv1_t_size=7, conv1_t_stride=1,
                 no_max_pool=False, n_classes=400):
        super().__init__()
        stem = [('conv1', conv(n_input_channels, 64, (conv1_t_size, 7, 7), (conv1_t_stride, 2, 2),
                               (conv1_t_size // 2, 3, 3))),
                ('norm1', nn.BatchNorm3d(64)), ('relu1', nn.ReLU())]
        if not no_max_pool:
            stem.append(('pool1', nn.MaxPool3d(3, 2, 1)))
        self.features = nn.Sequential(OrderedDict(stem))
        n = 64
        for i, n_layers in enumerate(block_config):
            self.features.add_module(f'denseblock{i + 1}', nn.Sequential(OrderedDict(
                (f'denselayer{j + 1}', DenseLayer(n + j * 32, 32, 4)) for j in range(n_layers))))
            n += n_layers * 32
            if i != len(block_config) - 1:
                self.features.add_module(f'transition{i + 1}', nn.Sequential(OrderedDict([
                    ('norm', nn.BatchNorm3d(n)), ('relu', nn.ReLU()), ('conv', conv(n, n // 2, 1)),
                    ('pool', nn.AvgPool3d(2, 2))])))
                n //= 2
        self.features.add_module('norm5', nn.BatchNorm3d(n))
        self.classifier = nn.Linear(n, n_classes)

    def forward(self, x):
        x = F.relu(self.features(x))
        return self.classifier(F.adaptive_avg_pool3d(x, 1).flatten(1))


def build(model: str, depth: int, widen_factor=1.0, k=2, cardinality=32, **kwargs) -> nn.Module:
    """A model of the reference's layout: `model` as `--model`, kwargs as the reference's."""
    if model == 'densenet':
        return DenseNet(DENSE_BLOCKS[depth], **kwargs)
    basic = depth < 50
    kind, widths = {
        'resnet': ('basic' if basic else 'bottleneck', [64, 128, 256, 512]),
        'preresnet': ('preact_basic' if basic else 'preact_bottleneck', [64, 128, 256, 512]),
        'resnet2p1d': ('2p1d_basic' if basic else '2p1d_bottleneck', [64, 128, 256, 512]),
        'wideresnet': ('wide_bottleneck', [64 * k, 128 * k, 256 * k, 512 * k]),
        'resnext': ('resnext_bottleneck', [128, 256, 512, 1024]),
    }[model]
    widths = [int(w * widen_factor) for w in widths]
    return ResNet(kind, STAGES[depth], widths, cardinality=cardinality, **kwargs)
