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

from .calibrate import _batches, _check_image_batch, _flatten, _takes_images
from .layers import RUNTIME_OFFSET_KEY, offset_key
from .plan import describe

OFFSET_PREFIX = "acc_offset_"


def compensate(model: Any, variables: dict, images: Any, *, rounds: int = 1) -> dict:
    """``variables`` with an error-compensation offset for every layer the plan runs through an inexact table.

    ``variables`` must be calibrated for the plan (`calibrate`). ``images``: an (N, H, W, 3) float array in
    [0, 1] or an iterable of such batches (the calibration images are the natural choice). Each layer's
    offset is the mean error of its table on the codes it sees when the model runs with the offsets already
    present (none at first); ``rounds`` > 1 measures again with the previous round's offsets applied, so each
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
        sums: dict[tuple[tuple[str, ...], str], np.ndarray] = {}
        count = 0
        for batch in batches:
            batch = jnp.asarray(batch, jnp.float32)
            state = jax.device_get(run(variables, batch))
            for path, entry in _flatten(dict(state)).items():
                for key, values in entry.items():
                    mean = np.mean([np.asarray(v, np.float64) for v in values], axis=0)
                    sums[path, key] = sums.get((path, key), 0.0) + mean * len(batch)
            count += len(batch)
        variables = _with_offsets(variables, {k: v / count for k, v in sums.items()})
    return variables


@functools.lru_cache(maxsize=8)
def _measure(model: Any):
    """The jitted pass that sows every inexact layer's mean table error (one per model and plan)."""
    return jax.jit(lambda v, x: model.apply(v, x, mutable=["compensation"])[1].get("compensation", {}))


def _with_offsets(variables: dict, errors: dict) -> dict:
    """``variables`` with each measured mean error, rounded to int32, stored where its layer reads it."""
    out = {k: v for k, v in variables.items()}
    for collection in ("quant", "lut"):
        if collection in out:
            out[collection] = _copy_tree(out[collection])
    for (path, key), error in errors.items():
        offset = jnp.asarray(np.round(error), jnp.int32)
        if key == RUNTIME_OFFSET_KEY:
            node = _node(out.setdefault("lut", {}), path)
        else:
            node = _node(out["quant"], path)
        node[key] = offset
    return out


def _copy_tree(tree: Any) -> Any:
    return {k: _copy_tree(v) for k, v in tree.items()} if hasattr(tree, "items") else tree


def _node(tree: dict, path: tuple[str, ...]) -> dict:
    for p in path:
        tree = tree.setdefault(p, {})
    return tree


def uncompensated_layers(model: Any, variables: dict, size: Sequence[int] = (64, 64)) -> list[str]:
    """The layers ``model``'s plan runs through an inexact fixed table that have no offset for it ([] when
    `compensate` has served the plan). Runtime-table layers are not listed (their table is not known here)."""
    from flax import traverse_util
    stored = set(traverse_util.flatten_dict(dict(variables.get("quant") or {})))
    missing = []
    for info in describe(model, (1, *(int(v) for v in size), 3)):
        arith = info.arith
        if arith.is_float or arith.runtime_table or arith.multiplier.is_exact:
            continue
        if (*info.path, offset_key(arith.multiplier)) not in stored:
            missing.append(info.name)
    return missing


def strip_compensation(variables: dict) -> dict:
    """``variables`` without error-compensation offsets (for a run that must not use them, or weights about
    to change: an offset is only right for the weights and ranges it was measured with); ``variables`` itself
    when it holds none."""
    if not offsets(variables):
        return variables
    def strip(tree: Any, runtime: bool) -> Any:
        if not hasattr(tree, "items"):
            return tree
        return {k: strip(v, runtime) for k, v in tree.items()
                if not (k.startswith(OFFSET_PREFIX) if not runtime else k == RUNTIME_OFFSET_KEY)}
    out = dict(variables)
    if "quant" in out:
        out["quant"] = strip(out["quant"], False)
    if "lut" in out:
        out["lut"] = strip(out["lut"], True)
    return out


def offsets(variables: dict) -> dict[tuple[str, str], np.ndarray]:
    """Every error-compensation offset in ``variables``: {(layer name, key): int32 (O,)}; the key is
    ``acc_offset_<table digest>`` (fixed tables) or ``acc_offset`` (runtime tables)."""
    found: dict[tuple[str, str], np.ndarray] = {}
    for collection, runtime in (("quant", False), ("lut", True)):
        for path, entry in _flatten(dict(variables.get(collection) or {})).items():
            for key, v in entry.items():
                if (key == RUNTIME_OFFSET_KEY) if runtime else key.startswith(OFFSET_PREFIX):
                    found[".".join(path), key] = np.asarray(v)
    return found
