"""The DenseNet encoder family (torchvision layout; torchvision and keras.applications checkpoints).

``features = [x, conv0, norm0, relu0, pool0, denseblock1, transition1, ..., denseblock4, norm5]`` (13
entries): ``features[i]`` is the output of torchvision's ``features`` child i-1. In the quantized modes
``norm0`` is folded into ``conv0``, so entry 1 equals entry 2.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import keys
from .family import EncoderFamily, register
from .layers import BN_EPS, BatchNorm, QConv
from .plan import FLOAT_PLAN, Plan
from .presets import Preset
from .stem import conv_stem



class DenseLayer(nn.Module):
    growth_rate: int
    bn_size: int
    plan: Plan = FLOAT_PLAN
    bn_eps: float = BN_EPS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = nn.relu(BatchNorm(x.shape[-1], eps=self.bn_eps, name="norm1")(x, train))
        y = QConv(self.bn_size * self.growth_rate, 1, norm=True, plan=self.plan, weight_init="he_fan_in",
                  bn_eps=self.bn_eps, activation="relu", name="conv1")(y, train)   # conv1 + norm2 (folded) + relu2
        return QConv(self.growth_rate, 3, padding=1, plan=self.plan, weight_init="he_fan_in", name="conv2")(y)


class DenseBlock(nn.Module):
    num_layers: int
    growth_rate: int
    bn_size: int
    plan: Plan = FLOAT_PLAN
    bn_eps: float = BN_EPS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        feats = [x]
        for i in range(self.num_layers):
            layer = DenseLayer(self.growth_rate, self.bn_size, self.plan, self.bn_eps,
                               name=f"denselayer{i + 1}")
            feats.append(layer(jnp.concatenate(feats, axis=-1) if len(feats) > 1 else feats[0], train))
        return jnp.concatenate(feats, axis=-1)


class Transition(nn.Module):
    features: int
    plan: Plan = FLOAT_PLAN
    bn_eps: float = BN_EPS

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = nn.relu(BatchNorm(x.shape[-1], eps=self.bn_eps, name="norm")(x, train))
        y = QConv(self.features, 1, plan=self.plan, weight_init="he_fan_in", name="conv")(y)
        return nn.avg_pool(y, (2, 2), strides=(2, 2))


class DenseNetEncoder(nn.Module):
    """torchvision DenseNet ``features`` (no classifier); returns the 13-entry feature list."""

    preset: Preset
    plan: Plan = FLOAT_PLAN

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        p = self.preset
        feats = [x, *conv_stem(x, train, p, self.plan, "conv0", "he_fan_in")]   # conv0, norm0, relu0, pool0
        y = feats[-1]
        c = p.num_init_features
        for i, n in enumerate(p.block_config):
            y = DenseBlock(n, p.growth_rate, p.bn_size, self.plan, p.bn_eps,
                           name=f"denseblock{i + 1}")(y, train)
            c += n * p.growth_rate
            feats.append(y)
            if i != len(p.block_config) - 1:
                c //= 2
                y = Transition(c, self.plan, p.bn_eps, name=f"transition{i + 1}")(y, train)
                feats.append(y)
        feats.append(BatchNorm(c, eps=p.bn_eps, name="norm5")(y, train))   # norm5 (no ReLU: the classifier's)
        return feats


# ---- the family unit: feature names, channels, checkpoint key maps, detection ---------------------------------
def taps(p: Preset) -> list[str]:
    """Names of the feature list's entries (torchvision's ``features`` children, after the input)."""
    out = ["input", "conv0", "norm0", "relu0", "pool0"]
    for b in range(1, len(p.block_config) + 1):
        out.append(f"denseblock{b}")
        if b != len(p.block_config):
            out.append(f"transition{b}")
    return out + ["norm5"]


def feature_channels(p: Preset) -> list[int]:
    c = p.num_init_features
    chans = [3, c, c, c, c]                                # input, conv0, norm0, relu0, pool0
    for i, n in enumerate(p.block_config):
        c += n * p.growth_rate
        chans.append(c)                                    # denseblock
        if i != len(p.block_config) - 1:
            c //= 2
            chans.append(c)                                # transition
    return chans + [c]                                     # norm5


def _torch_name(part: str, block: int = 0, layer: int = 0) -> str:
    if part in ("conv0", "norm0", "norm5"):
        return f"features.{part}"
    if part in ("norm", "conv"):
        return f"features.transition{block}.{part}"
    return f"features.denseblock{block}.denselayer{layer}.{part}"


def _keras_name(part: str, block: int = 0, layer: int = 0) -> str:
    """keras.applications names: stage s = torchvision block s - 1; ``pool{s}`` = ``transition{s-1}``."""
    fixed = {"conv0": "conv1_conv", "norm0": "conv1_bn", "norm5": "bn"}
    if part in fixed:
        return fixed[part]
    if part in ("norm", "conv"):
        return f"pool{block + 1}_{'bn' if part == 'norm' else 'conv'}"
    suffix = {"norm1": "0_bn", "conv1": "1_conv", "norm2": "1_bn", "conv2": "2_conv"}[part]
    return f"conv{block + 1}_block{layer}_{suffix}"


def _keymap(p: Preset, name, naming: keys.Naming) -> keys.KeyMap:
    """A DenseNet's checkpoint names (``name(part, block, layer)``) -> Flax ``encoder/...`` paths."""
    km: keys.KeyMap = {}
    enc = ("encoder",)
    keys.add_conv(km, name("conv0"), (*enc, "conv0"), naming=naming)
    keys.add_bn(km, name("norm0"), (*enc, "conv0", "bn"), naming)
    for b, n in enumerate(p.block_config, start=1):
        for layer in range(1, n + 1):
            f = (*enc, f"denseblock{b}", f"denselayer{layer}")
            keys.add_bn(km, name("norm1", b, layer), (*f, "norm1"), naming)
            keys.add_conv(km, name("conv1", b, layer), (*f, "conv1"), naming=naming)
            keys.add_bn(km, name("norm2", b, layer), (*f, "conv1", "bn"), naming)
            keys.add_conv(km, name("conv2", b, layer), (*f, "conv2"), naming=naming)
        if b != len(p.block_config):
            keys.add_bn(km, name("norm", b), (*enc, f"transition{b}", "norm"), naming)
            keys.add_conv(km, name("conv", b), (*enc, f"transition{b}", "conv"), naming=naming)
    keys.add_bn(km, name("norm5"), (*enc, "norm5"), naming)
    return km


def torch_keymap(p: Preset) -> keys.KeyMap:
    """torchvision DenseNet ``features.*`` keys -> Flax ``encoder/...`` paths."""
    return _keymap(p, _torch_name, keys.TORCH)


def keras_keymap(p: Preset) -> keys.KeyMap:
    """keras.applications DenseNet weights (``conv1_conv/kernel``, ``conv2_block1_0_bn/gamma``, ...; Keras 2's
    ``conv1/conv`` normalised to ``conv1_conv``) -> Flax ``encoder/...`` paths (kernels already HWIO)."""
    return _keymap(p, _keras_name, keys.KERAS)


def keras_taps(p: Preset) -> dict[str, str]:
    """Tap name -> the keras.applications layer whose output it is (``conv1/relu`` is Keras 2's spelling)."""
    out = {"conv0": "conv1_conv", "norm0": "conv1_bn", "relu0": "conv1_relu", "pool0": "pool1", "norm5": "bn"}
    for b, n in enumerate(p.block_config, start=1):
        out[f"denseblock{b}"] = f"conv{b + 1}_block{n}_concat"
        out[f"transition{b}"] = f"pool{b + 1}_pool"
    return out


def detect_torch(sd: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    if "features.denseblock1.denselayer1.conv1.weight" not in sd:
        return None
    growth = np.shape(sd["features.denseblock1.denselayer1.conv2.weight"])[0]
    return dict(encoder="densenet", growth_rate=int(growth),
                block_config=tuple(keys.count_groups(sd, "features.denseblock{}.denselayer{}.conv1.weight")),
                num_init_features=int(np.shape(sd["features.conv0.weight"])[0]),
                bn_size=int(np.shape(sd["features.denseblock1.denselayer1.conv1.weight"])[0]) // int(growth))


def detect_keras(w: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    if "conv1_conv/kernel" not in w or "conv2_block1_1_conv/kernel" not in w:
        return None
    if "conv2_block1_3_conv/kernel" in w:          # a keras.applications ResNet: same stage / block names
        return None
    blocks = keys.count_groups(w, "conv{}_block{}_1_conv/kernel", first=2)        # Keras stage 1 is the stem
    growth = int(np.shape(w["conv2_block1_2_conv/kernel"])[-1])
    return dict(encoder="densenet", growth_rate=growth, block_config=tuple(blocks),
                num_init_features=int(np.shape(w["conv1_conv/kernel"])[-1]),
                bn_size=int(np.shape(w["conv2_block1_1_conv/kernel"])[-1]) // growth)


FAMILY = register(EncoderFamily(
    name="densenet", module=DenseNetEncoder, taps=taps, feature_channels=feature_channels,
    torch_keymap=torch_keymap, detect_torch=detect_torch, default_preset="densenet169",
    config_fields=("growth_rate", "block_config", "num_init_features", "bn_size"),
    keras_keymap=keras_keymap, keras_taps=keras_taps, detect_keras=detect_keras, keras_preset="densedepth_nyu",
    description="torchvision / keras.applications DenseNet (121/161/169/201 or any block configuration)"))
