"""Calibration: fix every quantized layer's input quantization from sample images run through the float model.

    >>> model = build("densenet161", plan={"decoder.*": "mul8s_1KV8", "encoder.*": "int8"})
    >>> variables = calibrate(model, variables, images)          # adds variables["quant"]

For each layer the plan quantizes, an `jaxdepth.quant.Observer` (``method`` = "minmax", "percentile" or
"mse") sees the layer's input in the FLOAT model (every layer exact), and gives per-tensor ``QParams``
(symmetric int8 codes for signed tables, affine uint8 codes for unsigned ones). They are stored as
``variables["quant"][<layer path>] = {"x_scale_int8", "x_zero_point_int8"}`` (signed tables) or
``{"x_scale_uint8", "x_zero_point_uint8"}`` (unsigned tables) and saved with checkpoints; ``layers="all"``
stores both. The key names the signedness because key names are static under ``jax.jit`` (values are
traced): a layer whose table needs the other signedness finds no key and raises at trace time, instead of
reading codes of the wrong kind. Layers with integer requantization (plan ``"requant": "integer"``; every
layer with ``layers="all"``) also get their OUTPUT range (after the layer's fused activation, same observer
method) as ``y_scale_<int8|uint8>``, ``y_zero_point_<int8|uint8>``.
"""
from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any, Iterable, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from .. import exec_cache
from ..exec_cache import cached_jit, remembered
from ..quant import Observer
from ..quant.params import count_non_finite
from .plan import FLOAT_PLAN, Plan, describe, recording, unmatched_patterns

LAYERS = ("plan", "all")
#: the quant collection's keys before they named the signedness (`upgrade_legacy_keys` renames them)
LEGACY_KEYS = ("x_scale", "x_zero_point", "y_scale", "y_zero_point")


def qparam_keys(side: str, signed: bool) -> tuple[str, str]:
    """The (scale, zero point) keys of a layer's ``variables["quant"]`` entry: ``side`` "x" (input) or "y"
    (output, integer requantization), for tables of that signedness, e.g. ("x_scale_int8", "x_zero_point_int8")."""
    codes = "int8" if signed else "uint8"
    return f"{side}_scale_{codes}", f"{side}_zero_point_{codes}"


#: the input scale keys of both signednesses (learned ranges train them: `jaxdepth.training`)
INPUT_SCALE_KEYS = (qparam_keys("x", True)[0], qparam_keys("x", False)[0])


def uncalibrated_layers(model: Any, variables: dict, size: Sequence[int] = (64, 64)) -> list[str]:
    """The layers ``model``'s plan quantizes for which ``variables["quant"]`` holds no calibration of the
    signedness of the layer's table (and, with integer requantization, no output range): [] when the
    calibration serves the plan. The one answer to "can this calibration be reused for this plan"
    (`jaxdepth.inference.quantized`, `jaxdepth.training.prepare_student`). ``size``: (H, W) the layers
    are listed at (traced once, remembered with a compilation cache)."""
    from flax import traverse_util
    stored = set(traverse_util.flatten_dict(dict(variables.get("quant") or {})))
    missing = []
    for path, name in _layer_paths(model, tuple(int(v) for v in size)):
        arith = model.plan.resolve(name)
        if arith.is_float:
            continue
        signed = arith.multiplier.signed
        needed = qparam_keys("x", signed) + (qparam_keys("y", signed) if arith.requant == "integer" else ())
        if any((*path, k) not in stored for k in needed):
            missing.append(name)
    return missing


def _layer_paths(model: Any, size: tuple[int, int]) -> list:
    """[(module path, name)] of ``model``'s multiplying layers (traced under the float plan, remembered)."""
    float_model = model.clone(plan=FLOAT_PLAN)

    def trace() -> list:
        return [[list(i.path), i.name] for i in describe(float_model, (1, *size, 3))]
    return [(tuple(path), name) for path, name in remembered("layer-paths", (float_model, size), trace)]


def upgrade_legacy_keys(quant: dict, plan: Plan) -> dict:
    """``quant`` with the keys of a calibration saved before they named the signedness (``x_scale``, ...)
    renamed to those of the signedness it was made for, read from ``plan``, the plan saved with it: every
    writer of jaxdepth saved a calibration made for the plan it stored (training: the student's plan; the
    bundled model: int8 for every layer, with the float plan), and `calibrate` gives layers its plan leaves
    float signed parameters. So: the table's signedness where ``plan`` quantizes the layer, signed elsewhere."""
    def walk(node: Mapping, path: tuple[str, ...]) -> dict:
        out: dict = {}
        legacy = [k for k in LEGACY_KEYS if k in node and not isinstance(node[k], Mapping)]
        if legacy:
            arith = plan.resolve(".".join(path))
            signed = arith.is_float or arith.multiplier.signed
        for k, v in node.items():
            if isinstance(v, Mapping):
                out[k] = walk(v, (*path, k))
            elif k in legacy:
                side, part = k[0], k[2:]
                out[qparam_keys(side, signed)[0 if part == "scale" else 1]] = v
            else:
                out[k] = v
        return out
    return walk(quant, ())


def has_legacy_keys(quant: Mapping) -> bool:
    """Whether ``quant`` holds keys of a calibration saved before they named the signedness."""
    return any(k in LEGACY_KEYS or (isinstance(v, Mapping) and has_legacy_keys(v)) for k, v in quant.items())


def _batches(images: Union[np.ndarray, jax.Array, Iterable[Any]]) -> Iterable[Any]:
    if isinstance(images, (np.ndarray, jax.Array)):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise ValueError(f"calibration images must be (N, H, W, 3) or an iterable of such batches, got "
                             f"shape {images.shape}")
        return [images]
    return images


#: a float image above this is taken for 0..255 values (the model's input is [0, 1])
_MAX_UNIT_IMAGE = 1.5


def _check_image_batch(batch: Any, images_in: bool) -> None:
    """Refuse a batch the model was not made for: empty, integer-valued (uint8 frames as
    `jaxdepth.io.images.read_rgb` returns them) or NaN / infinite (`_check_finite_images`); for a model
    taking images (``images_in``: a DenseDepth model, not a layer on its own) also float values in 0..255,
    instead of calibrating ranges 255x too wide."""
    shape, dtype = tuple(np.shape(batch)), np.dtype(getattr(batch, "dtype", np.asarray(batch).dtype))
    if not shape or shape[0] == 0:
        raise ValueError(f"calibration images: got an empty batch (shape {shape}); give at least one image")
    if dtype.kind in "biu":
        raise ValueError(f"calibration images have dtype {dtype}: the model takes float RGB in [0, 1]; pass "
                         f"images.astype(np.float32) / 255")
    _check_finite_images(batch)
    hi = float(np.max(batch))
    if images_in and hi > _MAX_UNIT_IMAGE:
        raise ValueError(f"calibration images reach {hi:g}: the model takes float RGB in [0, 1], these look like "
                         f"0..255 values; divide them by 255")


def _takes_images(model: Any) -> bool:
    from .densedepth import DenseDepth
    return isinstance(model, DenseDepth)


def _check_options(method: str, layers: str, observer_kwargs: dict) -> None:
    """Refuse bad options before any image is run (not after the whole calibration)."""
    if layers not in LAYERS:
        raise ValueError(f"calibrate: layers must be one of {', '.join(map(repr, LAYERS))}, got {layers!r}")
    try:
        Observer(method, **observer_kwargs)
    except TypeError as e:
        raise TypeError(f"calibrate: bad observer option ({e}); Observer takes percentile= and seed=") from None
    if "percentile" in observer_kwargs:
        p = observer_kwargs["percentile"]
        if not isinstance(p, (int, float, np.number)) or not 50 < float(p) <= 100:
            raise ValueError(f"calibrate: percentile must be in (50, 100] (the share of |values| the range keeps, "
                             f"e.g. 99.99), got {p!r}")


def _flatten(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], dict]:
    """{module path: {"min": ..., "max": ..., ...}} from a nested collection."""
    out: dict[tuple[str, ...], dict] = {}
    leaves = {k: v for k, v in tree.items() if not isinstance(v, dict)}
    if leaves:
        out[prefix] = leaves
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, (*prefix, k)))
    return out


def _check_finite_weights(base: dict) -> None:
    """Non-finite weights make the float model's activations NaN, and the observers' min / max (XLA's
    vectorised reductions) do not reliably see NaN: refuse them here, by name, instead of calibrating
    ranges that silently ignore it."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(base):
        bad = count_non_finite(leaf)
        if bad:
            raise ValueError(f"calibration: weights {jax.tree_util.keystr(path)} hold {bad} NaN or infinite "
                             f"value(s) of {np.size(leaf)}")


def _check_finite_images(batch: Any) -> None:
    """As `_check_finite_weights`, for a batch of calibration images."""
    bad = count_non_finite(batch)
    if bad:
        raise ValueError(f"calibration images hold {bad} NaN or infinite value(s) of {np.size(batch)}: "
                         "activation ranges cannot be measured on them")


def _observed_layers(float_model: Any, collections: list[str], v: dict, x: Any, run) -> list:
    """The (path, name) of every layer ``run`` observes, from an abstract trace remembered across runs
    (`jaxdepth.exec_cache.remembered`: a stored calibration program is not traced again)."""
    def trace() -> list:
        with recording() as infos:
            jax.eval_shape(run, v, x)
        return [[list(info.path), info.name] for info in infos]

    shapes = jax.tree_util.tree_map(lambda a: (tuple(np.shape(a)), str(getattr(a, "dtype", ""))), v)
    layers = remembered("calibrate-layers", (float_model, collections, shapes, tuple(np.shape(x))), trace)
    return [SimpleNamespace(path=tuple(path), name=name) for path, name in layers]


def calibrate(model: Any, variables: dict, images: Any, method: str = "minmax", *, layers: str = "plan",
              fast_compile: bool = False, **observer_kwargs: Any) -> dict:
    """``variables`` plus a ``"quant"`` collection of input QParams for the model's quantized layers.

    ``images``: an (N, H, W, 3) float array in [0, 1] or an iterable of such batches (one shape per call is
    best: each new shape compiles once); integer (uint8) frames or 0..255 floats are refused. ``layers``:
    "plan" calibrates the layers the plan quantizes, for their tables' signedness; "all" calibrates every
    layer for signed and unsigned tables alike, so the plan can be changed later (``model.clone(plan=...)``)
    without calibrating again. A layer run with a table of a signedness it was not calibrated for raises
    (trace time). ``fast_compile``: see `compile_apply`. ``observer_kwargs`` go to `jaxdepth.quant.Observer`
    (e.g. ``percentile=99.9``). Warns (UserWarning) when a pattern of the model's plan matches no layer.

    With JAX's compilation cache on (the CLIs) and ``images`` one array, the result is stored beside the
    cache (`jaxdepth.exec_cache.remembered`, keyed by the model with its plan, the weights, the images and
    every option by value): a later process calibrating the same model on the same images reads it back
    instead of running the float model again.
    """
    _check_options(method, layers, observer_kwargs)
    base = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    one_array = isinstance(images, (np.ndarray, jax.Array))
    if one_array:  # checked once, here, so a stored result is refused for bad images too
        images = _batches(images)
        _check_image_batch(images[0], _takes_images(model))
    if one_array and exec_cache.folder() is not None:
        key = (model, base, np.asarray(images[0]), method, layers, fast_compile,  # (XLA's fast compile: other bits)
               sorted(observer_kwargs.items()))

        def compute() -> dict:
            quant, names = _calibrate(model, base, images, method, layers, fast_compile, observer_kwargs,
                                      checked=True)
            return {"quant": _to_json(quant), "layers": names}
        stored = remembered("calibration", key, compute)
        quant, names = _from_json(stored["quant"]), stored["layers"]
    else:
        quant, names = _calibrate(model, base, images, method, layers, fast_compile, observer_kwargs,
                                  checked=one_array)
    problem = unmatched_patterns(model.plan, names)
    if problem:
        warnings.warn(f"calibrate: the model's plan {problem}: the layers it meant stay float", UserWarning,
                      stacklevel=2)
    return {**base, "quant": quant}


def _to_json(quant: dict) -> list:
    """The quant collection as JSON: [[layer path, {name: [dtype, shape, values]}], ...] (float32 values
    survive the round trip exactly: a double holds them and JSON writes doubles in full)."""
    return [[list(path), {k: [str(np.asarray(v).dtype), list(np.shape(v)), np.asarray(v).ravel().tolist()]
                          for k, v in entry.items()}]
            for path, entry in _flatten(quant).items()]


def _from_json(stored: list) -> dict:
    quant: dict = {}
    for path, entry in stored:
        node = quant
        for p in path:
            node = node.setdefault(p, {})
        node.update({k: jnp.asarray(np.asarray(values, dtype).reshape(shape)) for k, (dtype, shape, values)
                     in entry.items()})
    return quant


def _calibrate(model: Any, base: dict, images: Any, method: str, layers: str, fast_compile: bool,
               observer_kwargs: dict, checked: bool = False) -> tuple[dict, list[str]]:
    """(the ``quant`` collection of `calibrate` (input, and for integer requant output, QParams), the names of
    every multiplying layer). ``checked``: the batches were checked already (one array, in `calibrate`)."""
    from .densedepth import FAST_COMPILE_OPTIONS

    float_model = model.clone(plan=FLOAT_PLAN)
    collections = ["calib"] + (["calib_sample"] if method != "minmax" else [])

    def run(v, x):
        _, state = float_model.apply(v, x, mutable=collections)
        return state

    compiled: dict[tuple[int, ...], Any] = {}
    layer_infos: list = []

    def observe(v, x):
        if x.shape not in compiled:
            if fast_compile or exec_cache.folder() is None:
                with recording() as infos:
                    lowered = jax.jit(run).lower(v, x)
                layer_infos[:] = layer_infos or infos
                compiled[x.shape] = lowered.compile(compiler_options=FAST_COMPILE_OPTIONS if fast_compile else None)
            else:  # with a compilation cache (the CLIs) a later process neither traces nor compiles it
                layer_infos[:] = layer_infos or _observed_layers(float_model, collections, v, x, run)
                compiled[x.shape] = cached_jit(jax.jit(run), "calibrate", (float_model, collections))
        return compiled[x.shape](v, x)

    _check_finite_weights(base)
    observers: dict[tuple[str, ...], Observer] = {}
    out_observers: dict[tuple[str, ...], Observer] = {}
    seen_any = False
    images_in = _takes_images(model)
    for batch in _batches(images):
        if not checked:
            _check_image_batch(batch, images_in)
        batch = jnp.asarray(batch, jnp.float32)
        seen_any = True
        state = jax.device_get(observe(base, batch))
        samples = _flatten(dict(state.get("calib_sample", {})))
        for path, stats in _flatten(dict(state["calib"])).items():
            for prefix, table in (("", observers), ("y_", out_observers)):   # input, output
                if prefix + "min" not in stats:
                    continue
                obs = table.setdefault(path, Observer(method, **observer_kwargs))
                lo = min(float(np.min(v)) for v in stats[prefix + "min"])
                hi = max(float(np.max(v)) for v in stats[prefix + "max"])
                obs.update(np.array([lo, hi], np.float32))
                for values in samples.get(path, {}).get(prefix + "values", ()):
                    obs.update(values)
    if not seen_any:
        raise ValueError("calibration got no images")
    quant: dict = {}
    for info in layer_infos:
        path, arith = info.path, model.plan.resolve(info.name)
        if layers != "all" and arith.is_float:
            continue
        if path not in observers:
            raise RuntimeError(f"layer {info.name} was not observed during calibration")
        entry = {}
        for signed in ((True, False) if layers == "all" else (arith.multiplier.signed,)):
            entry.update(_qparam_entry("x", observers[path].qparams(signed), signed))
            if (layers == "all" or arith.requant == "integer") and path in out_observers:
                entry.update(_qparam_entry("y", out_observers[path].qparams(signed), signed))
        node = quant
        for p in path[:-1]:
            node = node.setdefault(p, {})
        if path:
            node[path[-1]] = entry
        else:                                   # a layer applied on its own
            quant.update(entry)
    return quant, [info.name for info in layer_infos]


def _qparam_entry(side: str, qp: Any, signed: bool) -> dict:
    scale_key, zero_key = qparam_keys(side, signed)
    return {scale_key: jnp.asarray(qp.scale, jnp.float32), zero_key: jnp.asarray(qp.zero_point, jnp.int32)}
