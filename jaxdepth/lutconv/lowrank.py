"""``lowrank``: tables that are exactly a short sum of integer outer products run through native XLA conv.

Many tables are ``lut = sum_s a_s b_s^T`` with a few integer vectors: the exact product (one term),
operand-truncated multipliers, broken-array multipliers (one term per kept partial-product row), and any
table whose error a few outer products reproduce. Then

    acc[n, i, j, o] = sum_s conv(a_s[w_byte], b_s[x_byte])[n, i, j, o]

and each term is an ordinary convolution of small integers. `decompose` finds such a factorisation with
exact integer arithmetic (row reduction over the integers: the basis rows generate every table row with
integer coefficients; LLL then shortens the basis so the factors stay small) and verifies ``A @ B == lut`` exactly before it is used.

Exactness of the float convolutions: a term is evaluated in float32, whose integers are exact below
2^24. The reduction (KH*KW*Cg products per output) is split into channel chunks so that
``chunk_len * max|a_s| * max|b_s| < 2^24``; then every partial sum, in any summation order, is an integer
below 2^24 and exact. Each chunk is converted to int32 and the chunks and terms are summed in int32, which
is exactly the int32 accumulation of the definition.
"""
from __future__ import annotations

import hashlib
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from .spec import ConvSpec

MAX_TERMS = 8          # more terms than this: a LUT kernel is faster than that many float convolutions
F32_EXACT = 1 << 24    # float32 represents every integer of magnitude <= 2^24


def _integer_row_basis(table: np.ndarray, max_rank: int) -> Optional[np.ndarray]:
    """Echelon basis (r, 256) of the integer lattice spanned by the table rows, or None when r > max_rank
    or entries would leave int64 safely. Unimodular (Euclidean) row reduction, column by column."""
    rows = table.astype(np.int64)
    rows = rows[np.any(rows != 0, axis=1)]
    basis = []
    for col in range(rows.shape[1]):
        if rows.shape[0] == 0:
            break
        while True:
            nz = np.nonzero(rows[:, col])[0]
            if nz.size <= 1:
                break
            piv = nz[np.argmin(np.abs(rows[nz, col]))]
            q = rows[:, col] // rows[piv, col]  # floor division: remainders keep the pivot's sign
            q[piv] = 0
            rows = rows - q[:, None] * rows[piv][None, :]
            if np.abs(rows).max() > (1 << 40):
                return None
        nz = np.nonzero(rows[:, col])[0]
        if nz.size == 1:
            basis.append(rows[nz[0]].copy())
            rows = np.delete(rows, nz[0], axis=0)
            rows = rows[np.any(rows != 0, axis=1)]
            if len(basis) > max_rank:
                return None
    return np.array(basis, dtype=np.int64).reshape(len(basis), table.shape[1])


def _lll(basis: np.ndarray, delta: float = 0.99) -> np.ndarray:
    """LLL-reduce the rows of an integer basis (exact integer row operations, float Gram-Schmidt):
    the same lattice spanned by shorter rows, so the factorisation has small entries."""
    b = [row.copy() for row in basis]
    k = 1
    while k < len(b):
        for j in range(k - 1, -1, -1):  # size reduction
            ortho, mu = _gram_schmidt(b)
            q = int(round(mu[k, j]))
            if q:
                b[k] = b[k] - q * b[j]
        ortho, mu = _gram_schmidt(b)
        norms = np.einsum("ij,ij->i", ortho, ortho)
        if norms[k] >= (delta - mu[k, k - 1] ** 2) * norms[k - 1]:
            k += 1
        else:
            b[k], b[k - 1] = b[k - 1], b[k]
            k = max(k - 1, 1)
    return np.array(b, dtype=np.int64)


def _gram_schmidt(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    vecs = np.array(rows, dtype=np.float64)
    ortho = np.zeros_like(vecs)
    mu = np.eye(len(rows))
    for i, v in enumerate(vecs):
        ortho[i] = v
        for j in range(i):
            mu[i, j] = v @ ortho[j] / (ortho[j] @ ortho[j])
            ortho[i] = ortho[i] - mu[i, j] * ortho[j]
    return ortho, mu


def _coefficients(table: np.ndarray, basis: np.ndarray) -> Optional[np.ndarray]:
    """Integer A with A @ basis == table (basis rows independent), verified exactly, or None."""
    gram = basis.astype(np.float64) @ basis.T.astype(np.float64)
    coef = np.rint(np.linalg.solve(gram, basis.astype(np.float64) @ table.T.astype(np.float64)).T)
    if not np.all(np.abs(coef) < 2.0**52):
        return None
    coef = coef.astype(np.int64)
    return coef if np.array_equal(coef @ basis, table.astype(np.int64)) else None


def decompose(table: np.ndarray, max_terms: int = MAX_TERMS) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """Integer (A (256, r), B (r, 256)) with ``A @ B == table`` exactly and r <= max_terms, else None.
    Cached per table content."""
    t = np.ascontiguousarray(table, dtype=np.int32)
    key = (hashlib.sha1(t.tobytes()).hexdigest(), max_terms)
    if key not in _CACHE:
        _CACHE[key] = _decompose(t, max_terms)
    return _CACHE[key]


_CACHE: dict[tuple[str, int], Optional[tuple[np.ndarray, np.ndarray]]] = {}


def _decompose(table: np.ndarray, max_terms: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
    basis = _integer_row_basis(table, max_terms)
    if basis is None:
        return None
    if basis.shape[0] == 0:  # the zero table: one zero term
        coef, basis = np.zeros((256, 1), dtype=np.int64), np.zeros((1, 256), dtype=np.int64)
    else:
        basis = _lll(basis)
        coef = _coefficients(table, basis)
    if coef is None or not np.array_equal(coef @ basis, table.astype(np.int64)):
        return None  # never use an unverified factorisation
    if max(np.abs(coef).max(), np.abs(basis).max()) >= F32_EXACT:
        return None
    coef.setflags(write=False)
    basis.setflags(write=False)
    return coef, basis


def chunk_channels(a: np.ndarray, b: np.ndarray, taps: int, channels: int) -> int:
    """Input channels per float32 convolution so that every partial sum of a term stays below 2^24."""
    bound = int(np.abs(a).max()) * int(np.abs(b).max())
    if bound == 0:
        return channels
    per_out = (F32_EXACT - 1) // bound  # products per output that keep the sum exact
    return max(0, min(channels, per_out // taps))


def supports(table: Optional[np.ndarray], w_shape: tuple[int, ...]) -> Optional[str]:
    """None when `lowrank_conv` can run exactly on this table and weight shape, else the reason."""
    if table is None:
        return "the table is traced (its factorisation is computed from a concrete table)"
    fac = decompose(table)
    if fac is None:
        return f"the table is not an exact sum of <= {MAX_TERMS} integer outer products"
    kh, kw, cg, _ = w_shape
    per_term = [chunk_channels(a, b, kh * kw, cg) for a, b in zip(fac[0].T, fac[1])]
    if min(per_term) == 0:
        return "a single product term is too large for exact float32 partial sums"
    return None


RATE_XLA = 20e9          # float32 XLA convolution, multiply-accumulates per second (groups == 1, 1x1)
RATE_XLA_SPATIAL = 14e9  # the same for larger kernels (>= 256 output channels; fewer: see `estimate`)
RATE_XLA_GROUPED = 2e8   # XLA's grouped / depthwise float convolution on CPU is far slower


def estimate(problem) -> Optional[float]:
    """Predicted seconds: one float convolution per term (and per exactness chunk)."""
    if problem.table is None or decompose(problem.table) is None:
        return None
    coef, basis = decompose(problem.table)
    kh, kw, cg, _ = problem.w_shape
    calls = sum(-(-cg // chunk_channels(a, b, kh * kw, cg)) for a, b in zip(coef.T, basis))
    if problem.spec.groups != 1:
        rate = RATE_XLA_GROUPED
    else:  # measured: XLA's CPU convolution slows with few output channels (3x3 48 outputs: ~half rate)
        o = problem.w_shape[3]
        rate = RATE_XLA * min(1.0, (o / 192) ** 0.5) if kh * kw == 1 else RATE_XLA_SPATIAL * min(1.0, (o / 256) ** 0.5)
    return coef.shape[1] * problem.macs / rate + 2e-4 * calls


def lowrank_conv(x: jax.Array, w: jax.Array, lut: np.ndarray, spec: ConvSpec) -> jax.Array:
    """Jittable (x, w may be traced; the table must be concrete): int32 (N, Ho, Wo, O)."""
    fac = decompose(np.asarray(lut))
    if fac is None:
        raise ValueError("lowrank: the table has no exact low-rank integer factorisation")
    coef, basis = fac
    xb = jnp.asarray(x, jnp.int32) & 0xFF
    wb = jnp.asarray(w, jnp.int32) & 0xFF
    kh, kw, cg, _ = w.shape
    total = None
    for a, b in zip(coef.T, basis):
        xs = jnp.take(jnp.asarray(b, jnp.float32), xb)
        ws = jnp.take(jnp.asarray(a, jnp.float32), wb)
        step = chunk_channels(a, b, kh * kw, cg)
        for c0 in range(0, cg, step):
            c1 = min(cg, c0 + step)
            if spec.groups == 1:
                xpart, wpart = xs[..., c0:c1], ws[:, :, c0:c1, :]
            else:  # the same channel range inside every group
                xpart = xs.reshape(xs.shape[:3] + (spec.groups, cg))[..., c0:c1]
                xpart = xpart.reshape(xs.shape[:3] + (spec.groups * (c1 - c0),))
                wpart = ws[:, :, c0:c1, :]
            part = jax.lax.conv_general_dilated(
                xpart, wpart, window_strides=spec.stride, padding="VALID", rhs_dilation=spec.dilation,
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=spec.groups,
                precision=jax.lax.Precision.HIGHEST)
            part = part.astype(jnp.int32)
            total = part if total is None else total + part
    return total
