"""The ResNet encoder family (torchvision bottleneck ResNets: ResNet-50/101/152 layout; torchvision checkpoints).

``features = [x, conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4]``: the torchvision model's
children in order (``avgpool`` / ``fc`` dropped), as DenseDepth's encoder walks its DenseNet's ``features``.
Bottleneck blocks as torchvision (v1.5: the stride on the 3x3 convolution), ReLU after the residual sum;
each convolution owns its BatchNorm (folded in the quantized modes). Flax names: ``conv1`` (+ ``bn``),
``layer{i}_{j}/{conv1,conv2,conv3,downsample}``.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import numpy as np

from . import keys
from .family import EncoderFamily, register
from .layers import BN_EPS, QConv
from .plan import FLOAT_PLAN, Plan
from .presets import Preset
from .stem import conv_stem

EXPANSION = 4


def stage_widths(p: Preset) -> list[int]:
    """Bottleneck width of each stage (64, 128, 256, 512 for the standard stem of 64)."""
    return [p.num_init_features * 2 ** i for i in range(len(p.block_config))]


class Bottleneck(nn.Module):
    width: int
    stride: int
    downsample: bool
    plan: Plan = FLOAT_PLAN
    bn_eps: float = BN_EPS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = dict(norm=True, plan=self.plan, weight_init="he_fan_out", bn_eps=self.bn_eps)
        y = nn.relu(QConv(self.width, 1, name="conv1", **conv)(x, train))
        y = nn.relu(QConv(self.width, 3, stride=self.stride, padding=1, name="conv2", **conv)(y, train))
        y = QConv(self.width * EXPANSION, 1, name="conv3", **conv)(y, train)
        if self.downsample:
            x = QConv(self.width * EXPANSION, 1, stride=self.stride, name="downsample", **conv)(x, train)
        return nn.relu(y + x)


class ResNetEncoder(nn.Module):
    """torchvision ResNet without ``avgpool`` / ``fc``; returns the 9-entry feature list."""

    preset: Preset
    plan: Plan = FLOAT_PLAN

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        p = self.preset
        feats = [x, *conv_stem(x, train, p, self.plan, "conv1", "he_fan_out")]  # conv1, bn1, relu, maxpool
        y = feats[-1]
        for i, (n, width) in enumerate(zip(p.block_config, stage_widths(p))):
            for j in range(n):
                y = Bottleneck(width, (1 if i == 0 else 2) if j == 0 else 1, j == 0, self.plan, p.bn_eps,
                               name=f"layer{i + 1}_{j}")(y, train)
            feats.append(y)                                     # layer{i+1}
        return feats


# ---- the family unit: feature names, channels, checkpoint key maps, detection ---------------------------------
def taps(p: Preset) -> list[str]:
    return ["input", "conv1", "bn1", "relu", "maxpool", *(f"layer{i}" for i in range(1, len(p.block_config) + 1))]


def feature_channels(p: Preset) -> list[int]:
    c = p.num_init_features
    return [3, c, c, c, c, *(w * EXPANSION for w in stage_widths(p))]


def torch_keymap(p: Preset) -> keys.KeyMap:
    """torchvision ResNet keys (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0`` ...) -> Flax."""
    km: keys.KeyMap = {}
    enc = ("encoder",)
    keys.add_conv(km, "conv1", (*enc, "conv1"))
    keys.add_bn(km, "bn1", (*enc, "conv1", "bn"))
    for i, n in enumerate(p.block_config, start=1):
        for j in range(n):
            t, f = f"layer{i}.{j}", (*enc, f"layer{i}_{j}")
            for k in (1, 2, 3):
                keys.add_conv(km, f"{t}.conv{k}", (*f, f"conv{k}"))
                keys.add_bn(km, f"{t}.bn{k}", (*f, f"conv{k}", "bn"))
            if j == 0:
                keys.add_conv(km, f"{t}.downsample.0", (*f, "downsample"))
                keys.add_bn(km, f"{t}.downsample.1", (*f, "downsample", "bn"))
    return km


def detect_torch(sd: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """Bottleneck ResNets (``layer1.0.conv3`` present): blocks per stage and stem width from the keys."""
    if "conv1.weight" not in sd or "layer1.0.conv3.weight" not in sd:
        return None
    blocks, i = [], 1
    while f"layer{i}.0.conv1.weight" in sd:
        n = 1
        while f"layer{i}.{n}.conv1.weight" in sd:
            n += 1
        blocks.append(n)
        i += 1
    return dict(encoder="resnet", block_config=tuple(blocks), num_init_features=int(np.shape(sd["conv1.weight"])[0]))


FAMILY = register(EncoderFamily(
    name="resnet", module=ResNetEncoder, taps=taps, feature_channels=feature_channels, torch_keymap=torch_keymap,
    detect_torch=detect_torch, default_preset="resnet50", config_fields=("block_config", "num_init_features"),
    torch_head="fc",
    description="torchvision bottleneck ResNet (ResNet-50: blocks 3, 4, 6, 3)"))
