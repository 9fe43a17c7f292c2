"""What every checkpoint conversion shares: check a flat key -> array dict against a key map and the Flax
model's shapes, report every missing / unexpected / mis-shaped key in one error, assemble the variables.

The readers (`torch_loading` for PyTorch files, `keras_loading` for Keras ``.h5`` files) only produce the flat
dict, the detected preset and the key map; nothing is loaded partially: either every key of the map is present
with its shape and nothing else is left over, or `ConversionError` lists all offending keys.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import numpy as np

from ..models.presets import Preset
from . import keymap as km

_MAX_LISTED = 60


class ConversionError(ValueError):
    """A checkpoint that does not match the preset; the message lists the offending keys."""


def listing(title: str, keys: list[str]) -> str:
    shown = "\n".join(f"    {k}" for k in keys[:_MAX_LISTED])
    more = f"\n    ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"  {title} ({len(keys)}):\n{shown}{more}"


@dataclasses.dataclass
class ConversionReport:
    """What a conversion used: the preset, which keys became which variables, what it left aside and why."""

    preset: Preset
    layout: str                        # "full" (DenseDepth) | "encoder" (classifier weights alone)
    converted: int                     # number of checkpoint tensors used
    ignored: list[str]                 # checkpoint keys deliberately not used (classifier, BN counters)
    decoder_initialised: bool          # encoder-only input: the decoder is freshly initialised
    source: str = "pytorch"            # "pytorch" | "keras"
    used: list[str] = dataclasses.field(default_factory=list)      # every checkpoint key converted
    skipped: list[str] = dataclasses.field(default_factory=list)   # weightless layers (Keras: pooling, ...)
    settings: dict[str, str] = dataclasses.field(default_factory=dict)  # setting -> where its value came from

    def summary(self) -> str:
        s = (f"preset {self.preset.name} ({self.preset.encoder}), {self.source} {self.layout} checkpoint: "
             f"{self.converted} tensors converted, {len(self.ignored)} ignored")
        if self.source == "pytorch":
            s += " (classifier / num_batches_tracked)"
        if self.skipped:
            s += f", {len(self.skipped)} weightless layers skipped"
        if self.decoder_initialised:
            s += "; decoder freshly initialised (encoder-only checkpoint)"
        for key, why in self.settings.items():
            s += f"\n  {key} = {getattr(self.preset, key)!r} ({why})"
        return s


@functools.lru_cache(maxsize=16)
def flax_shapes(preset: Preset) -> dict[tuple[str, ...], tuple[int, ...]]:
    """(collection, *path) -> shape of every variable of the preset's float model."""
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


def _source_shape(flax_shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    if kind == "conv":
        kh, kw, i, o = flax_shape
        return (o, i, kh, kw)
    if kind == "depthwise":
        kh, kw, m, c = flax_shape
        return (kh, kw, c, m)
    return tuple(flax_shape)


def assemble(arrays: Mapping[str, np.ndarray], kmap: km.KeyMap, chosen: Preset, *, detected: Preset,
             layout: str, ignored: list[str], seed: int = 0, source: str = "pytorch",
             hint: str = "choose another preset with --preset, or override settings with --set key=value"
             ) -> tuple[dict, ConversionReport]:
    """Check ``arrays`` (keys minus ``ignored``) against ``kmap`` and build the Flax variables.

    ``layout == "full"``: the key map must cover the whole model; otherwise (encoder-only checkpoints) the
    variables start from a fresh init (seeded by ``seed``) and the mapped ones are overwritten.
    """
    import jax

    from ..models import build, init_variables

    present = set(arrays) - set(ignored)
    missing = sorted(set(kmap) - present)
    unexpected = sorted(present - set(kmap))
    shapes = flax_shapes(chosen)
    wrong = []
    for key in sorted(set(kmap) & present):
        t = kmap[key]
        want = shapes.get((t.collection, *t.path))
        if want is None:  # the key map names a Flax variable the model does not have: a jaxdepth bug
            raise RuntimeError(f"key map of {chosen.encoder} maps {key} to missing Flax variable "
                               f"{t.collection}/{'/'.join(t.path)}")
        got = km.target_shape(np.shape(arrays[key]), t.transform) if len(np.shape(arrays[key])) in (1, 4) else None
        if got != want:
            wrong.append(f"{key}: checkpoint {tuple(np.shape(arrays[key]))}, expected "
                         f"{_source_shape(want, t.transform)}")
    if missing or unexpected or wrong:
        parts = [f"checkpoint does not match preset {chosen.name!r} ({source} {layout} {chosen.encoder} "
                 f"checkpoint; detected preset {detected.name!r}); nothing was converted:"]
        if missing:
            parts.append(listing("missing keys", missing))
        if unexpected:
            parts.append(listing("unexpected keys", unexpected))
        if wrong:
            parts.append(listing("mis-shaped keys", wrong))
        parts.append(f"  ({hint})")
        raise ConversionError("\n".join(parts))
    nonfinite = sorted(k for k in kmap if np.asarray(arrays[k]).dtype.kind == "f"
                       and not np.isfinite(arrays[k]).all())
    if nonfinite:  # a broken or diverged checkpoint: the converted model could only output NaN
        raise ConversionError("checkpoint holds NaN or infinite weights:\n" + listing("tensors", nonfinite))
    if layout == "full":
        variables: dict = {"params": {}, "batch_stats": {}}
    else:
        variables = jax.tree_util.tree_map(np.asarray, init_variables(build(chosen), seed))
    for key, t in kmap.items():
        _set(variables[t.collection], t.path, km.transform(arrays[key], t.transform))
    if layout == "full":
        covered = {(t.collection, *t.path) for t in kmap.values()}
        if covered != set(shapes):
            raise RuntimeError(f"key map does not cover the Flax model: {sorted(set(shapes) - covered)[:10]}")
    report = ConversionReport(chosen, layout, len(kmap), sorted(ignored), layout != "full", source=source,
                              used=sorted(kmap))
    return jax.device_put(variables), report
