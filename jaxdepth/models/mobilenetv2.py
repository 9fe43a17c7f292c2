"""MobileNetV2 encoder (torchvision layout, any width_mult) returning DenseDepth's feature list.

``features = [x, stem, block1, ..., block17, head]`` (20 entries): torchvision ``features.0`` is ``stem``,
``features.i`` (1 <= i <= 17) is ``block{i}`` (``expand`` / ``depthwise`` / ``project`` convolutions, each
with its BatchNorm), ``features.18`` is ``head``. ReLU6 after stem, expand, depthwise and head (the QConv's
``activation``: fused into the layer in integer requantization).
"""
from __future__ import annotations

import flax.linen as nn
import jax

from .layers import QConv
from .plan import FLOAT_PLAN, Plan
from .presets import Preset



class InvertedResidual(nn.Module):
    out_channels: int
    stride: int
    expand_ratio: int
    plan: Plan = FLOAT_PLAN

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        c_in = x.shape[-1]
        hidden = int(round(c_in * self.expand_ratio))
        y = x
        if self.expand_ratio != 1:
            y = QConv(hidden, 1, norm=True, plan=self.plan, weight_init="he_fan_out", activation="relu6",
                      name="expand")(y, train)
        y = QConv(hidden, 3, stride=self.stride, padding=1, groups=hidden, norm=True, plan=self.plan,
                  weight_init="he_fan_out", activation="relu6", name="depthwise")(y, train)
        y = QConv(self.out_channels, 1, norm=True, plan=self.plan, weight_init="he_fan_out", name="project")(y, train)
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
                  weight_init="he_fan_out", activation="relu6", name="stem")(x, train)
        feats.append(y)
        for i, (_, c_out, stride, t) in enumerate(p.mobilenet_blocks()):
            y = InvertedResidual(c_out, stride, t, self.plan, name=f"block{i + 1}")(y, train)
            feats.append(y)
        y = QConv(p.mobilenet_last_channels(), 1, norm=True, plan=self.plan, weight_init="he_fan_out",
                  activation="relu6", name="head")(y, train)
        feats.append(y)
        return feats
