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


def activation_qparams(lo: Any, hi: Any, signed: bool) -> QParams:
    """Per-tensor activation parameters covering [lo, hi] (the range always includes 0)."""
    lo = jnp.minimum(jnp.asarray(lo, jnp.float32), 0.0)
    hi = jnp.maximum(jnp.asarray(hi, jnp.float32), 0.0)
    if signed:
        scale = jnp.maximum(jnp.maximum(-lo, hi) / 127.0, _TINY)
        return QParams(scale, jnp.zeros((), jnp.int32), True)
    scale = jnp.maximum((hi - lo) / 255.0, _TINY)
    zero = jnp.clip(jnp.round(-lo / scale), 0, 255).astype(jnp.int32)
    return QParams(scale, zero, False)


def weight_qparams(w: Any, signed: bool, per_channel: bool = True) -> QParams:
    """Weight parameters from the weights themselves, per output channel (last axis) or per tensor."""
    w = jnp.asarray(w, jnp.float32)
    axes = tuple(range(w.ndim - 1)) if per_channel else tuple(range(w.ndim))
    if signed:
        scale = jnp.maximum(jnp.max(jnp.abs(w), axis=axes) / 127.0, _TINY)
        return QParams(scale, jnp.zeros_like(scale, jnp.int32), True)
    lo = jnp.minimum(jnp.min(w, axis=axes), 0.0)
    hi = jnp.maximum(jnp.max(w, axis=axes), 0.0)
    scale = jnp.maximum((hi - lo) / 255.0, _TINY)
    zero = jnp.clip(jnp.round(-lo / scale), 0, 255).astype(jnp.int32)
    return QParams(scale, zero, False)


def quantize(v: Any, qp: QParams) -> jax.Array:
    """Real values -> int32 codes in the mode's range (broadcasting per-channel params on the last axis)."""
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
