"""The ImageNet stem DenseNet and ResNet share: 7x7 stride-2 convolution + BatchNorm, ReLU, 3x3 stride-2 max
pool (padding 1)."""
from __future__ import annotations

import flax.linen as nn
import jax

from .layers import QConv
from .plan import Plan
from .presets import Preset


def conv_stem(x: jax.Array, train: bool, p: Preset, plan: Plan, name: str, weight_init: str,
              use_bias: bool = False) -> list[jax.Array]:
    """[conv, norm, relu, pool] outputs; call inside the encoder's ``nn.compact`` so the convolution is its
    child ``name`` (with ``bn``). In the quantized modes the norm is folded, so conv's entry equals norm's.
    (Keras pads the max pool with zeros, PyTorch with -inf: the same after the ReLU.)"""
    y, pre = QConv(p.num_init_features, 7, stride=2, padding=3, norm=True, plan=plan, weight_init=weight_init,
                   bn_eps=p.bn_eps, use_bias=use_bias, name=name)(x, train, return_pre_norm=True)
    feats = [y if pre is None else pre, y]
    y = nn.relu(y)
    feats.append(y)
    feats.append(nn.max_pool(y, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))))
    return feats
