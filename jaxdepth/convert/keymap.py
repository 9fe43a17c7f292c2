"""Explicit checkpoint -> Flax key maps: the encoder's from its family unit (`jaxdepth.models.family`), the
DenseDepth decoder's here (PyTorch ``decoder.up1.convA.weight``, Keras ``up1_convA/kernel``).

Each entry maps one checkpoint tensor name to ``Target(collection, flax_path, transform)`` (see
`jaxdepth.models.keys`). Full PyTorch DenseDepth checkpoints prefix the torchvision encoder keys with
``encoder.original_model.``; Keras files name layers, not modules, so they need no prefix.
"""
from __future__ import annotations

import re

from ..models.keys import KERAS, TORCH, KeyMap, Naming, Target, add_bn, add_conv, target_shape, transform
from ..models.presets import Preset

__all__ = ["FULL_PREFIX", "IGNORED", "KERAS", "KeyMap", "LEGACY_DENSENET", "Naming", "TORCH", "Target",
           "add_bn", "add_conv", "decoder_keymap", "is_ignored", "keras_keymap", "keymap", "rename_legacy",
           "target_shape", "transform"]

FULL_PREFIX = "encoder.original_model."
#: PyTorch keys that exist in the checkpoints but have no Flax counterpart: BN counters (and each family's
#: classifier head, `EncoderFamily.torch_head`)
IGNORED = (re.compile(r"(^|\.)num_batches_tracked$"),)
#: torchvision's rename of old DenseNet checkpoints (``denselayer1.norm.1.weight`` -> ``denselayer1.norm1.weight``)
LEGACY_DENSENET = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def decoder_keymap(preset: Preset, naming: Naming = TORCH) -> KeyMap:
    """DenseDepth's decoder: PyTorch ``decoder.conv2``, ``decoder.up1.convA`` ...; Keras ``conv2``, ``up1_convA``."""
    km: KeyMap = {}
    name = (lambda *parts: "decoder." + ".".join(parts)) if naming is TORCH else (lambda *parts: "_".join(parts))
    add_conv(km, name("conv2"), ("decoder", "conv2"), True, naming)
    for blk in preset.up_blocks:
        for conv in ("convA", "convB"):
            add_conv(km, name(blk.name, conv), ("decoder", blk.name, conv), True, naming)
    add_conv(km, name("conv3"), ("decoder", "conv3"), True, naming)
    return km


def keymap(preset: Preset, *, full: bool = True) -> KeyMap:
    """The key map of a whole PyTorch DenseDepth checkpoint (``full``) or of the torchvision encoder alone."""
    enc = preset.family_unit().torch_keymap(preset)
    if not full:
        return enc
    km = {FULL_PREFIX + k: v for k, v in enc.items()}
    km.update(decoder_keymap(preset))
    return km


def keras_keymap(preset: Preset, *, full: bool = True) -> KeyMap:
    """The key map of a Keras DenseDepth ``.h5`` (``full``) or of the keras.applications encoder alone."""
    family = preset.family_unit()
    if family.keras_keymap is None:
        raise ValueError(f"the {family.name} encoder family has no Keras key map")
    km = family.keras_keymap(preset)
    if full:
        km.update(decoder_keymap(preset, KERAS))
    return km


def is_ignored(key: str) -> bool:
    from ..models.family import families

    if key.startswith(FULL_PREFIX):
        key = key[len(FULL_PREFIX):]
    return any(p.search(key) for p in IGNORED) or any(key.startswith(f.torch_head + ".")
                                                       for f in families().values())


def rename_legacy(key: str) -> str:
    """Old DenseNet checkpoints' ``norm.1`` / ``conv.2`` style keys -> torchvision's current names."""
    m = LEGACY_DENSENET.match(key)
    return m.group(1) + m.group(2) if m else key
