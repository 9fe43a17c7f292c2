"""DenseDepth decoder: 1x1 ``conv2`` on the bottleneck, up blocks (bilinear x align_corners, concat skip,
convA, convB), ``conv3`` to one channel. Widths and quirks come from the preset."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import QConv
from .ops import resize_bilinear_align_corners
from .plan import FLOAT_PLAN, Plan
from .presets import Preset


class UpSample(nn.Module):
    features: int
    leakyrelu_a: bool = True
    plan: Plan = FLOAT_PLAN

    @nn.compact
    def __call__(self, x: jax.Array, skip: jax.Array) -> jax.Array:
        up = resize_bilinear_align_corners(x, skip.shape[1:3])
        y = QConv(self.features, 3, padding=1, use_bias=True, plan=self.plan,
                  activation="leaky_relu" if self.leakyrelu_a else "none", name="convA")(
            jnp.concatenate([up, skip], axis=-1))
        return QConv(self.features, 3, padding=1, use_bias=True, plan=self.plan, activation="leaky_relu",
                     name="convB")(y)


class Decoder(nn.Module):
    preset: Preset
    plan: Plan = FLOAT_PLAN

    @nn.compact
    def __call__(self, features: Sequence[jax.Array]) -> jax.Array:
        p = self.preset
        width = p.decoder_features()
        x = features[p.tap_index(p.bottleneck)]
        if p.bottleneck_relu:
            x = nn.relu(x)
        x = QConv(width, 1, padding=p.conv2_padding, use_bias=True, plan=self.plan, name="conv2")(x)
        for blk in p.up_blocks:
            skip = features[p.tap_index(blk.skip)]
            x = UpSample(width // blk.divisor, p.leakyrelu_a, self.plan, name=blk.name)(x, skip)
        return QConv(1, 3, padding=1, use_bias=True, plan=self.plan, name="conv3")(x)
