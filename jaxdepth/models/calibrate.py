"""Calibration: fix every quantized layer's input quantization from sample images run through the float model.

    >>> model = build("densenet161", plan={"decoder.*": "mul8s_1KV8", "encoder.*": "int8"})
    >>> variables = calibrate(model, variables, images)          # adds variables["quant"]

For each layer the plan quantizes, an `jaxdepth.quant.Observer` (``method`` = "minmax", "percentile" or
"mse") sees the layer's input in the FLOAT model (every layer exact), and gives per-tensor ``QParams``
(symmetric int8 for signed tables, affine uint8 for unsigned ones). They are stored as
``variables["quant"][<layer path>] = {"x_scale", "x_zero_point"}`` and saved with checkpoints. Layers with
integer requantization (plan ``"requant": "integer"``; every layer with ``layers="all"``) also get their
OUTPUT range (after the layer's fused activation, same observer method) as ``y_scale``, ``y_zero_point``.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Iterable, Union

import jax
import jax.numpy as jnp
import numpy as np

from .. import exec_cache
from ..exec_cache import cached_jit, remembered
from ..quant import Observer
from ..quant.params import count_non_finite
from .plan import FLOAT_PLAN, recording


def _batches(images: Union[np.ndarray, jax.Array, Iterable[Any]]) -> Iterable[Any]:
    if isinstance(images, (np.ndarray, jax.Array)):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise ValueError(f"calibration images must be (N, H, W, 3) or an iterable of such batches, got "
                             f"shape {images.shape}")
        return [images]
    return images


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

    ``images``: an (N, H, W, 3) array in [0, 1] or an iterable of such batches (one shape per call is best:
    each new shape compiles once). ``layers="all"`` calibrates every layer, so the plan can be changed later
    (``model.clone(plan=...)``) without calibrating again. ``fast_compile``: see `compile_apply`.
    ``observer_kwargs`` go to `jaxdepth.quant.Observer` (e.g. ``percentile=99.9``).

    With JAX's compilation cache on (the CLIs) and ``images`` one array, the result is stored beside the
    cache (`jaxdepth.exec_cache.remembered`, keyed by the model with its plan, the weights, the images and
    every option by value): a later process calibrating the same model on the same images reads it back
    instead of running the float model again.
    """
    base = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    if isinstance(images, (np.ndarray, jax.Array)) and exec_cache.folder() is not None:
        key = (model, base, np.asarray(images), method, layers, fast_compile,  # (XLA's fast compile: other bits)
               sorted(observer_kwargs.items()))
        stored = remembered("calibration", key, lambda: _to_json(
            _calibrate(model, base, images, method, layers, fast_compile, observer_kwargs)))
        return {**base, "quant": _from_json(stored)}
    return {**base, "quant": _calibrate(model, base, images, method, layers, fast_compile, observer_kwargs)}


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
               observer_kwargs: dict) -> dict:
    """The ``quant`` collection of `calibrate` (input, and for integer requant output, QParams)."""
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
    for batch in _batches(images):
        _check_finite_images(batch)
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
        signed = True if arith.is_float else arith.multiplier.signed
        if path not in observers:
            raise RuntimeError(f"layer {info.name} was not observed during calibration")
        qp = observers[path].qparams(signed)
        node = quant
        for p in path[:-1]:
            node = node.setdefault(p, {})
        entry = {"x_scale": jnp.asarray(qp.scale, jnp.float32), "x_zero_point": jnp.asarray(qp.zero_point, jnp.int32)}
        if (layers == "all" or arith.requant == "integer") and path in out_observers:
            y_qp = out_observers[path].qparams(signed)
            entry.update(y_scale=jnp.asarray(y_qp.scale, jnp.float32),
                         y_zero_point=jnp.asarray(y_qp.zero_point, jnp.int32))
        if path:
            node[path[-1]] = entry
        else:                                   # a layer applied on its own
            quant.update(entry)
    return quant
