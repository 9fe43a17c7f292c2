"""Encoder families: one registered unit per encoder (as timm registers a model with its checkpoint filter).

A family (``densenet``, ``mobilenetv2``, ``resnet``; one module each under `jaxdepth.models`) brings
together everything the library needs to know about an encoder:

* ``module``: the Flax encoder, ``module(preset, plan, name=...)``, returning the feature list;
* ``taps(preset)``: the NAME of every entry of that list (``"relu0"``, ``"transition2"``, ``"block17"``...):
  presets name their bottleneck and skips by these, not by list index;
* ``feature_channels(preset)``: the channels of every entry;
* ``torch_keymap(preset)``: torchvision state-dict keys (no prefix) -> Flax paths;
* ``detect_torch(keys_and_shapes)``: the family's configuration read from torchvision keys, or None;
  ``torch_head``: the prefix of the classifier keys a converted encoder leaves aside (``classifier``, ``fc``);
* optionally the Keras counterparts (``keras_keymap``, ``keras_taps``: tap name -> Keras layer,
  ``detect_keras``) for ``.h5`` files;
* ``default_preset`` / ``keras_preset``: the preset a checkpoint of this family starts from when no
  registered preset matches it exactly.

Presets (`jaxdepth.models.presets`) are data naming a family and a decoder configuration.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .keys import KeyMap
    from .presets import Preset

#: the modules that register the built-in families (imported on first lookup)
BUILTIN = ("densenet", "mobilenetv2", "resnet")


@dataclasses.dataclass(frozen=True)
class EncoderFamily:
    name: str
    module: Any                                                   # Flax module class
    taps: Callable[["Preset"], list[str]]
    feature_channels: Callable[["Preset"], list[int]]
    torch_keymap: Callable[["Preset"], "KeyMap"]
    detect_torch: Callable[[Mapping[str, Any]], Optional[dict[str, Any]]]
    default_preset: str
    config_fields: tuple[str, ...]                                # Preset fields that configure the encoder
    keras_keymap: Optional[Callable[["Preset"], "KeyMap"]] = None
    keras_taps: Optional[Callable[["Preset"], dict[str, str]]] = None
    detect_keras: Optional[Callable[[Mapping[str, Any]], Optional[dict[str, Any]]]] = None
    keras_preset: Optional[str] = None
    torch_head: str = "classifier"                                # torchvision classifier keys the encoder drops
    description: str = ""


FAMILIES: dict[str, EncoderFamily] = {}


def register(family: EncoderFamily) -> EncoderFamily:
    """Add a family (called at import time by the family's module)."""
    FAMILIES[family.name] = family
    return family


def _load_builtin() -> None:
    for mod in BUILTIN:
        importlib.import_module(f"{__package__}.{mod}")


def families() -> dict[str, EncoderFamily]:
    _load_builtin()
    return FAMILIES


def get_family(name: str) -> EncoderFamily:
    fams = families()
    if name not in fams:
        raise ValueError(f"unknown encoder family {name!r}; known: {sorted(fams)}")
    return fams[name]
