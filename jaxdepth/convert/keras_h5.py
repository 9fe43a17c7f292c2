"""Read Keras HDF5 files (``.h5``) with h5py alone: no TensorFlow, no Keras.

Four layouts are read the same way (every one is "a list of layer names, each layer a group holding a list
of weight names"), which is how Keras itself loads them:

* Keras 2 whole-model save (the published DenseDepth ``nyu.h5`` / ``kitti.h5``): ``model_config`` (JSON)
  in the file's attributes, weights under ``model_weights``; layer names may contain ``/`` (``conv1/conv``,
  stored as nested groups), weight names carry a ``:0`` suffix (``conv1/conv/kernel:0``) and the name lists
  are byte strings;
* Keras 2 weights-only save (``model.save_weights("w.h5")``): the same, at the file's root, no config;
* Keras 3 legacy-h5 whole-model save (``model.save("m.h5")``): str names without suffix
  (``conv1_conv/kernel``) and an extra ``top_level_model_weights`` group;
* Keras 3 legacy-h5 weights-only save (the same at the root).

Layer names are normalised to Keras 3 spelling (``conv1/conv`` -> ``conv1_conv``; a DepthwiseConv2D's
``depthwise_kernel`` -> ``kernel``) and each weight is keyed
``"<layer>/<weight>"`` (``"conv1_conv/kernel"``, ``"conv1_bn/moving_variance"``). Large name lists that Keras
split into ``layer_names0``, ``layer_names1``, ... are joined. Keras 3's native ``.weights.h5`` format (an
object tree of ``layers/<auto name>/vars/<i>``) carries no layer names and is refused with a clear error.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np


class KerasFileError(ValueError):
    """An ``.h5`` file that cannot be read as a Keras model or weights file."""


@dataclasses.dataclass
class KerasWeights:
    """The arrays of a Keras ``.h5`` file and what the file says about the model."""

    weights: dict[str, np.ndarray]          # "<layer>/<weight>" -> array (Keras order: kernels HWIO)
    layer_names: list[str]                  # every layer, in the file's (topological) order, normalised
    config: Optional[dict]                  # the parsed ``model_config`` (None for weights-only saves)
    keras_version: str                      # as recorded ("2.2.4", "3.15.1"; "" when absent)
    saved: str                              # "model" (whole-model save) | "weights" (weights-only save)

    @property
    def keras_major(self) -> int:
        try:
            return int(self.keras_version.split(".")[0])
        except ValueError:
            return 0

    def weightless_layers(self) -> list[str]:
        """Layers with no weights (input, padding, activations, pooling, concatenation, up-sampling)."""
        with_weights = {k.rsplit("/", 1)[0] for k in self.weights}
        return [n for n in self.layer_names if n not in with_weights]


def _text(v: Any) -> str:
    return v.decode("utf8") if isinstance(v, (bytes, np.bytes_)) else str(v)


def _name_list(group: Any, name: str) -> list[str]:
    """A Keras name-list attribute, joining the chunks ``name0``, ``name1``, ... of long lists."""
    if name in group.attrs:
        return [_text(n) for n in np.atleast_1d(group.attrs[name])]
    out, i = [], 0
    while f"{name}{i}" in group.attrs:
        out += [_text(n) for n in np.atleast_1d(group.attrs[f"{name}{i}"])]
        i += 1
    return out


def normalize_layer_name(name: str) -> str:
    """Keras 2's ``conv1/conv`` -> Keras 3's ``conv1_conv`` (Keras 3 forbids ``/`` in layer names)."""
    return name.replace("/", "_")


def weight_basename(weight_name: str) -> str:
    """``conv1/conv/kernel:0`` or ``conv1_conv/kernel`` -> ``kernel``; Keras 2's DepthwiseConv2D
    ``depthwise_kernel:0`` -> ``kernel`` (Keras 3's name for it)."""
    base = weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
    return "kernel" if base == "depthwise_kernel" else base


def is_hdf5(path: Union[str, Path]) -> bool:
    """True when the file starts like an HDF5 file (also a truncated one)."""
    with open(path, "rb") as f:
        head = f.read(8)
    return head == b"\x89HDF\r\n\x1a\n"


def read_keras_h5(path: Union[str, Path]) -> KerasWeights:
    """Every weight of a Keras ``.h5`` file (see the module docstring for the layouts read)."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise KerasFileError(f"{path}: cannot open as HDF5 ({e}); the file is truncated or not a Keras .h5 "
                             f"file") from None
    try:
        with f:
            return _read(f, path)
    except OSError as e:   # h5py raises OSError for data cut off in a truncated file
        raise KerasFileError(f"{path}: unreadable HDF5 data ({e}); the file is probably truncated") from None


def _read(f: Any, path: Path) -> KerasWeights:
    config = None
    if "model_config" in f.attrs:
        try:
            config = json.loads(_text(f.attrs["model_config"]))
        except json.JSONDecodeError as e:
            raise KerasFileError(f"{path}: model_config is not valid JSON ({e})") from None
    if "model_weights" in f:
        root, saved = f["model_weights"], "model"
    elif "layer_names" in f.attrs or "layer_names0" in f.attrs:
        root, saved = f, "weights"
    elif "layers" in f and "vars" in f:
        raise KerasFileError(f"{path}: a Keras 3 native weights file (.weights.h5) has no layer names; save "
                             f"the model with model.save('model.h5') (legacy HDF5) and convert that")
    else:
        raise KerasFileError(f"{path}: not a Keras HDF5 model or weights file (no 'model_weights' group and no "
                             f"'layer_names' attribute); top-level entries: {sorted(f.keys())}")
    layer_names = _name_list(root, "layer_names")
    version = _text(root.attrs.get("keras_version", f.attrs.get("keras_version", "")))
    weights: dict[str, np.ndarray] = {}
    for name in layer_names:
        if name not in root:
            raise KerasFileError(f"{path}: layer {name!r} is listed in layer_names but has no group")
        group = root[name]
        for wname in _name_list(group, "weight_names"):
            if wname not in group:
                raise KerasFileError(f"{path}: weight {wname!r} of layer {name!r} is listed but missing")
            key = f"{normalize_layer_name(name)}/{weight_basename(wname)}"
            if key in weights:
                raise KerasFileError(f"{path}: two weights named {key!r}")
            weights[key] = np.asarray(group[wname], dtype=np.float32)
    if "top_level_model_weights" in root and _name_list(root["top_level_model_weights"], "weight_names"):
        raise KerasFileError(f"{path}: the model has top-level weights outside its layers, which DenseDepth "
                             f"models do not have")
    return KerasWeights(weights, [normalize_layer_name(n) for n in layer_names], config, version, saved)


# ---- the model graph in model_config ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class KerasLayer:
    name: str                      # normalised
    class_name: str
    config: dict
    inbound: tuple[str, ...]       # normalised names of the layers feeding it (first call)


def _keras3_history(obj: Any, out: list[str]) -> None:
    """Keras 3 writes inputs as ``{"class_name": "__keras_tensor__", "config": {"keras_history": [name, i, j]}}``
    nested anywhere in the call's args / kwargs."""
    if isinstance(obj, dict):
        hist = obj.get("config", {}).get("keras_history") if obj.get("class_name") == "__keras_tensor__" else None
        if hist is not None:
            out.append(str(hist[0]))
            return
        for v in obj.values():
            _keras3_history(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _keras3_history(v, out)


def _inbound(layer: dict) -> tuple[str, ...]:
    nodes = layer.get("inbound_nodes") or []
    if not nodes:
        return ()
    node = nodes[0]
    names: list[str] = []
    if isinstance(node, dict):            # Keras 3: {"args": [...], "kwargs": {...}}
        _keras3_history(node, names)
    else:                                 # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
        for entry in node:
            if isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], str):
                names.append(entry[0])
    return tuple(normalize_layer_name(n) for n in names)


def model_graph(config: dict) -> dict[str, KerasLayer]:
    """The layers of a functional ``model_config`` (Keras 2 or 3 spelling), keyed by normalised name."""
    cfg = config.get("config", {})
    layers = cfg.get("layers") if isinstance(cfg, dict) else None
    if not isinstance(layers, list):
        raise KerasFileError(f"model_config describes a {config.get('class_name')!r} without a layer list; "
                             f"expected a functional Model")
    out = {}
    for layer in layers:
        name = normalize_layer_name(str(layer.get("name") or layer.get("config", {}).get("name")))
        out[name] = KerasLayer(name, str(layer.get("class_name")), dict(layer.get("config") or {}),
                               _inbound(layer))
    return out


def consumers(graph: dict[str, KerasLayer], name: str) -> list[KerasLayer]:
    """The layers that take ``name``'s output as an input."""
    return [layer for layer in graph.values() if name in layer.inbound]
