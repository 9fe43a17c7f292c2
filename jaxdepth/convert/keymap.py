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


def _conv(km: KeyMap, torch_name: str, flax_path: tuple[str, ...], bias: bool = False) -> None:
    km[f"{torch_name}.weight"] = Target("params", (*flax_path, "kernel"), "conv")
    if bias:
        km[f"{torch_name}.bias"] = Target("params", (*flax_path, "bias"), "copy")


def _bn(km: KeyMap, torch_name: str, flax_path: tuple[str, ...]) -> None:
    km[f"{torch_name}.weight"] = Target("params", (*flax_path, "scale"), "copy")
    km[f"{torch_name}.bias"] = Target("params", (*flax_path, "bias"), "copy")
    km[f"{torch_name}.running_mean"] = Target("batch_stats", (*flax_path, "mean"), "copy")
    km[f"{torch_name}.running_var"] = Target("batch_stats", (*flax_path, "var"), "copy")


def densenet_keymap(preset: Preset) -> KeyMap:
    """torchvision DenseNet ``features.*`` keys -> Flax ``encoder/...`` paths."""
    km: KeyMap = {}
    enc = ("encoder",)
    _conv(km, "features.conv0", (*enc, "conv0"))
    _bn(km, "features.norm0", (*enc, "conv0", "bn"))
    for b, n in enumerate(preset.block_config, start=1):
        for layer in range(1, n + 1):
            t, f = f"features.denseblock{b}.denselayer{layer}", (*enc, f"denseblock{b}", f"denselayer{layer}")
            _bn(km, f"{t}.norm1", (*f, "norm1"))
            _conv(km, f"{t}.conv1", (*f, "conv1"))
            _bn(km, f"{t}.norm2", (*f, "conv1", "bn"))
            _conv(km, f"{t}.conv2", (*f, "conv2"))
        if b != len(preset.block_config):
            t, f = f"features.transition{b}", (*enc, f"transition{b}")
            _bn(km, f"{t}.norm", (*f, "norm"))
            _conv(km, f"{t}.conv", (*f, "conv"))
    _bn(km, "features.norm5", (*enc, "norm5"))
    return km


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
