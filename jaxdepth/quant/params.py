"""Quantisation parameters and the code <-> real mappings (the one reference semantics).

Two modes, fixed by the multiplier's signedness:

* signed tables: symmetric int8. ``code = clip(round(v / s), -128, 127)``, zero point 0.
  Weights per output channel (or per tensor), activations per tensor.
* unsigned tables: affine uint8. ``code = clip(round(v / s) + z, 0, 255)``; the real value is
  ``s * (code - z)``. Weights per output channel (or per tensor) with their own zero points.

Rounding is round-half-to-even (``jnp.round``) everywhere.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_TINY = 1e-8


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QParams:
    """Scale(s) and zero point(s) of one tensor; ``signed`` selects int8 vs uint8 codes.

    ``scale`` and ``zero_point`` are scalars (per tensor) or 1-D arrays over the last axis
    (per output channel). A pytree, so it can live in Flax variables and orbax checkpoints.
    """

    scale: Any
    zero_point: Any
    signed: bool = dataclasses.field(metadata=dict(static=True), default=True)

    @property
    def code_range(self) -> tuple[int, int]:
        return (-128, 127) if self.signed else (0, 255)


def _is_traced(*values: Any) -> bool:
    return any(isinstance(v, jax.core.Tracer) for v in values)


def count_non_finite(values: Any) -> int:
    """How many NaN / infinite values concrete float ``values`` hold (0 for integer or traced values,
    which cannot be inspected inside jit)."""
    if _is_traced(values):
        return 0
    a = np.asarray(values)
    return int(a.size - np.count_nonzero(np.isfinite(a))) if a.dtype.kind in "fc" else 0


def check_finite(values: Any, what: str) -> None:
    """Raise ValueError naming ``what`` and the count when concrete ``values`` hold NaN or infinity
    (traced values, inside jit, cannot be checked here)."""
    bad = count_non_finite(values)
    if bad:
        raise ValueError(f"{what}: {bad} of {np.size(values)} value(s) are NaN or infinite; they have no "
                         "quantised code")


def activation_qparams(lo: Any, hi: Any, signed: bool) -> QParams:
    """Per-tensor activation parameters covering [lo, hi] (the range always includes 0).

    ``lo`` and ``hi`` must be finite with ``lo <= hi`` (checked unless traced inside jit)."""
    if not _is_traced(lo, hi):
        check_finite(np.asarray(lo, np.float64), "activation range lo")
        check_finite(np.asarray(hi, np.float64), "activation range hi")
        if np.any(np.asarray(lo, np.float64) > np.asarray(hi, np.float64)):
            raise ValueError(f"activation range lo={lo} > hi={hi}: give (min, max) of the activations")
    lo = jnp.minimum(jnp.asarray(lo, jnp.float32), 0.0)
    hi = jnp.maximum(jnp.asarray(hi, jnp.float32), 0.0)
    if signed:
        scale = jnp.maximum(jnp.maximum(-lo, hi) / 127.0, _TINY)
        return QParams(scale, jnp.zeros((), jnp.int32), True)
    scale = jnp.maximum((hi - lo) / 255.0, _TINY)
    zero = jnp.clip(jnp.round(-lo / scale), 0, 255).astype(jnp.int32)
    return QParams(scale, zero, False)


def weight_qparams(w: Any, signed: bool, per_channel: bool = True) -> QParams:
    """Weight parameters from the weights themselves, per output channel (last axis) or per tensor.
    Non-finite weights raise (checked unless traced inside jit)."""
    check_finite(w, "weights")
    w = jnp.asarray(w, jnp.float32)
    axes = tuple(range(w.ndim - 1)) if per_channel else tuple(range(w.ndim))
    if signed:
        scale = jnp.maximum(jnp.max(jnp.abs(w), axis=axes, initial=0.0) / 127.0, _TINY)
        return QParams(scale, jnp.zeros_like(scale, jnp.int32), True)
    lo = jnp.min(w, axis=axes, initial=0.0)
    hi = jnp.max(w, axis=axes, initial=0.0)
    scale = jnp.maximum((hi - lo) / 255.0, _TINY)
    zero = jnp.clip(jnp.round(-lo / scale), 0, 255).astype(jnp.int32)
    return QParams(scale, zero, False)


def quantize(v: Any, qp: QParams) -> jax.Array:
    """Real values -> int32 codes in the mode's range (broadcasting per-channel params on the last axis).

    +-infinity saturates to the end codes; NaN has no code (its result is undefined): `lut_conv2d`
    rejects or propagates it (see there)."""
    lo, hi = qp.code_range
    codes = jnp.round(jnp.asarray(v, jnp.float32) / qp.scale) + qp.zero_point
    return jnp.clip(codes, lo, hi).astype(jnp.int32)


def dequantize(codes: Any, qp: QParams) -> jax.Array:
    """Codes -> real values ``scale * (code - zero_point)``."""
    return (jnp.asarray(codes, jnp.float32) - qp.zero_point) * qp.scale


def fake_quantize(v: Any, qp: QParams) -> jax.Array:
    """quantize then dequantize: the real values the integer arithmetic actually sees."""
    return dequantize(quantize(v, qp), qp)


def as_numpy(qp: QParams) -> dict[str, np.ndarray]:
    """A plain dict for saving."""
    return {"scale": np.asarray(qp.scale), "zero_point": np.asarray(qp.zero_point),
            "signed": np.asarray(qp.signed)}
