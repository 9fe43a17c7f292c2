"""Explicit PyTorch -> Flax key maps, one per preset family (timm style), generated from the preset registry.

Each entry maps one PyTorch state-dict key to ``Target(collection, flax_path, transform)``:

* ``conv``: Conv2d weight (O, I/groups, KH, KW) -> HWIO kernel (KH, KW, I/groups, O)
* ``copy``: biases and BatchNorm tensors (``weight`` -> ``scale``, ``running_mean`` / ``running_var`` ->
  ``batch_stats`` ``mean`` / ``var``)

Flax names (see `jaxdepth.models`): a BatchNorm that follows a convolution lives inside that convolution's
module as ``bn`` (it is folded into it in the quantized modes); the others keep their torchvision names.
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

import numpy as np

from ..models.presets import Preset

FULL_PREFIX = "encoder.original_model."
#: PyTorch keys that exist in the checkpoints but have no Flax counterpart (classifier head, BN counters)
IGNORED = (re.compile(r"(^|\.)num_batches_tracked$"), re.compile(r"^(encoder\.original_model\.)?classifier\."))
#: torchvision's rename of old DenseNet checkpoints (``denselayer1.norm.1.weight`` -> ``denselayer1.norm1.weight``)
LEGACY_DENSENET = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class Target(NamedTuple):
    collection: str               # "params" | "batch_stats"
    path: tuple[str, ...]
    transform: str                # "conv" | "copy"


KeyMap = dict[str, Target]


def transform(value: np.ndarray, kind: str) -> np.ndarray:
    value = np.asarray(value, np.float32)
    if kind == "conv":
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    if kind == "copy":
        return value
    raise ValueError(f"unknown transform {kind!r}")


def target_shape(torch_shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    if kind == "conv":
        o, i, kh, kw = torch_shape
        return (kh, kw, i, o)
    return tuple(torch_shape)


class Naming(NamedTuple):
    """How a checkpoint format spells a layer's tensors: ``<layer><suffix>``."""

    kernel: str
    kernel_transform: str
    bias: str
    bn: tuple[str, str, str, str]      # scale, shift, running mean, running variance


TORCH = Naming(".weight", "conv", ".bias", (".weight", ".bias", ".running_mean", ".running_var"))
KERAS = Naming("/kernel", "copy", "/bias", ("/gamma", "/beta", "/moving_mean", "/moving_variance"))


def _conv(km: KeyMap, name: str, flax_path: tuple[str, ...], bias: bool = False, naming: Naming = TORCH) -> None:
    km[name + naming.kernel] = Target("params", (*flax_path, "kernel"), naming.kernel_transform)
    if bias:
        km[name + naming.bias] = Target("params", (*flax_path, "bias"), "copy")


def _bn(km: KeyMap, name: str, flax_path: tuple[str, ...], naming: Naming = TORCH) -> None:
    for suffix, (collection, leaf) in zip(naming.bn, (("params", "scale"), ("params", "bias"),
                                                       ("batch_stats", "mean"), ("batch_stats", "var"))):
        km[name + suffix] = Target(collection, (*flax_path, leaf), "copy")


def _torch_densenet_name(part: str, block: int = 0, layer: int = 0) -> str:
    if part in ("conv0", "norm0", "norm5"):
        return f"features.{part}"
    if part in ("norm", "conv"):
        return f"features.transition{block}.{part}"
    return f"features.denseblock{block}.denselayer{layer}.{part}"


def _keras_densenet_name(part: str, block: int = 0, layer: int = 0) -> str:
    """keras.applications names: stage s = torchvision block s - 1; ``pool{s}`` = ``transition{s-1}``."""
    fixed = {"conv0": "conv1_conv", "norm0": "conv1_bn", "norm5": "bn"}
    if part in fixed:
        return fixed[part]
    if part in ("norm", "conv"):
        return f"pool{block + 1}_{'bn' if part == 'norm' else 'conv'}"
    suffix = {"norm1": "0_bn", "conv1": "1_conv", "norm2": "1_bn", "conv2": "2_conv"}[part]
    return f"conv{block + 1}_block{layer}_{suffix}"


def _densenet_map(preset: Preset, name: Callable[..., str], naming: Naming) -> KeyMap:
    """A DenseNet's checkpoint names (``name(part, block, layer)``) -> Flax ``encoder/...`` paths."""
    km: KeyMap = {}
    enc = ("encoder",)
    _conv(km, name("conv0"), (*enc, "conv0"), naming=naming)
    _bn(km, name("norm0"), (*enc, "conv0", "bn"), naming)
    for b, n in enumerate(preset.block_config, start=1):
        for layer in range(1, n + 1):
            f = (*enc, f"denseblock{b}", f"denselayer{layer}")
            _bn(km, name("norm1", b, layer), (*f, "norm1"), naming)
            _conv(km, name("conv1", b, layer), (*f, "conv1"), naming=naming)
            _bn(km, name("norm2", b, layer), (*f, "conv1", "bn"), naming)
            _conv(km, name("conv2", b, layer), (*f, "conv2"), naming=naming)
        if b != len(preset.block_config):
            _bn(km, name("norm", b), (*enc, f"transition{b}", "norm"), naming)
            _conv(km, name("conv", b), (*enc, f"transition{b}", "conv"), naming=naming)
    _bn(km, name("norm5"), (*enc, "norm5"), naming)
    return km


def densenet_keymap(preset: Preset) -> KeyMap:
    """torchvision DenseNet ``features.*`` keys -> Flax ``encoder/...`` paths."""
    return _densenet_map(preset, _torch_densenet_name, TORCH)


def mobilenetv2_keymap(preset: Preset) -> KeyMap:
    """torchvision MobileNetV2 ``features.*`` keys -> Flax ``encoder/{stem,blockI,head}`` paths."""
    km: KeyMap = {}
    enc = ("encoder",)
    _conv(km, "features.0.0", (*enc, "stem"))
    _bn(km, "features.0.1", (*enc, "stem", "bn"))
    for i, (_, _, _, t) in enumerate(preset.mobilenet_blocks(), start=1):
        parts = (["depthwise"] if t == 1 else ["expand", "depthwise"])
        f = (*enc, f"block{i}")
        for j, part in enumerate(parts):            # Conv2dNormActivation: .0 conv, .1 bn
            _conv(km, f"features.{i}.conv.{j}.0", (*f, part))
            _bn(km, f"features.{i}.conv.{j}.1", (*f, part, "bn"))
        j = len(parts)                                # project conv, then its bn
        _conv(km, f"features.{i}.conv.{j}", (*f, "project"))
        _bn(km, f"features.{i}.conv.{j + 1}", (*f, "project", "bn"))
    last = len(preset.mobilenet_blocks()) + 1
    _conv(km, f"features.{last}.0", (*enc, "head"))
    _bn(km, f"features.{last}.1", (*enc, "head", "bn"))
    return km


def decoder_keymap(preset: Preset) -> KeyMap:
    km: KeyMap = {}
    _conv(km, "decoder.conv2", ("decoder", "conv2"), bias=True)
    for blk in preset.up_blocks:
        for conv in ("convA", "convB"):
            _conv(km, f"decoder.{blk.name}.{conv}", ("decoder", blk.name, conv), bias=True)
    _conv(km, "decoder.conv3", ("decoder", "conv3"), bias=True)
    return km


# ---- Keras (keras.applications names; kernels are already HWIO) ------------------------------------------------
def densenet_keras_keymap(preset: Preset) -> KeyMap:
    """keras.applications DenseNet weights (``conv1_conv/kernel``, ``conv2_block1_0_bn/gamma``, ...; Keras 2's
    ``conv1/conv`` normalised to ``conv1_conv``) -> Flax ``encoder/...`` paths (kernels already HWIO)."""
    return _densenet_map(preset, _keras_densenet_name, KERAS)


def densenet_keras_taps(preset: Preset) -> dict[int, str]:
    """Feature-list index -> the keras.applications DenseNet layer whose output it is."""
    taps = {0: "input", 1: "conv1_conv", 2: "conv1_bn", 3: "conv1_relu", 4: "pool1"}
    i = 5
    for b, n in enumerate(preset.block_config, start=1):
        taps[i] = f"conv{b + 1}_block{n}_concat"
        i += 1
        if b != len(preset.block_config):
            taps[i] = f"pool{b + 1}_pool"
            i += 1
    taps[i] = "bn"
    return taps


def decoder_keras_keymap(preset: Preset) -> KeyMap:
    """DenseDepth's Keras decoder (``conv2``, ``up1_convA``, ``up1_convB``, ..., ``conv3``)."""
    km: KeyMap = {}
    _conv(km, "conv2", ("decoder", "conv2"), True, KERAS)
    for blk in preset.up_blocks:
        for conv in ("convA", "convB"):
            _conv(km, f"{blk.name}_{conv}", ("decoder", blk.name, conv), True, KERAS)
    _conv(km, "conv3", ("decoder", "conv3"), True, KERAS)
    return km


KERAS_ENCODER_KEYMAPS: dict[str, Callable[[Preset], KeyMap]] = {"densenet": densenet_keras_keymap}


def keras_keymap(preset: Preset, *, full: bool = True) -> KeyMap:
    """The key map of a Keras DenseDepth ``.h5`` (``full``) or of the keras.applications encoder alone."""
    if preset.encoder not in KERAS_ENCODER_KEYMAPS:
        raise ValueError(f"no Keras key map for encoder kind {preset.encoder!r}")
    km = KERAS_ENCODER_KEYMAPS[preset.encoder](preset)
    if full:
        km.update(decoder_keras_keymap(preset))
    return km


ENCODER_KEYMAPS: dict[str, Callable[[Preset], KeyMap]] = {
    "densenet": densenet_keymap,
    "mobilenetv2": mobilenetv2_keymap,
}


def keymap(preset: Preset, *, full: bool = True) -> KeyMap:
    """The key map of a whole DenseDepth checkpoint (``full``) or of the torchvision encoder alone."""
    if preset.encoder not in ENCODER_KEYMAPS:
        raise ValueError(f"no key map for encoder kind {preset.encoder!r}")
    enc = ENCODER_KEYMAPS[preset.encoder](preset)
    if not full:
        return enc
    km = {FULL_PREFIX + k: v for k, v in enc.items()}
    km.update(decoder_keymap(preset))
    return km


def is_ignored(key: str) -> bool:
    return any(p.search(key) for p in IGNORED)


def rename_legacy(key: str) -> str:
    """Old DenseNet checkpoints' ``norm.1`` / ``conv.2`` style keys -> torchvision's current names."""
    m = LEGACY_DENSENET.match(key)
    return m.group(1) + m.group(2) if m else key
