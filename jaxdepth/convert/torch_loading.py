"""Read PyTorch DenseDepth / torchvision checkpoints and convert them to Flax variables.

Accepted inputs:

* a whole pickled ``nn.Module`` (``torch.save(model)``; classes that cannot be imported are replaced by
  stand-ins, which is enough to read their tensors), or a state dict (also wrapped as ``{"state_dict": ...}``,
  ``{"model": ...}`` or ``{"model_state_dict": ...}``);
* a full DenseDepth checkpoint (``encoder.original_model.features.*`` + ``decoder.*``) or the torchvision
  encoder alone (``features.*`` [+ ``classifier.*``]; the decoder is then freshly initialised);
* with or without ``nn.DataParallel``'s ``module.`` prefix; legacy DenseNet key names (``norm.1``).

The preset is detected from the keys and shapes (encoder family and configuration, decoder width) and can
be overridden; every missing, unexpected or mis-shaped key is reported in one clear error.
torch is imported lazily, only by `load_state_dict`.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from ..models.family import families, get_family
from ..models.presets import PRESETS, Preset, get_preset
from . import keymap as km
from .core import ConversionError, ConversionReport, assemble
from .core import listing as _listing


# ---- reading ------------------------------------------------------------------------------------------------
def _stub_pickle_module():
    """A pickle module whose Unpickler replaces classes it cannot import by ``nn.Module`` stand-ins."""
    import torch

    stubs: dict[tuple[str, str], type] = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            try:
                return super().find_class(module, name)
            except (ImportError, AttributeError):
                if (module, name) not in stubs:
                    stubs[(module, name)] = type(name, (torch.nn.Module,), {"__module__": module})
                return stubs[(module, name)]

    class _Module:
        pass

    mod = _Module()
    mod.Unpickler = Unpickler
    mod.load = lambda f, **kw: Unpickler(f, **kw).load()
    mod.__name__ = "jaxdepth_stub_pickle"
    return mod


def _unwrap(obj: Any) -> dict:
    import torch

    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and (isinstance(obj[key], (Mapping, torch.nn.Module))):
                return _unwrap(obj[key])
        return dict(obj)
    raise ConversionError(f"cannot read a state dict from a {type(obj).__name__}; expected an nn.Module or a "
                          f"dict of tensors")


def _is_pickle(path: Path) -> bool:
    """True when ``path`` holds a pickle (PyTorch's zip format with a ``data.pkl``, or a legacy pickle stream),
    checked by parsing the opcodes only: nothing in the file is executed."""
    import pickletools
    import zipfile
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("data.pkl") for n in z.namelist())
    try:
        with open(path, "rb") as f:
            for _ in pickletools.genops(f):
                pass
        return True
    except Exception:  # noqa: BLE001 - any parse failure means: not a pickle
        return False


def load_state_dict(path: Union[str, Path], *, trust_pickle: bool = False) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch checkpoint file as float32 NumPy arrays (keys as stored).

    Files are read with ``torch.load(weights_only=True)``, which runs no code from the file. A file that needs
    full unpickling (a whole pickled model) is read only with ``trust_pickle=True``: unpickling executes code
    the file names, so only do it for files from a source you trust. A file that is no PyTorch checkpoint
    at all raises `ConversionError`.
    """
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError("converting PyTorch checkpoints needs torch: pip install 'jaxdepth[torch]'") from e
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.is_dir():
        raise ConversionError(f"{path} is a folder, not a PyTorch checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for unreadable files
        if not _is_pickle(path):
            raise ConversionError(f"{path}: not a PyTorch checkpoint (neither torch.save's zip archive nor a "
                                  f"pickle; torch.load: {type(e).__name__})") from None
        if not trust_pickle:
            raise ConversionError(
                f"{path}: holds pickled Python objects (e.g. a whole nn.Module), not just tensors; reading it "
                "means unpickling, which can run code from the file. If you trust its source, pass "
                "--trust-pickle (trust_pickle=True); or save model.state_dict() instead") from None
        try:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=False)
            except (ImportError, AttributeError):
                obj = torch.load(path, map_location="cpu", weights_only=False,
                                 pickle_module=_stub_pickle_module())
        except Exception as e2:  # noqa: BLE001
            raise ConversionError(f"{path}: cannot unpickle the checkpoint ({type(e2).__name__}: {e2})") from None
    sd = _unwrap(obj)
    out = {}
    for k, v in sd.items():
        if not isinstance(k, str):
            raise ConversionError(f"state dict key {k!r} is not a string")
        if isinstance(v, torch.Tensor):
            out[k] = v.detach().cpu().float().numpy() if v.is_floating_point() else v.detach().cpu().numpy()
        else:
            out[k] = np.asarray(v)
    return out


def normalize_keys(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Strip ``module.`` (DataParallel) and rename legacy DenseNet keys."""
    out = {}
    for k, v in sd.items():
        if k.startswith("module."):
            k = k[len("module."):]
        out[km.rename_legacy(k)] = v
    return out


# ---- detection -----------------------------------------------------------------------------------------------
def layout_of(sd: Mapping[str, Any]) -> str:
    """"full" (DenseDepth: ``encoder.original_model.*`` + ``decoder.*``) or "encoder" (torchvision classifier
    alone)."""
    return "full" if any(k.startswith(km.FULL_PREFIX) for k in sd) else "encoder"


def _encoder_config(enc: Mapping[str, Any]) -> dict[str, Any]:
    """Encoder family and hyper-parameters from torchvision-named keys (without prefix): the first family
    whose detection rule recognises them."""
    for family in families().values():
        try:
            cfg = family.detect_torch(enc)
        except ValueError as e:   # the family recognised its keys but not their configuration
            raise ConversionError(str(e)) from None
        if cfg is not None:
            return cfg
    raise ConversionError(f"not a DenseDepth or torchvision encoder checkpoint: no key starts with "
                          f"'{km.FULL_PREFIX}' and no registered encoder family ({', '.join(families())}) "
                          f"recognises them\n" + _listing("encoder keys found", sorted(enc)))


def _encoder_matches(preset: Preset, cfg: Mapping[str, Any]) -> bool:
    """Same encoder configuration, and PyTorch's BatchNorm epsilon (the Keras presets differ only there)."""
    return preset.bn_eps == 1e-5 and all(getattr(preset, k) == v for k, v in cfg.items())


def detect_preset(sd: Mapping[str, Any]) -> tuple[Preset, str]:
    """(preset, layout) for normalised keys: the registered preset with this encoder (and decoder width),
    or the family's default preset with the detected settings substituted."""
    layout = layout_of(sd)
    prefix = km.FULL_PREFIX if layout == "full" else ""
    enc = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    cfg = _encoder_config(enc)
    same_encoder = [p for p in PRESETS.values() if _encoder_matches(p, cfg)]
    if layout == "encoder" or "decoder.conv2.weight" not in sd:
        if same_encoder:
            return same_encoder[0], layout
        family_default = get_family(cfg["encoder"]).default_preset
        return PRESETS[family_default].replace(name=f"{family_default}_custom", **cfg), layout
    width, c_in = np.shape(sd["decoder.conv2.weight"])[:2]
    for p in same_encoder:
        if p.decoder_features() == width and p.bottleneck_channels() == c_in:
            return p, layout
    base = same_encoder[0] if same_encoder else PRESETS[get_family(cfg["encoder"]).default_preset].replace(**cfg)
    return _with_decoder_width(base, int(width), int(c_in)), layout


def _with_decoder_width(preset: Preset, width: int, c_in: int) -> Preset:
    if preset.bottleneck_channels() != c_in:
        # densenet: bottleneck denseblock4 or norm5 have the same width; nothing else to try
        raise ConversionError(f"decoder.conv2 takes {c_in} channels but the {preset.encoder} encoder's bottleneck "
                              f"({preset.bottleneck}) has {preset.bottleneck_channels()}")
    w = width / c_in
    if int(c_in * w) != width:
        w = (width + 0.5) / c_in
    name = preset.name if preset.name.endswith("_custom") else f"{preset.name}_custom"
    return preset.replace(name=name, decoder_width=w)


# ---- conversion ---------------------------------------------------------------------------------------------
def convert_state_dict(state_dict: Mapping[str, Any], preset: Union[None, str, Preset] = None, *,
                       seed: int = 0, **overrides: Any) -> tuple[Preset, dict, ConversionReport]:
    """Flax ``{"params", "batch_stats"}`` from a PyTorch state dict (tensors or arrays).

    ``preset``: None to detect it from the keys and shapes, else the preset (name or `Preset`) to use;
    ``overrides``: preset settings that cannot be seen in the weights (``conv2_padding``, ``leakyrelu_a``,
    ``bottleneck``, ``input_size`` ...). Raises `ConversionError` listing missing / unexpected / mis-shaped keys.
    """
    sd = normalize_keys({k: (v.detach().cpu().float().numpy() if hasattr(v, "detach") else np.asarray(v))
                         for k, v in state_dict.items()})
    detected, layout = detect_preset(sd)
    chosen = get_preset(preset if preset is not None else detected, **overrides)
    kmap = km.keymap(chosen, full=(layout == "full"))
    ignored = sorted(k for k in sd if km.is_ignored(k))
    variables, report = assemble(sd, kmap, chosen, detected=detected, layout=layout, ignored=ignored, seed=seed)
    return chosen, variables, report


def convert_torch_file(src: Union[str, Path], preset: Union[None, str, Preset] = None, *, seed: int = 0,
                       trust_pickle: bool = False, **overrides: Any) -> tuple[Preset, dict, ConversionReport]:
    """(preset, variables, report) of a PyTorch checkpoint file (see `load_state_dict` for ``trust_pickle``)."""
    return convert_state_dict(load_state_dict(src, trust_pickle=trust_pickle), preset, seed=seed, **overrides)
