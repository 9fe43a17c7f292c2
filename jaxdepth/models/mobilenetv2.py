"""The MobileNetV2 encoder family (torchvision layout, any width_mult; torchvision and keras.applications
checkpoints).

``features = [x, stem, block1, ..., block17, head]`` (20 entries): torchvision ``features.0`` is ``stem``,
``features.i`` (1 <= i <= 17) is ``block{i}`` (``expand`` / ``depthwise`` / ``project`` convolutions, each
with its BatchNorm), ``features.18`` is ``head``. ReLU6 after stem, expand, depthwise and head (the QConv's
``activation``: fused into the layer in integer requantization).

keras.applications' MobileNetV2 is the same network except for the padding of its stride-2 3x3 convolutions
(stem and strided depthwise): TensorFlow "same" / ``correct_pad``, 0 rows before and 1 after on an even size,
where PyTorch pads 1 and 1, so the sampled windows are shifted by one pixel: the preset's ``tf_padding``
selects Keras' padding. Keras names: ``Conv1`` / ``bn_Conv1`` (stem); torchvision block i is Keras block i-1
(``expanded_conv_{depthwise,project}`` for block 1, ``block_{i-1}_{expand,depthwise,project}`` with ``_BN``);
``Conv_1`` / ``Conv_1_bn`` (head).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import keys
from .family import EncoderFamily, register
from .layers import BN_EPS, QConv
from .plan import FLOAT_PLAN, Plan
from .presets import Preset



def pad_same(x: jax.Array, kernel: int, stride: int) -> jax.Array:
    """TensorFlow "same" padding of an NHWC input for a strided convolution (Keras' correct_pad for stride 2):
    the total padding ``max((ceil(n / s) - 1) * s + k - n, 0)``, its smaller half before."""
    pads = []
    for n in x.shape[1:3]:
        total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
        pads.append((total // 2, total - total // 2))
    return jnp.pad(x, ((0, 0), *pads, (0, 0)))


def _strided_conv(x: jax.Array, stride: int, tf_padding: bool) -> tuple[jax.Array, int]:
    """(input, padding) of a 3x3 convolution: PyTorch's symmetric 1, or Keras' "same" for stride 2."""
    if tf_padding and stride > 1:
        return pad_same(x, 3, stride), 0
    return x, 1


class InvertedResidual(nn.Module):
    out_channels: int
    stride: int
    expand_ratio: int
    plan: Plan = FLOAT_PLAN
    bn_eps: float = BN_EPS
    tf_padding: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c_in = x.shape[-1]
        hidden = int(round(c_in * self.expand_ratio))
        y = x
        if self.expand_ratio != 1:
            y = QConv(hidden, 1, norm=True, plan=self.plan, weight_init="he_fan_out", bn_eps=self.bn_eps,
                      activation="relu6", name="expand")(y, train)
        y, pad = _strided_conv(y, self.stride, self.tf_padding)
        y = QConv(hidden, 3, stride=self.stride, padding=pad, groups=hidden, norm=True, plan=self.plan,
                  weight_init="he_fan_out", bn_eps=self.bn_eps, activation="relu6", name="depthwise")(y, train)
        y = QConv(self.out_channels, 1, norm=True, plan=self.plan, weight_init="he_fan_out", bn_eps=self.bn_eps,
                  name="project")(y, train)
        if self.stride == 1 and c_in == self.out_channels:
            y = x + y
        return y


class MobileNetV2Encoder(nn.Module):
    """torchvision MobileNetV2 ``features`` (no classifier); returns the 20-entry feature list."""

    preset: Preset
    plan: Plan = FLOAT_PLAN

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        p = self.preset
        feats = [x]
        y, pad = _strided_conv(x, 2, p.tf_padding)
        y = QConv(p.mobilenet_stem_channels(), 3, stride=2, padding=pad, norm=True, plan=self.plan,
                  weight_init="he_fan_out", bn_eps=p.bn_eps, activation="relu6", name="stem")(y, train)
        feats.append(y)
        for i, (_, c_out, stride, t) in enumerate(p.mobilenet_blocks()):
            y = InvertedResidual(c_out, stride, t, self.plan, p.bn_eps, p.tf_padding, name=f"block{i + 1}")(y, train)
            feats.append(y)
        y = QConv(p.mobilenet_last_channels(), 1, norm=True, plan=self.plan, weight_init="he_fan_out",
                  bn_eps=p.bn_eps, activation="relu6", name="head")(y, train)
        feats.append(y)
        return feats


# ---- the family unit: feature names, channels, checkpoint key maps, detection ---------------------------------
def taps(p: Preset) -> list[str]:
    """Names of the feature list's entries: torchvision ``features.0`` = stem, ``features.i`` = block{i}, last =
    head."""
    return ["input", "stem", *(f"block{i}" for i in range(1, len(p.mobilenet_blocks()) + 1)), "head"]


def feature_channels(p: Preset) -> list[int]:
    return [3, p.mobilenet_stem_channels(), *(c for _, c, _, _ in p.mobilenet_blocks()), p.mobilenet_last_channels()]


def torch_keymap(p: Preset) -> keys.KeyMap:
    """torchvision MobileNetV2 ``features.*`` keys -> Flax ``encoder/{stem,blockI,head}`` paths."""
    km: keys.KeyMap = {}
    enc = ("encoder",)
    keys.add_conv(km, "features.0.0", (*enc, "stem"))
    keys.add_bn(km, "features.0.1", (*enc, "stem", "bn"))
    for i, (_, _, _, t) in enumerate(p.mobilenet_blocks(), start=1):
        parts = (["depthwise"] if t == 1 else ["expand", "depthwise"])
        f = (*enc, f"block{i}")
        for j, part in enumerate(parts):            # Conv2dNormActivation: .0 conv, .1 bn
            keys.add_conv(km, f"features.{i}.conv.{j}.0", (*f, part))
            keys.add_bn(km, f"features.{i}.conv.{j}.1", (*f, part, "bn"))
        j = len(parts)                                # project conv, then its bn
        keys.add_conv(km, f"features.{i}.conv.{j}", (*f, "project"))
        keys.add_bn(km, f"features.{i}.conv.{j + 1}", (*f, "project", "bn"))
    last = len(p.mobilenet_blocks()) + 1
    keys.add_conv(km, f"features.{last}.0", (*enc, "head"))
    keys.add_bn(km, f"features.{last}.1", (*enc, "head", "bn"))
    return km


def _keras_block(i: int) -> str:
    """Keras layer prefix of torchvision block i (1-based): ``expanded_conv_``, ``block_1_`` ..."""
    return "expanded_conv_" if i == 1 else f"block_{i - 1}_"


def keras_keymap(p: Preset) -> keys.KeyMap:
    """keras.applications MobileNetV2 weights (``Conv1/kernel``, ``block_1_depthwise/kernel``,
    ``block_1_expand_BN/gamma``, ...) -> Flax ``encoder/{stem,blockI,head}`` paths."""
    km: keys.KeyMap = {}
    enc = ("encoder",)
    keys.add_conv(km, "Conv1", (*enc, "stem"), naming=keys.KERAS)
    keys.add_bn(km, "bn_Conv1", (*enc, "stem", "bn"), keys.KERAS)
    for i, (_, _, _, t) in enumerate(p.mobilenet_blocks(), start=1):
        k, f = _keras_block(i), (*enc, f"block{i}")
        if t != 1:
            keys.add_conv(km, k + "expand", (*f, "expand"), naming=keys.KERAS)
            keys.add_bn(km, k + "expand_BN", (*f, "expand", "bn"), keys.KERAS)
        keys.add_keras_depthwise(km, k + "depthwise", (*f, "depthwise"))
        keys.add_bn(km, k + "depthwise_BN", (*f, "depthwise", "bn"), keys.KERAS)
        keys.add_conv(km, k + "project", (*f, "project"), naming=keys.KERAS)
        keys.add_bn(km, k + "project_BN", (*f, "project", "bn"), keys.KERAS)
    keys.add_conv(km, "Conv_1", (*enc, "head"), naming=keys.KERAS)
    keys.add_bn(km, "Conv_1_bn", (*enc, "head", "bn"), keys.KERAS)
    return km


def keras_taps(p: Preset) -> dict[str, str]:
    """Tap name -> the keras.applications layer whose output it is (a block's ``_add`` when it has a residual,
    else its ``project_BN``)."""
    out = {"stem": "Conv1_relu", "head": "out_relu"}
    for i, (c_in, c_out, stride, _) in enumerate(p.mobilenet_blocks(), start=1):
        out[f"block{i}"] = _keras_block(i) + ("add" if stride == 1 and c_in == c_out else "project_BN")
    return out


def detect_keras(w: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """width_mult (alpha) from the stem and block widths, like `detect_torch`."""
    from .presets import PRESETS, make_divisible

    if "Conv1/kernel" not in w or "expanded_conv_project/kernel" not in w:
        return None
    stem = np.shape(w["Conv1/kernel"])[-1]
    project = [np.shape(w["expanded_conv_project/kernel"])[-1]]
    while f"block_{len(project)}_project/kernel" in w:
        project.append(np.shape(w[f"block_{len(project)}_project/kernel"])[-1])
    for width in _CANDIDATES:
        cand = PRESETS["keras_mobilenetv2"].replace(width_mult=width)
        if make_divisible(32 * width) == stem and [c for _, c, _, _ in cand.mobilenet_blocks()] == project:
            return dict(encoder="mobilenetv2", width_mult=width, tf_padding=True)
    raise ValueError(f"Keras MobileNetV2 with stem {stem} and block widths {project} matches no alpha")


_COMMON = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
_CANDIDATES = sorted(set(_COMMON) | {round(0.05 * j, 2) for j in range(1, 61)}, key=lambda w: (w not in _COMMON, w))


def detect_torch(sd: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """width_mult from the stem and block widths (the common multipliers first)."""
    from .presets import PRESETS, make_divisible

    if "features.0.0.weight" not in sd or "features.1.conv.0.0.weight" not in sd:
        return None
    stem = np.shape(sd["features.0.0.weight"])[0]
    project, i = [], 1
    while True:
        pattern = re.compile(rf"^features\.{i}\.conv\.(\d+)\.weight$")
        convs = sorted(int(m.group(1)) for k in sd for m in [pattern.match(k)] if m)
        if not convs:
            break
        project.append(np.shape(sd[f"features.{i}.conv.{convs[-1]}.weight"])[0])
        i += 1
    for w in _CANDIDATES:
        cand = PRESETS["mobilenetv2"].replace(width_mult=w)
        if make_divisible(32 * w) == stem and [c for _, c, _, _ in cand.mobilenet_blocks()] == project:
            return dict(encoder="mobilenetv2", width_mult=w)
    raise ValueError(f"MobileNetV2 checkpoint with stem {stem} and block widths {project} matches no width_mult")


FAMILY = register(EncoderFamily(
    name="mobilenetv2", module=MobileNetV2Encoder, taps=taps, feature_channels=feature_channels,
    torch_keymap=torch_keymap, detect_torch=detect_torch, default_preset="mobilenetv2",
    config_fields=("width_mult", "round_nearest", "tf_padding"),
    keras_keymap=keras_keymap, keras_taps=keras_taps, detect_keras=detect_keras, keras_preset="keras_mobilenetv2",
    description="torchvision / keras.applications MobileNetV2 (any width_mult)"))
