"""Error compensation: remove each approximate layer's mean error with one integer per output channel.

    >>> variables = calibrate(model, variables, images)
    >>> variables = compensate(model, variables, images)     # adds acc_offset_<table digest> to variables["quant"]

An approximate multiplier's per-product errors rarely average to zero on the codes a layer actually sees,
so they add up over each window into an offset of the layer's output (`bench/scene_error.py` measures it).
For every layer the plan runs through an inexact table, `compensate` runs the model on ``images`` and
measures the table's mean error on that layer's codes, per output channel
(`jaxdepth.quant.table_error_mean`: the mean of ``sum lut[w, x] - sum w * x``); rounded to an integer it is
stored as the layer's ``acc_offset``, which the layer subtracts from its int32 accumulators. On an
accelerator this is free: it folds into the int32 bias (integer requantization and `jaxdepth.export` do
exactly that). It removes the mean of the error, not its spread; it needs no training and no labels.

Offsets are named by the table's content (`Multiplier.digest`), so a plan with another table ignores them;
they belong to the weights and input ranges they were measured with: recalibrating drops them
(`jaxdepth.inference.quantized`), and fine-tuning starts without them (`strip_compensation`).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from .calibrate import _batches, _check_image_batch, _layer_paths, _takes_images
from .layers import OFFSET_PREFIX, RUNTIME_OFFSET_KEY, offset_key


def compensate(model: Any, variables: dict, images: Any, *, rounds: int = 1) -> dict:
    """``variables`` with an error-compensation offset for every layer the plan runs through an inexact table.

    ``variables`` must be calibrated for the plan (`calibrate`). ``images``: an (N, H, W, 3) float array in
    [0, 1] or an iterable of such batches (the calibration images are the natural choice). Each layer's
    offset is the mean error of its table on the codes it sees when the model runs with the offsets already
    in ``variables``, if any; ``rounds`` > 1 measures again with the previous round's offsets applied, so each
    layer sees the inputs the compensated layers before it give. Offsets for the same table already in
    ``variables`` are replaced. Runtime-table layers (plans with ``runtime_table``) get theirs in
    ``variables["lut"][<path>]["acc_offset"]`` (their table must be there already).
    """
    if not isinstance(rounds, (int, np.integer)) or isinstance(rounds, bool) or rounds < 1:
        raise ValueError(f"compensate: rounds must be a positive integer, got {rounds!r}")
    if "quant" not in variables:
        raise ValueError("compensate: the variables have no 'quant' collection: calibrate the model first "
                         "(jaxdepth.models.calibrate(model, variables, images))")
    batches = list(_batches(images))
    for batch in batches:
        _check_image_batch(batch, _takes_images(model))
    run = _measure(model)
    for _ in range(int(rounds)):
        sums: dict[tuple[str, ...], np.ndarray] = {}      # (*layer path, key) -> error summed over images
        count = 0
        for batch in batches:
            batch = jnp.asarray(batch, jnp.float32)
            state = jax.device_get(run(variables, batch))
            for path_key, values in traverse_util.flatten_dict(dict(state)).items():   # sown: a tuple per key
                mean = np.mean([np.asarray(v, np.float64) for v in values], axis=0)
                sums[path_key] = sums.get(path_key, 0.0) + mean * len(batch)
            count += len(batch)
        variables = _with_offsets(variables, {k: v / count for k, v in sums.items()})
    return variables


@functools.lru_cache(maxsize=8)
def _measure(model: Any):
    """The jitted pass that sows every inexact layer's mean table error (one per model and plan)."""
    return jax.jit(lambda v, x: model.apply(v, x, mutable=["compensation"])[1].get("compensation", {}))


def _with_offsets(variables: dict, errors: dict) -> dict:
    """``variables`` with each measured mean error ({(*layer path, key): float (O,)}), rounded to int32, stored
    where its layer reads it: ``quant`` for fixed tables, ``lut`` for runtime ones."""
    out = dict(variables)
    for collection, runtime in (("quant", False), ("lut", True)):
        mine = {k: jnp.asarray(np.round(e), jnp.int32) for k, e in errors.items() if _is_offset_key(k[-1], runtime)}
        if mine:
            flat = traverse_util.flatten_dict(dict(out.get(collection) or {}))
            out[collection] = traverse_util.unflatten_dict({**flat, **mine})
    return out


def _is_offset_key(key: str, runtime: bool) -> bool:
    """Whether ``key`` names an offset: ``acc_offset`` beside a runtime table, ``acc_offset_<digest>`` in quant."""
    return key == RUNTIME_OFFSET_KEY if runtime else key.startswith(OFFSET_PREFIX)


def uncompensated_layers(model: Any, variables: dict, size: Sequence[int] = (64, 64)) -> list[str]:
    """The layers ``model``'s plan runs through an inexact fixed table that have no offset for it ([] when
    `compensate` has served the plan). Runtime-table layers are not listed (their table is not known here)."""
    stored = set(traverse_util.flatten_dict(dict(variables.get("quant") or {})))
    missing = []
    for path, name in _layer_paths(model, tuple(int(v) for v in size)):
        arith = model.plan.resolve(name)
        if arith.is_float or arith.runtime_table or arith.multiplier.is_exact:
            continue
        if (*path, offset_key(arith.multiplier)) not in stored:
            missing.append(name)
    return missing


def strip_compensation(variables: dict) -> dict:
    """``variables`` without error-compensation offsets (for a run that must not use them, or weights about
    to change: an offset is only right for the weights and ranges it was measured with); ``variables`` itself
    when it holds none."""
    if not offsets(variables):
        return variables
    out = dict(variables)
    for collection, runtime in (("quant", False), ("lut", True)):
        if collection in out:
            flat = traverse_util.flatten_dict(dict(out[collection]))
            out[collection] = traverse_util.unflatten_dict(
                {k: v for k, v in flat.items() if not _is_offset_key(k[-1], runtime)})
    return out


def offsets(variables: dict) -> dict[tuple[str, str], np.ndarray]:
    """Every error-compensation offset in ``variables``: {(layer name, key): int32 (O,)}; the key is
    ``acc_offset_<table digest>`` (fixed tables) or ``acc_offset`` (runtime tables)."""
    found: dict[tuple[str, str], np.ndarray] = {}
    for collection, runtime in (("quant", False), ("lut", True)):
        for (*path, key), v in traverse_util.flatten_dict(dict(variables.get(collection) or {})).items():
            if _is_offset_key(key, runtime):
                found[".".join(path), key] = np.asarray(v)
    return found
