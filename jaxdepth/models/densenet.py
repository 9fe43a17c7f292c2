"""DenseNet encoders (torchvision layout) returning DenseDepth's feature list.

``features = [x, conv0, norm0, relu0, pool0, denseblock1, transition1, ..., denseblock4, norm5]`` (13
entries): ``features[i]`` is the output of torchvision's ``features`` child i-1. In the quantized modes
``norm0`` is folded into ``conv0``, so entry 1 equals entry 2.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import BatchNorm, QConv
from .plan import FLOAT_PLAN, Plan
from .presets import Preset



class DenseLayer(nn.Module):
    growth_rate: int
    bn_size: int
    plan: Plan = FLOAT_PLAN

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = nn.relu(BatchNorm(x.shape[-1], name="norm1")(x, train))
        y = QConv(self.bn_size * self.growth_rate, 1, norm=True, plan=self.plan, weight_init="he_fan_in",
                  activation="relu", name="conv1")(y, train)   # conv1 + norm2 (folded when quantized) + relu2
        return QConv(self.growth_rate, 3, padding=1, plan=self.plan, weight_init="he_fan_in", name="conv2")(y)


class DenseBlock(nn.Module):
    num_layers: int
    growth_rate: int
    bn_size: int
    plan: Plan = FLOAT_PLAN

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        feats = [x]
        for i in range(self.num_layers):
            layer = DenseLayer(self.growth_rate, self.bn_size, self.plan, name=f"denselayer{i + 1}")
            feats.append(layer(jnp.concatenate(feats, axis=-1) if len(feats) > 1 else feats[0], train))
        return jnp.concatenate(feats, axis=-1)


class Transition(nn.Module):
    features: int
    plan: Plan = FLOAT_PLAN

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = nn.relu(BatchNorm(x.shape[-1], name="norm")(x, train))
        y = QConv(self.features, 1, plan=self.plan, weight_init="he_fan_in", name="conv")(y)
        return nn.avg_pool(y, (2, 2), strides=(2, 2))


class DenseNetEncoder(nn.Module):
    """torchvision DenseNet ``features`` (no classifier); returns the 13-entry feature list."""

    preset: Preset
    plan: Plan = FLOAT_PLAN

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        p = self.preset
        feats = [x]
        y, pre = QConv(p.num_init_features, 7, stride=2, padding=3, norm=True, plan=self.plan,
                       weight_init="he_fan_in", name="conv0")(x, train, return_pre_norm=True)
        feats += [y if pre is None else pre, y]               # conv0, norm0
        y = nn.relu(y)
        feats.append(y)                                       # relu0
        y = nn.max_pool(y, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        feats.append(y)                                       # pool0
        c = p.num_init_features
        for i, n in enumerate(p.block_config):
            y = DenseBlock(n, p.growth_rate, p.bn_size, self.plan, name=f"denseblock{i + 1}")(y, train)
            c += n * p.growth_rate
            feats.append(y)
            if i != len(p.block_config) - 1:
                c //= 2
                y = Transition(c, self.plan, name=f"transition{i + 1}")(y, train)
                feats.append(y)
        feats.append(BatchNorm(c, name="norm5")(y, train))     # norm5 (no ReLU: that is the classifier's)
        return feats
