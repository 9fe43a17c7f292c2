"""``lowrank``: tables that are exactly a short sum of integer outer products run through XLA's int8 conv.

Many tables are ``lut = sum_s a_s b_s^T`` with a few integer vectors: the exact product (one term),
operand-truncated multipliers, broken-array multipliers (one term per kept partial-product row), many
EvoApprox circuits (mul8u_2AC: integer rank 11), and any table whose error a few outer products reproduce. Then

    acc[n, i, j, o] = sum_s conv(a_s[w_byte], b_s[x_byte])[n, i, j, o]

and each term is an ordinary convolution of small integers. `decompose` finds such a factorisation with
exact integer arithmetic (row reduction over the integers: the basis rows generate every table row with
integer coefficients; LLL then shortens the basis so the factors stay small) and verifies ``A @ B == lut``
exactly before it is used.

`int8_plan` rewrites it for XLA's int8 x int8 -> int32 convolution (with VNNI, several times the float32
rate: int8 dot products through XLA's YNNPACK fusion), trying the table as it is and as the exact product plus
its error (whose factors are often small on both sides), with either side LLL-shortened: the table's first row and column are split off as
``u[w] + v[x]``; each factor is centred (the constant moves into u or v) and, when it still spans more
than 256 values, written in signed base-256 digits; every (a digit, b digit) pair is one int8 term with a
power-of-two weight. Terms of equal weight are stacked along the input channels into one convolution.
Then

    acc = sum_shift conv_int8(stack of b digits[x], stack of a digits[w]) << shift
          + sum over the window of v[x] (per group)  +  sum over the kernel of u[w] (per output channel)

all in int32 with wrap-around: every step is a ring operation modulo 2^32, so the result equals the
definition's int32 accumulation bit for bit (integer convolutions are exact; there is no float rounding).
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from .api import window_sums
from .simd import HAVE_VNNI
from .spec import ConvSpec

MAX_TERMS = 24         # integer rank searched for; the cost model decides whether the terms pay off
MAX_CONVS = 48         # int8 (a digit, b digit) terms beyond this: never faster than the LUT kernels


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
    ortho, mu = _gram_schmidt(b)
    k = 1
    while k < len(b):
        for j in range(k - 1, -1, -1):  # size reduction; mu row k updated in place (b_k's GS vector is unchanged)
            q = int(round(mu[k, j]))
            if q:
                b[k] = b[k] - q * b[j]
                mu[k, :j] -= q * mu[j, :j]
                mu[k, j] -= q
        norms = np.einsum("ij,ij->i", ortho, ortho)
        if norms[k] >= (delta - mu[k, k - 1] ** 2) * norms[k - 1]:
            k += 1
        else:
            b[k], b[k - 1] = b[k - 1], b[k]
            ortho, mu = _gram_schmidt(b)
            k = max(k - 1, 1)
    return np.array(b, dtype=np.int64)


def _gram_schmidt(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Gram-Schmidt vectors (r, n) and coefficients mu (r, r) of the rows, from a QR factorisation."""
    q, r = np.linalg.qr(np.array(rows, dtype=np.float64).T)
    diag = np.diag(r)
    return (q * diag).T, (r / diag[:, None]).T


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
    coef.setflags(write=False)
    basis.setflags(write=False)
    return coef, basis



@dataclasses.dataclass(frozen=True)
class Int8Plan:
    """``lut[w, x] == sum_s (a[s, w] * b[s, x] << shift[s]) + u[w] + v[x]`` exactly (int64), every a, b
    entry in [-128, 127]; u and v are int64 (used modulo 2^32)."""

    a: np.ndarray      # (S, 256) int8 weight-side factors, indexed by the weight byte
    b: np.ndarray      # (S, 256) int8 input-side factors, indexed by the input byte
    shift: np.ndarray  # (S,) power of two of each term
    u: np.ndarray      # (256,) per weight byte
    v: np.ndarray      # (256,) per input byte

    @property
    def terms(self) -> int:
        return int(self.a.shape[0])

    def table(self) -> np.ndarray:
        """The table the plan computes (int64), for verification."""
        a, b = self.a.astype(np.int64), self.b.astype(np.int64)
        return (a.T << self.shift[None, :]) @ b + self.u[:, None] + self.v[None, :]


def _centre(vec: np.ndarray) -> tuple[np.ndarray, int]:
    """(vec - c, c) with the constant c chosen so the centred values fit [-2^k, 2^k) as tightly as possible."""
    c = (int(vec.max()) + int(vec.min()) + 1) // 2
    return vec - c, c


def _digits(vec: np.ndarray) -> list[np.ndarray]:
    """Signed base-256 digits in [-128, 127] with vec == sum_i digit_i << 8 i (vec centred)."""
    out, rest = [], vec.astype(np.int64)
    while True:
        low = ((rest + 128) & 0xFF) - 128
        out.append(low)
        rest = (rest - low) >> 8
        if not rest.any():
            return out


def int8_plan(table: np.ndarray) -> Optional[Int8Plan]:
    """The int8 convolution plan of ``table`` (see the module doc), verified exactly; None when the table
    has no factorisation of at most `MAX_TERMS` terms or needs more than `MAX_CONVS` int8 terms. Cached."""
    t = np.ascontiguousarray(table, dtype=np.int32)
    key = hashlib.sha1(t.tobytes()).hexdigest()
    if key not in _PLANS:
        _PLANS[key] = _int8_plan(t.astype(np.int64))
    return _PLANS[key]


_PLANS: dict[str, Optional[Int8Plan]] = {}


def _int8_plan(t: np.ndarray) -> Optional[Int8Plan]:
    """The plan with the fewest int8 terms among: the table factorised as it is, and the exact product
    (signed or unsigned bytes) as one term plus the factorised error (an approximate multiplier's error
    often has small factors on both sides, where the table's own basis has one side wide); each with the
    basis over input bytes or over weight bytes."""
    plans = []
    for base in (None, np.arange(256) - ((np.arange(256) & 0x80) << 1), np.arange(256)):
        for transpose in (False, True):
            tt = np.ascontiguousarray(t.T) if transpose else t
            plan = _plan_from_rows(tt, base)
            plans.append(_transposed(plan) if transpose else plan)
    plans = [p for p in plans if p is not None and np.array_equal(p.table(), t)]  # never an unverified plan
    if not plans:
        return None
    plan = min(plans, key=lambda p: (p.terms, len(set(p.shift.tolist()))))
    for arr in (plan.a, plan.b, plan.shift, plan.u, plan.v):
        arr.setflags(write=False)
    return plan


def _transposed(plan: Optional[Int8Plan]) -> Optional[Int8Plan]:
    return None if plan is None else Int8Plan(plan.b, plan.a, plan.shift, plan.v, plan.u)


def _split_power_of_two(vec: np.ndarray) -> tuple[np.ndarray, int]:
    """(vec >> p, p) for the largest p with 2^p dividing every entry (vec non-zero)."""
    p = 0
    while not np.any(vec & ((1 << (p + 1)) - 1)):
        p += 1
    return vec >> p, p


def _plan_from_rows(t: np.ndarray, base: Optional[np.ndarray] = None) -> Optional[Int8Plan]:
    """Plan from the integer row basis of ``t - base base^T`` (rows: weight bytes, columns: input bytes)
    plus the term ``base base^T`` when given: with the basis LLL-reduced (short input-side factors), and with
    the coefficients LLL-reduced instead (short weight-side factors), whichever needs fewer int8 terms."""
    rest = t if base is None else t - np.outer(base, base)
    u = rest[:, 0].copy()
    v = rest[0, :] - rest[0, 0]
    m = rest - u[:, None] - v[None, :]
    fac = decompose(m.astype(np.int32)) if np.abs(m).max() < 2**31 else None
    if fac is None:
        return None
    candidates = [fac]
    coef = fac[0]
    if coef.any() and np.linalg.matrix_rank(coef.astype(np.float64)) == coef.shape[1]:
        short_coef = _lll(coef.T).T
        basis = _coefficients(m.T, short_coef.T)  # integer basis with short_coef @ basis == m, if one exists
        if basis is not None:
            candidates.append((short_coef, basis.T))
    if base is not None:
        candidates = [(np.concatenate([c, base[:, None]], axis=1), np.concatenate([b, base[None, :]], axis=0))
                      for c, b in candidates]
    plans = [_plan_from_factors(u, v, coef, basis) for coef, basis in candidates]
    plans = [p for p in plans if p is not None]
    return min(plans, key=lambda p: p.terms) if plans else None


def _plan_from_factors(u: np.ndarray, v: np.ndarray, coef: np.ndarray, basis: np.ndarray) -> Optional[Int8Plan]:
    """Centre, split into base-256 digits and collect the int8 terms of ``u + v + coef @ basis``."""
    a_list, b_list, shifts = [], [], []
    for a_vec, b_vec in zip(coef.T.astype(np.int64), basis.astype(np.int64)):
        if not a_vec.any() or not b_vec.any():
            continue
        a_vec, ca = _centre(a_vec)
        v = v + ca * b_vec              # (a_c + ca) b = a_c b + ca b
        b_vec, cb = _centre(b_vec)
        u = u + cb * a_vec              # a_c (b_c + cb) = a_c b_c + cb a_c
        if not a_vec.any() or not b_vec.any():
            continue
        (a_vec, pa), (b_vec, pb) = _split_power_of_two(a_vec), _split_power_of_two(b_vec)
        for i, a_digit in enumerate(_digits(a_vec)):
            for j, b_digit in enumerate(_digits(b_vec)):
                if a_digit.any() and b_digit.any():
                    a_list.append(a_digit)
                    b_list.append(b_digit)
                    shifts.append(pa + pb + 8 * (i + j))
    if len(a_list) > MAX_CONVS:
        return None
    if not a_list:  # a table that is only u[w] + v[x] (e.g. zero): one zero term keeps shapes simple
        a_list, b_list, shifts = [np.zeros(256, np.int64)], [np.zeros(256, np.int64)], [0]
    return Int8Plan(np.array(a_list, np.int8), np.array(b_list, np.int8), np.array(shifts, np.int64), u, v)


def supports(table: Optional[np.ndarray]) -> Optional[str]:
    """None when `lowrank_conv` can run exactly on this table, else the reason."""
    if table is None:
        return "the table is traced (its factorisation is computed from a concrete table)"
    if int8_plan(table) is None:
        return (f"the table is not an exact sum of <= {MAX_TERMS} integer outer products "
                f"(<= {MAX_CONVS} int8 terms)")
    return None


# Cost model of XLA's int8 convolution on CPU: multiply-accumulates per second
# RATE_INT8 * C / (C + C_HALF) * O / (O + O_HALF) for C stacked input channels, plus the byte -> factor lookups of every input and weight
# element per term, the int32 partial sums per convolution, and the window sums of v. The constants are fitted on this
# project's hosts: with VNNI, over 1x1 and 3x3 layer shapes (16..2208 input channels, 32..1104 outputs) on the
# AVX-512 host (see bench/results/compare.md); without, on conv2 and up1.convA on the AVX2 host (see
# bench/results/paired.md and table_structure.md).
RATE_INT8 = 3.6e11
if not HAVE_VNNI:  # no int8 dot products: XLA's int8 convolution gains little over its float32 one,
    RATE_INT8 = 7e10  # far less than with VNNI (rate fitted on the AVX2-only host)
RATE_INT8_C_HALF = 48
RATE_INT8_O_HALF = 8
RATE_INT8_GROUPED = 1.2e8  # grouped / depthwise int8 convolution: no fast path in XLA's CPU backend
MAP_COST = 1e-9            # seconds per input or weight element and term
PARTIAL_COST = 1e-9        # seconds per output element and convolution
WINDOW_COST = 2e-9         # seconds per input element for the window sums of v
CALL_COST = 5e-5           # seconds per convolution


def estimate(problem) -> Optional[float]:
    """Predicted seconds of `lowrank_conv`."""
    if problem.table is None:
        return None
    plan = int8_plan(problem.table)
    if plan is None:
        return None
    kh, kw, cg, n_out = problem.w_shape
    x_elems = int(np.prod(problem.x_shape))
    out_elems = problem.macs // (kh * kw * cg)
    seconds = (x_elems + kh * kw * cg * n_out) * plan.terms * MAP_COST
    seconds += WINDOW_COST * x_elems if plan.v.any() else 0.0
    for _, idx in _term_chunks(plan, cg):
        macs = problem.macs * idx.size
        if problem.spec.groups != 1:
            seconds += macs / RATE_INT8_GROUPED
        else:
            c = cg * idx.size
            seconds += macs / (RATE_INT8 * c / (c + RATE_INT8_C_HALF) * n_out / (n_out + RATE_INT8_O_HALF))
        seconds += PARTIAL_COST * out_elems + CALL_COST
    return seconds


STACK_CHANNELS = 2048  # terms of equal shift share one convolution up to this many input channels per group


def _term_chunks(plan: "Int8Plan", cg: int) -> list[tuple[int, np.ndarray]]:
    """(shift, term indices) per convolution: terms of equal shift stacked along the input channels up to
    `STACK_CHANNELS` (XLA's int8 convolution slows down on longer reductions)."""
    per_conv = max(1, STACK_CHANNELS // cg)
    chunks = []
    for shift in sorted(set(plan.shift.tolist())):
        idx = np.nonzero(plan.shift == shift)[0]
        chunks += [(shift, idx[i:i + per_conv]) for i in range(0, idx.size, per_conv)]
    return chunks


def _stacked_inputs(x_bytes: jax.Array, b: np.ndarray, groups: int) -> jax.Array:
    """(N, H, W, C) bytes -> int8 (N, H, W, C * S): factor b[s] of each channel, ordered (group, term, channel).
    One gather from a (256, S) table (fewer XLA ops than one per term: faster compiles)."""
    n, h, w, c = x_bytes.shape
    vals = jnp.take(jnp.asarray(b.T), x_bytes.reshape(n, h, w, groups, c // groups), axis=0)  # (.., G, Cg, S)
    return jnp.swapaxes(vals, -1, -2).reshape(n, h, w, c * b.shape[0])


def _stacked_weights(w_bytes: jax.Array, a: np.ndarray) -> jax.Array:
    """(KH, KW, Cg, O) bytes -> int8 (KH, KW, S * Cg, O): factor a[s] of each weight, ordered (term, channel)."""
    kh, kw, _, n_out = w_bytes.shape
    vals = jnp.take(jnp.asarray(a.T), w_bytes, axis=0)                                      # (KH, KW, Cg, O, S)
    return jnp.moveaxis(vals, -1, 2).reshape(kh, kw, -1, n_out)


def _int8_conv(xs: jax.Array, ws: jax.Array, spec: ConvSpec) -> jax.Array:
    """VALID int8 convolution with int32 results, in the form XLA's CPU backend runs fastest (measured here):
    1x1 kernels without groups as one matrix product over the (strided) positions (faster than the
    convolution); spatial kernels with one zero column of padding whose extra output column is dropped (XLA
    runs padded int8 convolutions much faster than VALID ones, and the zero column adds only 1 / Wo of the
    work; a padded 1x1 convolution, by contrast, is far slower, hence the matrix product)."""
    kh, kw, _, n_out = ws.shape
    ho, wo = spec.output_hw(tuple(xs.shape[1:3]), (kh, kw))
    if kh == kw == 1 and spec.groups == 1:
        (sh, sw) = spec.stride
        xs = xs[:, :(ho - 1) * sh + 1:sh, :(wo - 1) * sw + 1:sw, :]
        out = jax.lax.dot_general(xs.reshape(-1, xs.shape[-1]), ws.reshape(-1, n_out), (((1,), (0,)), ((), ())),
                                  preferred_element_type=jnp.int32)
        return out.reshape(xs.shape[0], ho, wo, n_out)
    pad_right = 1 if kh * kw > 1 else 0
    out = jax.lax.conv_general_dilated(
        xs, ws, window_strides=spec.stride, padding=((0, 0), (0, pad_right)), rhs_dilation=spec.dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=spec.groups,
        preferred_element_type=jnp.int32)
    return out[:, :, :wo] if pad_right else out


def lowrank_conv(x: jax.Array, w: jax.Array, lut: np.ndarray, spec: ConvSpec) -> jax.Array:
    """Jittable (x, w may be traced; the table must be concrete): int32 (N, Ho, Wo, O)."""
    plan = int8_plan(np.asarray(lut))
    if plan is None:
        raise ValueError("lowrank: the table has no exact low-rank integer factorisation")
    x_bytes = jnp.asarray(x, jnp.int32) & 0xFF
    w_bytes = jnp.asarray(w, jnp.int32) & 0xFF
    kh, kw, cg, n_out = w.shape
    groups = spec.groups
    total = None
    for shift, idx in _term_chunks(plan, cg):
        part = _int8_conv(_stacked_inputs(x_bytes, plan.b[idx], groups), _stacked_weights(w_bytes, plan.a[idx]),
                          spec)
        part = jnp.left_shift(part, shift) if shift else part
        total = part if total is None else total + part
    if plan.u.any():  # sum over the kernel of u[w]: one value per output channel
        total = total + jnp.take(jnp.asarray(_wrap32(plan.u)), w_bytes).sum(axis=(0, 1, 2), dtype=jnp.int32)
    if plan.v.any():  # sum over each output's window of v[x], per group
        vx = jnp.take(jnp.asarray(_wrap32(plan.v)), x_bytes)
        vwin = window_sums(vx, (kh, kw), groups, spec.stride, spec.dilation)
        total = total + jnp.repeat(vwin, n_out // groups, axis=-1)
    return total


def _wrap32(vec: np.ndarray) -> np.ndarray:
    """int64 values modulo 2^32 as int32 (the ring the accumulation lives in)."""
    return (np.asarray(vec, np.int64) & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
