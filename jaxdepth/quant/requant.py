"""Integer requantization: int32 accumulators -> int8 / uint8 output codes, as an int8 accelerator does it.

The float-rescale layers (`jaxdepth.quant.layers`) compute ``y = s_x * s_w[o] * acc + bias[o]`` in float.
Here every step after the accumulator is integer arithmetic, with the TFLite / gemmlowp definitions:

    v    = acc + bias_q[o]                                  int32, modulo 2^32 (bias_q = round(bias / (s_x s_w[o])))
    M, e = multiplier[o], shift[o]   if v >= 0             the real factor s_x s_w[o] / s_y as M * 2^(e - 31)
           neg_multiplier[o], neg_shift[o]   otherwise      (LeakyReLU 0.2: the factor 0.2 s_x s_w[o] / s_y)
    r    = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(SatShl(v, max(e, 0)), M), max(-e, 0))
    code = clamp(r + z_y, act_min, act_max)                 activation fused as the clamp bounds

with (int64 intermediates, C semantics)

    SaturatingRoundingDoublingHighMul(a, b):   INT32_MAX if a == b == INT32_MIN, else
        p = a * b;  (p + (p >= 0 ? 2^30 : 1 - 2^30)) / 2^31      division truncating toward zero
        (= round(a * b / 2^31), ties toward +infinity)
    RoundingDivideByPOT(x, n), 0 <= n <= 31:
        mask = 2^n - 1;  threshold = (mask >> 1) + (x < 0);  (x >> n) + ((x & mask) > threshold)
        (arithmetic shift; = round(x / 2^n), ties away from zero)
    SatShl(x, l) = clamp(x * 2^l, INT32_MIN, INT32_MAX)     (TFLite leaves this overflow undefined)

`quantize_multiplier` turns a real factor into (M, e) the TFLite way: ``frexp(real) = (q, e)`` with q in
[0.5, 1), ``M = round(q * 2^31)`` (``M == 2^31`` -> ``2^30``, ``e + 1``), factors below 2^-32 become
``M = 0``, above 2^30 saturate. It works on float32 factors (the model's scales are float32, so the real
factor is computed in float32 and M's low 7 bits are zero); the JAX and NumPy versions agree bit for bit.

Output codes are int8 (symmetric, z_y = 0) for signed tables and uint8 (affine) for unsigned ones;
activations: ``none`` [qmin, qmax], ``relu`` [max(qmin, z_y), qmax], ``relu6`` [max(qmin, z_y),
min(qmax, z_y + round(6 / s_y))], ``leaky_relu`` (slope 0.2 through the negative multiplier) [qmin, qmax].

Two implementations: `requantize` (JAX, int32 only: the 64-bit product is built from 16-bit limbs, so it
runs under jit without x64) and `requantize_reference` (NumPy int64, the plain-integer reference).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ACTIVATIONS = ("none", "relu", "relu6", "leaky_relu")
LEAKY_SLOPE = 0.2
_MAX_SHIFT = 30      # largest left shift (factors up to 2^30)


# ---- the fixed-point multiplier -------------------------------------------------------------------------------
def quantize_multiplier(real: Any) -> tuple[np.ndarray, np.ndarray]:
    """(M int32, shift int32) with ``real ~= M * 2^(shift - 31)``, from float32 factors (NumPy)."""
    r = np.asarray(real, np.float32)
    if np.any(r < 0) or not np.all(np.isfinite(r)):
        raise ValueError("requantization factors must be finite and >= 0")
    q, e = np.frexp(r)
    m = np.round(q.astype(np.float64) * (1 << 31)).astype(np.int64)
    e = e.astype(np.int64)
    top = m == (1 << 31)
    m, e = np.where(top, m // 2, m), np.where(top, e + 1, e)
    under = (e < -31) | (m == 0)
    m, e = np.where(under, 0, m), np.where(under, 0, e)
    over = e > _MAX_SHIFT
    m, e = np.where(over, INT32_MAX, m), np.where(over, _MAX_SHIFT, e)
    return m.astype(np.int32), e.astype(np.int32)


def quantize_multiplier_jax(real: Any) -> tuple[jax.Array, jax.Array]:
    """`quantize_multiplier` in JAX (traceable), bit-identical to the NumPy version."""
    r = jnp.asarray(real, jnp.float32)
    q, e = jnp.frexp(r)
    m = jnp.round(q * jnp.float32(1 << 31))          # exact: q has 24 significant bits
    e = e.astype(jnp.int32)
    top = m >= jnp.float32(1 << 31)
    m = jnp.where(top, m * 0.5, m)
    e = jnp.where(top, e + 1, e)
    under = (e < -31) | (m == 0)
    over = e > _MAX_SHIFT
    mi = jnp.where(under, 0, jnp.where(over, INT32_MAX, m.astype(jnp.int32)))  # m < 2^31 here
    return mi.astype(jnp.int32), jnp.where(under, 0, jnp.where(over, _MAX_SHIFT, e)).astype(jnp.int32)


# ---- the plain-integer reference (NumPy int64) ----------------------------------------------------------------
def _srdhm_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.int64), b.astype(np.int64)
    p = a * b                                                  # |p| <= 2^62: fits int64
    nudged = p + np.where(p >= 0, 1 << 30, 1 - (1 << 30))
    q = np.sign(nudged) * (np.abs(nudged) >> 31)                # C division: truncate toward zero
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, q)


def _rdbpot_ref(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    x, n = x.astype(np.int64), n.astype(np.int64)
    mask = (np.int64(1) << n) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> n) + ((x & mask) > threshold)


def multiply_by_quantized_multiplier_reference(x: Any, m: Any, shift: Any) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier (saturating left shift) on NumPy int64 values -> int64."""
    x, m, shift = np.asarray(x, np.int64), np.asarray(m, np.int64), np.asarray(shift, np.int64)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    shifted = np.clip(x * (np.int64(1) << left), INT32_MIN, INT32_MAX)
    return _rdbpot_ref(_srdhm_ref(shifted, m), right)


# ---- the JAX version (int32 arithmetic only) ------------------------------------------------------------------
def _srdhm(a: jax.Array, b: jax.Array) -> jax.Array:
    """SaturatingRoundingDoublingHighMul for b >= 0 with 32-bit operations (64-bit product from 16-bit limbs)."""
    u32 = jnp.uint32
    neg = (a < 0) & (b > 0)
    mag = jnp.where(a < 0, (~a).astype(u32) + u32(1), a.astype(u32))       # |a| <= 2^31
    bu = b.astype(u32)
    a1, a0 = mag >> 16, mag & u32(0xFFFF)
    b1, b0 = bu >> 16, bu & u32(0xFFFF)
    lo = a0 * b0
    mid1, mid2 = a1 * b0, a0 * b1                                            # each < 2^32
    hi = a1 * b1
    hi = hi + (mid1 >> 16) + (mid2 >> 16)
    lo1 = lo + (mid1 << 16)                                                  # low halves, with carries
    hi = hi + (lo1 < lo).astype(u32)
    lo2 = lo1 + (mid2 << 16)
    hi = hi + (lo2 < lo1).astype(u32)
    nudge = jnp.where(neg, u32((1 << 30) - 1), u32(1 << 30))                # |p| + 2^30 - [p < 0]
    lo3 = lo2 + nudge
    hi = hi + (lo3 < lo2).astype(u32)
    q = ((hi << 1) | (lo3 >> 31)).astype(jnp.int32)                         # <= 2^31 - 1
    return jnp.where(neg, -q, q)


def _rdbpot(x: jax.Array, n: jax.Array) -> jax.Array:
    mask = jnp.where(n >= 31, jnp.int32(INT32_MAX),
                     jnp.left_shift(jnp.int32(1), jnp.minimum(n, 30)) - 1)
    threshold = jnp.right_shift(mask, 1) + (x < 0).astype(jnp.int32)
    return jnp.right_shift(x, n) + ((x & mask) > threshold).astype(jnp.int32)


def multiply_by_quantized_multiplier(x: Any, m: Any, shift: Any) -> jax.Array:
    """TFLite's MultiplyByQuantizedMultiplier on int32 (``m >= 0``), JAX, int32 arithmetic only."""
    x = jnp.asarray(x, jnp.int32)
    m, shift = jnp.asarray(m, jnp.int32), jnp.asarray(shift, jnp.int32)
    left, right = jnp.maximum(shift, 0), jnp.maximum(-shift, 0)
    hi_lim = jnp.right_shift(jnp.int32(INT32_MAX), left)
    lo_lim = jnp.right_shift(jnp.int32(INT32_MIN), left)
    shifted = jnp.where(x > hi_lim, INT32_MAX, jnp.where(x < lo_lim, INT32_MIN, jnp.left_shift(x, left)))
    return _rdbpot(_srdhm(shifted, m), right)


def apply_activation(y: Any, activation: str) -> jax.Array:
    """The float activation the integer clamp / negative multiplier implements."""
    if activation == "none":
        return y
    if activation == "relu":
        return jnp.maximum(y, 0.0)
    if activation == "relu6":
        return jnp.clip(y, 0.0, 6.0)
    if activation == "leaky_relu":
        return jnp.where(y >= 0, y, LEAKY_SLOPE * y)
    raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")


# ---- per-layer parameters ---------------------------------------------------------------------------------------
@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RequantParams:
    """Everything after the int32 accumulator of one layer, per output channel where it varies."""

    bias: Any             # int32 (O,): bias in the accumulator's scale
    multiplier: Any       # int32 (O,): M for v >= 0
    shift: Any            # int32 (O,)
    neg_multiplier: Any   # int32 (O,): M for v < 0 (LeakyReLU slope folded in; else = multiplier)
    neg_shift: Any        # int32 (O,)
    out_zero_point: Any   # int32 scalar
    act_min: Any          # int32 scalar: lowest output code (activation fused)
    act_max: Any          # int32 scalar
    out_scale: Any        # float32 scalar: s_y (real = s_y * (code - z_y))
    signed: bool = dataclasses.field(metadata=dict(static=True), default=True)


def requant_params(x_scale: Any, w_scale: Any, bias: Any, y_scale: Any, y_zero_point: Any, *,
                   signed: bool, activation: str = "none") -> RequantParams:
    """The integer parameters of a layer from its float32 scales and float bias (JAX, traceable)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    acc_scale = jnp.asarray(x_scale, jnp.float32) * jnp.asarray(w_scale, jnp.float32)
    bias = jnp.asarray(bias, jnp.float32)
    n_out = bias.shape[-1]
    acc_scale = jnp.broadcast_to(acc_scale, (n_out,))
    bias_q = jnp.clip(jnp.round(bias / acc_scale), -2.0 ** 31, 2.0 ** 31 - 128).astype(jnp.int32)
    y_scale = jnp.asarray(y_scale, jnp.float32)
    real = acc_scale / y_scale
    m, e = quantize_multiplier_jax(real)
    if activation == "leaky_relu":
        m_neg, e_neg = quantize_multiplier_jax(real * jnp.float32(LEAKY_SLOPE))
    else:
        m_neg, e_neg = m, e
    z = jnp.asarray(y_zero_point, jnp.int32)
    qmin, qmax = (-128, 127) if signed else (0, 255)
    lo, hi = jnp.int32(qmin), jnp.int32(qmax)
    if activation in ("relu", "relu6"):
        lo = jnp.maximum(lo, z)
    if activation == "relu6":
        hi = jnp.minimum(hi, z + jnp.round(6.0 / y_scale).astype(jnp.int32))
    return RequantParams(bias_q, m, e, m_neg, e_neg, z, lo, hi, y_scale, signed)


def requantize(acc: Any, rp: RequantParams) -> jax.Array:
    """int32 accumulators (..., O) -> output codes (int32 values in the code range), JAX."""
    v = jnp.asarray(acc, jnp.int32) + rp.bias                                   # wraps modulo 2^32
    pos = v >= 0
    r = multiply_by_quantized_multiplier(v, jnp.where(pos, rp.multiplier, rp.neg_multiplier),
                                         jnp.where(pos, rp.shift, rp.neg_shift))
    r = jnp.clip(r, -(1 << 30), 1 << 30)        # so adding z_y cannot wrap (the clamp below is unchanged)
    return jnp.clip(r + rp.out_zero_point, rp.act_min, rp.act_max)


def requantize_reference(acc: Any, rp: RequantParams) -> np.ndarray:
    """`requantize` in NumPy int64 (the plain-integer reference)."""
    acc = np.asarray(acc, np.int64)
    v = acc + np.asarray(rp.bias, np.int64)
    v = (v + (1 << 31)) % (1 << 32) - (1 << 31)                                 # int32 wrap-around
    pos = v >= 0
    r = multiply_by_quantized_multiplier_reference(
        v, np.where(pos, np.asarray(rp.multiplier), np.asarray(rp.neg_multiplier)),
        np.where(pos, np.asarray(rp.shift), np.asarray(rp.neg_shift)))
    out = np.clip(r + int(rp.out_zero_point), int(rp.act_min), int(rp.act_max))
    return out.astype(np.int32)


def dequantize_output(codes: Any, rp: RequantParams) -> jax.Array:
    """The real value the output codes stand for: ``s_y * (code - z_y)``."""
    return (jnp.asarray(codes, jnp.float32) - rp.out_zero_point.astype(jnp.float32)) * rp.out_scale
