"""The MobileNetV2 encoder family (torchvision layout, any width_mult; torchvision checkpoints).

``features = [x, stem, block1, ..., block17, head]`` (20 entries): torchvision ``features.0`` is ``stem``,
``features.i`` (1 <= i <= 17) is ``block{i}`` (``expand`` / ``depthwise`` / ``project`` convolutions, each
with its BatchNorm), ``features.18`` is ``head``. ReLU6 after stem, expand, depthwise and head (the QConv's
``activation``: fused into the layer in integer requantization).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import numpy as np

from . import keys
from .family import EncoderFamily, register
from .layers import BN_EPS, QConv
from .plan import FLOAT_PLAN, Plan
from .presets import Preset



class InvertedResidual(nn.Module):
    out_channels: int
    stride: int
    expand_ratio: int
    plan: Plan = FLOAT_PLAN
    bn_eps: float = BN_EPS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c_in = x.shape[-1]
        hidden = int(round(c_in * self.expand_ratio))
        y = x
        if self.expand_ratio != 1:
            y = QConv(hidden, 1, norm=True, plan=self.plan, weight_init="he_fan_out", bn_eps=self.bn_eps,
                      activation="relu6", name="expand")(y, train)
        y = QConv(hidden, 3, stride=self.stride, padding=1, groups=hidden, norm=True, plan=self.plan,
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
        y = QConv(p.mobilenet_stem_channels(), 3, stride=2, padding=1, norm=True, plan=self.plan,
                  weight_init="he_fan_out", bn_eps=p.bn_eps, activation="relu6", name="stem")(x, train)
        feats.append(y)
        for i, (_, c_out, stride, t) in enumerate(p.mobilenet_blocks()):
            y = InvertedResidual(c_out, stride, t, self.plan, p.bn_eps, name=f"block{i + 1}")(y, train)
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
    common = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
    for w in sorted(set(common) | {round(0.05 * j, 2) for j in range(1, 61)}, key=lambda w: (w not in common, w)):
        cand = PRESETS["mobilenetv2"].replace(width_mult=w)
        if make_divisible(32 * w) == stem and [c for _, c, _, _ in cand.mobilenet_blocks()] == project:
            return dict(encoder="mobilenetv2", width_mult=w)
    raise ValueError(f"MobileNetV2 checkpoint with stem {stem} and block widths {project} matches no width_mult")


FAMILY = register(EncoderFamily(
    name="mobilenetv2", module=MobileNetV2Encoder, taps=taps, feature_channels=feature_channels,
    torch_keymap=torch_keymap, detect_torch=detect_torch, default_preset="mobilenetv2",
    config_fields=("width_mult", "round_nearest"),
    description="torchvision MobileNetV2 (any width_mult)"))
