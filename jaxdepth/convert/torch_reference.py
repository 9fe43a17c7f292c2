"""PyTorch reference DenseDepth (for conversion tests and users without the original code).

Independent re-implementations with torchvision's module names (no torchvision needed): `densenet` builds
torchvision's DenseNet (121/161/169/201), `mobilenet_v2` torchvision's MobileNetV2 (any ``width_mult``),
`resnet50` torchvision's ResNet-50 (`ResNet`: any bottleneck block counts),
and `DenseDepth` wraps one as ``encoder.original_model`` with the decoder of the DenseDepth / MobileNetV2
code bases (``decoder.conv2``, ``decoder.upK.convA/convB``, ``decoder.conv3``), configured by a
`jaxdepth.models.Preset`. Requires torch (imported at module load: import this module lazily).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..models.presets import DENSENET_CONFIGS, Preset, get_preset, make_divisible


# ---- torchvision DenseNet -----------------------------------------------------------------------------------
class _DenseLayer(nn.Module):
    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, stride=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, stride=1, padding=1, bias=False)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(inputs, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(num_input_features + i * growth_rate, growth_rate,
                                                               bn_size))

    def forward(self, init_features: torch.Tensor) -> torch.Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, num_input_features: int, num_output_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, 1, stride=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    def __init__(self, growth_rate: int = 32, block_config=(6, 12, 24, 16), num_init_features: int = 64,
                 bn_size: int = 4, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, num_init_features, kernel_size=7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
        ]))
        c = num_init_features
        for i, n in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(n, c, bn_size, growth_rate))
            c += n * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(c, c // 2))
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


def densenet(name: str, num_classes: int = 1000) -> DenseNet:
    """torchvision.models.<name>() architecture (densenet121 / 161 / 169 / 201), random weights."""
    growth, blocks, init = DENSENET_CONFIGS[name]
    return DenseNet(growth, blocks, init, 4, num_classes)


# ---- torchvision MobileNetV2 --------------------------------------------------------------------------------
class Conv2dNormActivation(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                                   bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden, kernel_size=1))
        layers += [Conv2dNormActivation(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, width_mult: float = 1.0, round_nearest: int = 8, num_classes: int = 1000) -> None:
        super().__init__()
        p = get_preset("mobilenetv2", width_mult=width_mult, round_nearest=round_nearest)
        stem = make_divisible(32 * width_mult, round_nearest)
        layers: list[nn.Module] = [Conv2dNormActivation(3, stem, stride=2)]
        for c_in, c_out, stride, t in p.mobilenet_blocks():
            layers.append(InvertedResidual(c_in, c_out, stride, t))
        self.last_channel = p.mobilenet_last_channels()
        layers.append(Conv2dNormActivation(layers[-1].conv[-1].num_features, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(width_mult: float = 1.0, num_classes: int = 1000) -> MobileNetV2:
    """torchvision.models.mobilenet_v2(width_mult=...) architecture, random weights."""
    return MobileNetV2(width_mult, 8, num_classes)


# ---- torchvision ResNet (bottleneck) ------------------------------------------------------------------------
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, width: int, stride: int = 1, downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), stem: int = 64, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = stem
        for i, n in enumerate(layers):
            width, stride = stem * 2 ** i, 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                down = None
                if j == 0:
                    down = nn.Sequential(nn.Conv2d(inplanes, width * 4, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(width * 4))
                blocks.append(Bottleneck(inplanes, width, stride if j == 0 else 1, down))
                inplanes = width * 4
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"):
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(x, 1))


def resnet50(num_classes: int = 1000) -> ResNet:
    """torchvision.models.resnet50() architecture, random weights."""
    return ResNet((3, 4, 6, 3), 64, num_classes)


# ---- DenseDepth -----------------------------------------------------------------------------------------------
class UpSample(nn.Sequential):
    def __init__(self, skip_input: int, output_features: int, leakyrelu_a: bool = True) -> None:
        super().__init__()
        self.convA = nn.Conv2d(skip_input, output_features, kernel_size=3, stride=1, padding=1)
        self.leakyreluA = nn.LeakyReLU(0.2)
        self.convB = nn.Conv2d(output_features, output_features, kernel_size=3, stride=1, padding=1)
        self.leakyreluB = nn.LeakyReLU(0.2)
        self.apply_leakyrelu_a = leakyrelu_a

    def forward(self, x: torch.Tensor, concat_with: torch.Tensor) -> torch.Tensor:
        up_x = F.interpolate(x, size=[concat_with.size(2), concat_with.size(3)], mode="bilinear",
                             align_corners=True)
        y = self.convA(torch.cat([up_x, concat_with], dim=1))
        if self.apply_leakyrelu_a:
            y = self.leakyreluA(y)
        return self.leakyreluB(self.convB(y))


class Decoder(nn.Module):
    def __init__(self, preset: Preset) -> None:
        super().__init__()
        self.preset = preset
        width = preset.decoder_features()
        c_bottleneck = preset.bottleneck_channels()
        self.conv2 = nn.Conv2d(c_bottleneck, width, kernel_size=1, stride=1, padding=preset.conv2_padding)
        for name, c_in, c_out in preset.decoder_channels():
            self.add_module(name, UpSample(c_in, c_out, preset.leakyrelu_a))
        self.conv3 = nn.Conv2d(preset.decoder_channels()[-1][2], 1, kernel_size=3, stride=1, padding=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[self.preset.tap_index(self.preset.bottleneck)]
        x = self.conv2(F.relu(x) if self.preset.bottleneck_relu else x)
        for blk in self.preset.up_blocks:
            x = getattr(self, blk.name)(x, features[self.preset.tap_index(blk.skip)])
        return self.conv3(x)


class Encoder(nn.Module):
    def __init__(self, original_model: nn.Module) -> None:
        super().__init__()
        self.original_model = original_model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """DenseDepth's walk over the classifier's feature children (ResNets: its children up to ``layer4``)."""
        features = [x]
        children = (self.original_model.features.children() if hasattr(self.original_model, "features") else
                    (m for n, m in self.original_model.named_children() if n not in ("avgpool", "fc")))
        for module in children:
            features.append(module(features[-1]))
        return features


def encoder_model(preset: Preset) -> nn.Module:
    """The torchvision classifier a preset's encoder is taken from (random weights)."""
    if preset.encoder == "densenet":
        return DenseNet(preset.growth_rate, preset.block_config, preset.num_init_features, preset.bn_size)
    if preset.encoder == "mobilenetv2":
        return MobileNetV2(preset.width_mult, preset.round_nearest)
    if preset.encoder == "resnet":
        return ResNet(preset.block_config, preset.num_init_features)
    raise ValueError(f"unknown encoder kind {preset.encoder!r}")


class DenseDepth(nn.Module):
    """``encoder.original_model`` (torchvision classifier) + ``decoder``, as in the published code."""

    def __init__(self, preset: "str | Preset", original_model: Optional[nn.Module] = None) -> None:
        super().__init__()
        preset = get_preset(preset)
        self.encoder = Encoder(original_model if original_model is not None else encoder_model(preset))
        self.decoder = Decoder(preset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics (for tests)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
                m.num_batches_tracked.fill_(7)
    return model
