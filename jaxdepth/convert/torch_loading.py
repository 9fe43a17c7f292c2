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

import dataclasses
import functools
import pickle
import re
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from ..models.presets import PRESETS, Preset, get_preset, make_divisible
from . import keymap as km

_MAX_LISTED = 60


class ConversionError(ValueError):
    """A checkpoint that does not match the preset; the message lists the offending keys."""


def _listing(title: str, keys: list[str]) -> str:
    shown = "\n".join(f"    {k}" for k in keys[:_MAX_LISTED])
    more = f"\n    ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"  {title} ({len(keys)}):\n{shown}{more}"


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
    """"full" (DenseDepth) or "encoder" (torchvision classifier alone)."""
    if any(k.startswith(km.FULL_PREFIX + "features.") for k in sd):
        return "full"
    if any(k.startswith("features.") for k in sd):
        return "encoder"
    raise ConversionError("not a DenseDepth or torchvision DenseNet / MobileNetV2 checkpoint: no key starts with "
                          "'encoder.original_model.features.' or 'features.'\n"
                          + _listing("keys found", sorted(sd)))


def _encoder_config(enc: Mapping[str, Any]) -> dict[str, Any]:
    """Encoder family and hyper-parameters from torchvision-named keys (without prefix)."""
    shape = lambda k: tuple(np.shape(enc[k]))  # noqa: E731
    if "features.denseblock1.denselayer1.conv1.weight" in enc:
        growth = shape("features.denseblock1.denselayer1.conv2.weight")[0]
        blocks = []
        b = 1
        while True:
            pat = re.compile(rf"^features\.denseblock{b}\.denselayer(\d+)\.conv1\.weight$")
            layers = [int(m.group(1)) for k in enc for m in [pat.match(k)] if m]
            if not layers:
                break
            blocks.append(max(layers))
            b += 1
        return dict(encoder="densenet", growth_rate=growth, block_config=tuple(blocks),
                    num_init_features=shape("features.conv0.weight")[0],
                    bn_size=shape("features.denseblock1.denselayer1.conv1.weight")[0] // growth)
    if "features.0.0.weight" in enc and "features.1.conv.0.0.weight" in enc:
        stem = shape("features.0.0.weight")[0]
        project = []
        i = 1
        while True:
            convs = sorted(int(m.group(1)) for k in enc
                           for m in [re.match(rf"^features\.{i}\.conv\.(\d+)\.weight$", k)] if m)
            if not convs:
                break
            project.append(shape(f"features.{i}.conv.{convs[-1]}.weight")[0])
            i += 1
        base = PRESETS["mobilenetv2"]
        for w in sorted({0.35, 0.5, 0.75, 1.0, 1.3, 1.4} | {round(0.05 * j, 2) for j in range(1, 61)},
                        key=lambda w: (w not in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), w)):
            cand = base.replace(width_mult=w)
            if (make_divisible(32 * w) == stem and [c for _, c, _, _ in cand.mobilenet_blocks()] == project):
                return dict(encoder="mobilenetv2", width_mult=w)
        raise ConversionError(f"MobileNetV2 checkpoint with stem {stem} and block widths {project} matches no "
                              f"width_mult")
    raise ConversionError("cannot tell the encoder family: expected torchvision DenseNet keys "
                          "(features.denseblock1.denselayer1.*) or MobileNetV2 keys (features.1.conv.0.0.*)\n"
                          + _listing("encoder keys found", sorted(enc)))


def _encoder_matches(preset: Preset, cfg: Mapping[str, Any]) -> bool:
    return all(getattr(preset, k) == v for k, v in cfg.items())


def detect_preset(sd: Mapping[str, Any]) -> tuple[Preset, str]:
    """(preset, layout) for normalised keys: the registered preset with this encoder (and decoder width),
    or the family's default preset with the detected settings substituted."""
    layout = layout_of(sd)
    prefix = km.FULL_PREFIX if layout == "full" else ""
    enc = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix + "features.")}
    cfg = _encoder_config(enc)
    same_encoder = [p for p in PRESETS.values() if _encoder_matches(p, cfg)]
    if layout == "encoder" or "decoder.conv2.weight" not in sd:
        if same_encoder:
            return same_encoder[0], layout
        family_default = {"densenet": "densenet169", "mobilenetv2": "mobilenetv2"}[cfg["encoder"]]
        return PRESETS[family_default].replace(name=f"{family_default}_custom", **cfg), layout
    width, c_in = np.shape(sd["decoder.conv2.weight"])[:2]
    for p in same_encoder:
        if p.decoder_features() == width and p.feature_channels()[p.bottleneck] == c_in:
            return p, layout
    base = same_encoder[0] if same_encoder else PRESETS[
        {"densenet": "densenet169", "mobilenetv2": "mobilenetv2"}[cfg["encoder"]]].replace(**cfg)
    return _with_decoder_width(base, int(width), int(c_in)), layout


def _with_decoder_width(preset: Preset, width: int, c_in: int) -> Preset:
    feats = preset.feature_channels()
    if feats[preset.bottleneck] != c_in:
        # densenet: bottleneck features[11] or [12] have the same width; nothing else to try
        raise ConversionError(f"decoder.conv2 takes {c_in} channels but the {preset.encoder} encoder's bottleneck "
                              f"(features[{preset.bottleneck}]) has {feats[preset.bottleneck]}")
    w = width / c_in
    if int(c_in * w) != width:
        w = (width + 0.5) / c_in
    name = preset.name if preset.name.endswith("_custom") else f"{preset.name}_custom"
    return preset.replace(name=name, decoder_width=w)


# ---- conversion ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ConversionReport:
    preset: Preset
    layout: str
    converted: int
    ignored: list[str]
    decoder_initialised: bool

    def summary(self) -> str:
        s = (f"preset {self.preset.name} ({self.preset.encoder}), {self.layout} checkpoint: {self.converted} "
             f"tensors converted, {len(self.ignored)} ignored (classifier / num_batches_tracked)")
        if self.decoder_initialised:
            s += "; decoder freshly initialised (encoder-only checkpoint)"
        return s


@functools.lru_cache(maxsize=16)
def _flax_shapes(preset: Preset) -> dict[tuple[str, ...], tuple[int, ...]]:
    import jax

    from ..models import build, describe
    _, shapes = describe(build(preset), (1, 64, 64, 3), return_shapes=True)
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(dict(shapes))[0]:
        out[tuple(getattr(p, "key", str(p)) for p in path)] = tuple(leaf.shape)
    return out


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def convert_state_dict(state_dict: Mapping[str, Any], preset: Union[None, str, Preset] = None, *,
                       seed: int = 0, **overrides: Any) -> tuple[Preset, dict, ConversionReport]:
    """Flax ``{"params", "batch_stats"}`` from a PyTorch state dict (tensors or arrays).

    ``preset``: None to detect it from the keys and shapes, else the preset (name or `Preset`) to use;
    ``overrides``: preset settings that cannot be seen in the weights (``conv2_padding``, ``leakyrelu_a``,
    ``bottleneck``, ``input_size`` ...). Raises `ConversionError` listing missing / unexpected / mis-shaped keys.
    """
    import jax

    from ..models import build, init_variables

    sd = normalize_keys({k: (v.detach().cpu().float().numpy() if hasattr(v, "detach") else np.asarray(v))
                         for k, v in state_dict.items()})
    detected, layout = detect_preset(sd)
    chosen = get_preset(preset if preset is not None else detected, **overrides)
    kmap = km.keymap(chosen, full=(layout == "full"))
    ignored = sorted(k for k in sd if km.is_ignored(k))
    present = {k for k in sd if not km.is_ignored(k)}
    missing = sorted(set(kmap) - present)
    unexpected = sorted(present - set(kmap))
    flax_shapes = _flax_shapes(chosen)
    wrong = []
    for key in sorted(set(kmap) & present):
        t = kmap[key]
        want = flax_shapes.get((t.collection, *t.path))
        if want is None:  # the key map names a Flax variable the model does not have: a jaxdepth bug
            raise RuntimeError(f"key map of {chosen.encoder} maps {key} to missing Flax variable "
                               f"{t.collection}/{'/'.join(t.path)}")
        got = km.target_shape(np.shape(sd[key]), t.transform) if len(np.shape(sd[key])) in (1, 4) else None
        if got != want:
            wrong.append(f"{key}: checkpoint {tuple(np.shape(sd[key]))}, expected "
                         f"{_torch_shape(want, t.transform)}")
    if missing or unexpected or wrong:
        parts = [f"checkpoint does not match preset {chosen.name!r} ({layout} {chosen.encoder} checkpoint; "
                 f"detected preset {detected.name!r}):"]
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if wrong:
            parts.append(_listing("mis-shaped keys", wrong))
        parts.append("  (choose another preset with --preset, or override settings with --set key=value)")
        raise ConversionError("\n".join(parts))
    nonfinite = sorted(k for k in kmap if np.asarray(sd[k]).dtype.kind == "f" and not np.isfinite(sd[k]).all())
    if nonfinite:  # a broken or diverged checkpoint: the converted model could only output NaN
        raise ConversionError("checkpoint holds NaN or infinite weights:\n" + _listing("tensors", nonfinite))
    if layout == "full":
        variables: dict = {"params": {}, "batch_stats": {}}
    else:
        variables = jax.tree_util.tree_map(np.asarray, init_variables(build(chosen), seed))
    for key, t in kmap.items():
        _set(variables[t.collection], t.path, km.transform(sd[key], t.transform))
    if layout == "full":
        covered = {(t.collection, *t.path) for t in kmap.values()}
        if covered != set(flax_shapes):
            raise RuntimeError(f"key map does not cover the Flax model: {sorted(set(flax_shapes) - covered)[:10]}")
    variables = jax.device_put(variables)
    report = ConversionReport(chosen, layout, len(kmap), ignored, layout != "full")
    return chosen, variables, report


def _torch_shape(flax_shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    if kind == "conv":
        kh, kw, i, o = flax_shape
        return (o, i, kh, kw)
    return tuple(flax_shape)


def convert_file(src: Union[str, Path], dst: Union[str, Path], preset: Union[None, str, Preset] = None, *,
                 plan: Any = None, seed: int = 0, trust_pickle: bool = False, overwrite: bool = False,
                 **overrides: Any) -> ConversionReport:
    """Convert a PyTorch checkpoint file to a jaxdepth (orbax) checkpoint directory (see `load_state_dict`
    for ``trust_pickle``; an existing ``dst`` is replaced only with ``overwrite=True``)."""
    from ..io import checkpoint

    chosen, variables, report = convert_state_dict(load_state_dict(src, trust_pickle=trust_pickle), preset,
                                                   seed=seed, **overrides)
    checkpoint.save(dst, chosen, variables, plan=plan, overwrite=overwrite,
                    extra={"converted_from": str(Path(src).absolute()), "layout": report.layout,
                           "decoder_initialised": report.decoder_initialised, "seed": seed})
    return report
