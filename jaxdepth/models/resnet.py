"""The ResNet encoder family (bottleneck ResNets: ResNet-50/101/152 layout; torchvision and keras.applications
checkpoints).

``features = [x, conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4]``: the torchvision model's
children in order (``avgpool`` / ``fc`` dropped), as DenseDepth's encoder walks its DenseNet's ``features``.
Bottleneck blocks as torchvision (v1.5: the stride on the 3x3 convolution) or, with the preset's
``stride_in_1x1``, as keras.applications' ResNet50 (v1: the stride on the first 1x1 convolution; its convolutions
also carry biases: ``conv_bias``); ReLU after the residual sum; each convolution owns its BatchNorm (folded in
the quantized modes). Flax names: ``conv1`` (+ ``bn``), ``layer{i}_{j}/{conv1,conv2,conv3,downsample}``.
Keras names: ``conv1_conv`` / ``conv1_bn``, block j of stage s ``conv{s+1}_block{j+1}_{1,2,3}_{conv,bn}``, the
projection shortcut ``..._0_{conv,bn}``; torchvision's ``layer{i}`` output is Keras' ``conv{i+1}_block{n}_out``.
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
    stride_in_1x1: bool = False
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = dict(norm=True, plan=self.plan, weight_init="he_fan_out", bn_eps=self.bn_eps, use_bias=self.use_bias)
        s1, s3 = (self.stride, 1) if self.stride_in_1x1 else (1, self.stride)
        y = nn.relu(QConv(self.width, 1, stride=s1, name="conv1", **conv)(x, train))
        y = nn.relu(QConv(self.width, 3, stride=s3, padding=1, name="conv2", **conv)(y, train))
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
        feats = [x, *conv_stem(x, train, p, self.plan, "conv1", "he_fan_out", p.conv_bias)]  # conv1, bn1, relu, maxpool
        y = feats[-1]
        for i, (n, width) in enumerate(zip(p.block_config, stage_widths(p))):
            for j in range(n):
                y = Bottleneck(width, (1 if i == 0 else 2) if j == 0 else 1, j == 0, self.plan, p.bn_eps,
                               p.stride_in_1x1, p.conv_bias, name=f"layer{i + 1}_{j}")(y, train)
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


def keras_keymap(p: Preset) -> keys.KeyMap:
    """keras.applications ResNet weights (``conv1_conv/kernel``, ``conv2_block1_0_bn/gamma``, ...) -> Flax paths
    (kernels already HWIO; the convolutions' biases with ``conv_bias``)."""
    km: keys.KeyMap = {}
    enc = ("encoder",)
    keys.add_conv(km, "conv1_conv", (*enc, "conv1"), p.conv_bias, keys.KERAS)
    keys.add_bn(km, "conv1_bn", (*enc, "conv1", "bn"), keys.KERAS)
    for i, n in enumerate(p.block_config, start=1):
        for j in range(n):
            t, f = f"conv{i + 1}_block{j + 1}", (*enc, f"layer{i}_{j}")
            for k in (1, 2, 3):
                keys.add_conv(km, f"{t}_{k}_conv", (*f, f"conv{k}"), p.conv_bias, keys.KERAS)
                keys.add_bn(km, f"{t}_{k}_bn", (*f, f"conv{k}", "bn"), keys.KERAS)
            if j == 0:
                keys.add_conv(km, f"{t}_0_conv", (*f, "downsample"), p.conv_bias, keys.KERAS)
                keys.add_bn(km, f"{t}_0_bn", (*f, "downsample", "bn"), keys.KERAS)
    return km


def keras_taps(p: Preset) -> dict[str, str]:
    """Tap name -> the keras.applications layer whose output it is."""
    out = {"conv1": "conv1_conv", "bn1": "conv1_bn", "relu": "conv1_relu", "maxpool": "pool1_pool"}
    for i, n in enumerate(p.block_config, start=1):
        out[f"layer{i}"] = f"conv{i + 1}_block{n}_out"
    return out


def detect_keras(w: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """keras.applications bottleneck ResNets (``conv2_block1_3_conv`` present): always v1 (stride on the 1x1
    convolution, as keras.applications builds them); biases when the file has them."""
    if "conv1_conv/kernel" not in w or "conv2_block1_3_conv/kernel" not in w:
        return None
    blocks = keys.count_groups(w, "conv{}_block{}_1_conv/kernel", first=2)     # Keras stage 1 is the stem
    return dict(encoder="resnet", block_config=tuple(blocks), stride_in_1x1=True, conv_bias="conv1_conv/bias" in w,
                num_init_features=int(np.shape(w["conv1_conv/kernel"])[-1]))


def detect_torch(sd: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """Bottleneck ResNets (``layer1.0.conv3`` present): blocks per stage and stem width from the keys."""
    if "conv1.weight" not in sd or "layer1.0.conv3.weight" not in sd:
        return None
    blocks = keys.count_groups(sd, "layer{}.{}.conv1.weight", first_member=0)
    return dict(encoder="resnet", block_config=tuple(blocks), num_init_features=int(np.shape(sd["conv1.weight"])[0]))


FAMILY = register(EncoderFamily(
    name="resnet", module=ResNetEncoder, taps=taps, feature_channels=feature_channels, torch_keymap=torch_keymap,
    detect_torch=detect_torch, default_preset="resnet50",
    config_fields=("block_config", "num_init_features", "stride_in_1x1", "conv_bias"),
    keras_keymap=keras_keymap, keras_taps=keras_taps, detect_keras=detect_keras, keras_preset="keras_resnet50",
    torch_head="fc",
    description="torchvision / keras.applications bottleneck ResNet (ResNet-50: blocks 3, 4, 6, 3)"))
