"""Parametric approximate-multiplier families, generated from their published definitions.

Naming scheme (each resolvable by `jaxdepth.multipliers.get`)::

    <family>_<u8|s8>[_<param><value>...]

    trunc_u8_k4      truncated multiplier, k = 0..15 dropped partial-product columns
    bam_s8_h2_v6     broken-array multiplier, horizontal break level h = 0..7, vertical v = 0..15
    drum_u8_k4       DRUM with a k = 1..8 bit segment
    mitchell_s8      Mitchell's logarithmic multiplier
    roba_u8          rounding-based approximate multiplier (RoBA)

``u8`` tables are unsigned (operands 0..255), ``s8`` tables signed (two's complement operands
-128..127). Every family is defined on unsigned operands ``a`` (the weight, first operand, table row)
and ``b`` (the activation, second operand, column); bits ``a_i``, ``b_j`` with ``i, j = 0..7``.

Signed (``s8``) members are SIGN-MAGNITUDE: ``f_s(a, b) = sign(a) * sign(b) * f_u(|a|, |b|)``, the
unsigned circuit applied to the magnitudes. The magnitude of -128 is 128, which still fits the 8-bit
unsigned datapath (``f_u`` is defined on 0..255), so -128 needs no special case. Because ``f_u(0, b)``
is 0 for every family here, the sign of zero does not matter. (EvoApprox's signed circuits are
two's-complement designs, e.g. Baugh-Wooley arrays; these sign-magnitude members are a different,
well-defined choice and are not meant to reproduce them.)

Definitions, unsigned ``f_u(a, b)``:

trunc (truncated multiplier)
    The partial-product bits of the ``k`` least-significant columns are not generated:
    ``sum(a_i b_j 2^(i+j) for i + j >= k)``. ``k = 0`` is exact. No correction constant is added.

bam (broken-array multiplier; H. R. Mahdiani, A. Ahmadi, S. M. Fakhraie, C. Lucas, "Bio-inspired
imprecise computational blocks for efficient VLSI implementation of soft-computing applications",
IEEE TCAS-I 57(4), 2010)
    The carry-save array is "broken" by omitting cells: the horizontal break level ``h`` (HBL) omits
    the partial-product rows of the ``h`` least-significant bits of the second operand, the vertical
    break level ``v`` (VBL) every cell right of column ``v``:
    ``sum(a_i b_j 2^(i+j) for j >= h and i + j >= v)``. ``h = v = 0`` is exact and ``h = 0`` is the
    truncated multiplier with ``k = v``. This is the cell-omission rule of the reference generator
    ArithsGen (``UnsignedBrokenArrayMultiplier(horizontal_cut=h, vertical_cut=v)``, ehw-fit/ariths-gen),
    whose remaining adders are exact, so the output is exactly the sum of the kept bits.

drum (dynamic range unbiased multiplier; S. Hashemi, R. I. Bahar, S. Reda, "DRUM: A Dynamic Range
Unbiased Multiplier for approximate applications", ICCAD 2015)
    Each operand ``x`` with leading one at bit ``t >= k`` is replaced by its ``k``-bit segment from
    the leading one with the segment's LSB forced to 1 (the unbiasing), shifted back:
    ``x' = ((x >> s) | 1) << s`` with ``s = t - k + 1``. Operands below ``2^k`` are kept exactly.
    ``f_u(a, b) = a' * b'`` (the k x k product is exact). ``k = 8`` is exact for 8-bit operands.

mitchell (J. N. Mitchell, "Computer multiplication and division using binary logarithms", IRE Trans.
Electronic Computers EC-11(4), 1962)
    With ``a = 2^k1 (1 + x1)``, ``b = 2^k2 (1 + x2)`` (``k`` = leading-one position, ``0 <= x < 1``),
    ``log2`` is approximated by ``k + x`` and the antilog likewise piecewise linearly:
    ``2^(k1+k2) (1 + x1 + x2)`` if ``x1 + x2 < 1`` else ``2^(k1+k2+1) (x1 + x2)``; 0 if an operand is 0.
    With full-width fractions this is an integer for 8-bit operands (``2^k1 x1 = a - 2^k1``), so the
    final truncation to an integer is exact. Mitchell never overestimates (error <= 0, about -11.1 %
    at worst).

roba (rounding-based approximate multiplier; R. Zendegani, M. Kamal, M. Bahadori, A. Afzali-Kusha,
M. Pedram, "RoBA Multiplier: A Rounding-Based Approximate Multiplier for High-Speed yet
Energy-Efficient Digital Signal Processing", IEEE TVLSI 25(2), 2017)
    Each operand is rounded to the nearest power of two ``x_r`` (for ``x = 3 * 2^(t-1)``, exactly
    between two powers, the larger one is taken, as in the paper) and
    ``f_u(a, b) = a_r b + a b_r - a_r b_r`` (= ``a b - (a - a_r)(b - b_r)``); 0 if an operand is 0.
"""
from __future__ import annotations

import re
from typing import Callable

import numpy as np

from .core import Multiplier
from .registry import register_generator

_BITS = 8
_U = np.arange(256, dtype=np.int64)


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Number of significant bits of each non-negative integer (0 for 0)."""
    out = np.zeros_like(x)
    for t in range(16):
        out = np.where(x >> t > 0, t + 1, out)
    return out


def partial_product_sum(keep: np.ndarray) -> np.ndarray:
    """Unsigned (256, 256) table ``sum(a_i b_j 2^(i+j) for keep[i, j])`` (``a`` = row operand)."""
    bits = (_U[:, None] >> np.arange(_BITS)) & 1  # bits[x, i] = x_i
    table = np.zeros((256, 256), dtype=np.int64)
    for i, j in zip(*np.nonzero(keep)):
        table += np.outer(bits[:, i], bits[:, j]) << (i + j)
    return table


def _columns() -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(_BITS), np.arange(_BITS), indexing="ij")  # i (of a), j (of b)


def truncated_table(k: int) -> np.ndarray:
    """Unsigned truncated multiplier: partial-product bits with ``i + j >= k`` only."""
    i, j = _columns()
    return partial_product_sum(i + j >= k)


def bam_table(h: int, v: int) -> np.ndarray:
    """Unsigned broken-array multiplier: bits with ``j >= h`` (HBL) and ``i + j >= v`` (VBL)."""
    i, j = _columns()
    return partial_product_sum((j >= h) & (i + j >= v))


def drum_operand(x: np.ndarray, k: int) -> np.ndarray:
    """DRUM's k-bit approximation of unsigned operands (exact below ``2^k``)."""
    x = np.asarray(x, dtype=np.int64)
    s = np.maximum(_bit_length(x) - k, 0)
    return np.where(s > 0, ((x >> s) | 1) << s, x)


def drum_table(k: int) -> np.ndarray:
    a = drum_operand(_U, k)
    return np.outer(a, a)


def mitchell_table() -> np.ndarray:
    t = np.maximum(_bit_length(_U) - 1, 0)
    lead = np.where(_U > 0, 1 << t, 0)
    r = _U - lead  # 2^t * fraction
    a_lead, b_lead = lead[:, None], lead[None, :]
    cross = r[:, None] * b_lead + r[None, :] * a_lead  # 2^(k1+k2) (x1 + x2)
    small = a_lead * b_lead + cross
    large = 2 * cross
    table = np.where(cross < a_lead * b_lead, small, large)
    return np.where((_U[:, None] == 0) | (_U[None, :] == 0), 0, table)


def roba_operand(x: np.ndarray) -> np.ndarray:
    """Nearest power of two (ties ``3 * 2^(t-1)`` round up); 0 stays 0."""
    x = np.asarray(x, dtype=np.int64)
    t = np.maximum(_bit_length(x) - 1, 0)
    lead = np.where(x > 0, 1 << t, 0)
    below = np.where(t > 0, (x >> np.maximum(t - 1, 0)) & 1, 0)  # bit t-1
    return np.where(below == 1, 2 * lead, lead)


def roba_table() -> np.ndarray:
    r = roba_operand(_U)
    a, b = _U[:, None], _U[None, :]
    ar, br = r[:, None], r[None, :]
    return ar * b + a * br - ar * br


def sign_magnitude(unsigned_table: np.ndarray) -> np.ndarray:
    """Signed table in byte convention from an unsigned circuit applied to operand magnitudes."""
    v = np.where(_U >= 128, _U - 256, _U)  # value of each two's-complement byte
    mag, sgn = np.abs(v), np.sign(v)
    return np.asarray(unsigned_table)[np.ix_(mag, mag)] * np.outer(sgn, sgn)


def _make(family: str, signed: bool, params: dict[str, int], unsigned_table: np.ndarray,
          reference: str) -> Multiplier:
    kind = "s8" if signed else "u8"
    suffix = "".join(f"_{k}{v}" for k, v in params.items())
    table = sign_magnitude(unsigned_table) if signed else unsigned_table
    meta = {"source": "generated", "family": family, "params": dict(params), "reference": reference,
            "signed_encoding": "sign-magnitude" if signed else "unsigned"}
    return Multiplier(f"{family}_{kind}{suffix}", table.astype(np.int32), signed, meta)


def _check(name: str, value: int, lo: int, hi: int) -> int:
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} is out of range {lo}..{hi}")
    return value


def truncated(k: int, signed: bool = False) -> Multiplier:
    """Truncated multiplier dropping the ``k`` (0..15) least-significant partial-product columns."""
    _check("k", k, 0, 2 * _BITS - 1)
    return _make("trunc", signed, {"k": k}, truncated_table(k), "truncated array multiplier")


def bam(h: int, v: int, signed: bool = False) -> Multiplier:
    """Broken-array multiplier (Mahdiani et al., IEEE TCAS-I 2010), HBL ``h`` 0..7, VBL ``v`` 0..15."""
    _check("h", h, 0, _BITS - 1)
    _check("v", v, 0, 2 * _BITS - 1)
    return _make("bam", signed, {"h": h, "v": v}, bam_table(h, v),
                 "Mahdiani et al., IEEE TCAS-I 57(4), 2010")


def drum(k: int, signed: bool = False) -> Multiplier:
    """DRUM-k (Hashemi, Bahar, Reda, ICCAD 2015), ``k`` 1..8; ``k = 8`` is exact."""
    _check("k", k, 1, _BITS)
    return _make("drum", signed, {"k": k}, drum_table(k), "Hashemi, Bahar, Reda, ICCAD 2015")


def mitchell(signed: bool = False) -> Multiplier:
    """Mitchell's logarithmic multiplier (IRE Trans. Electronic Computers, 1962)."""
    return _make("mitchell", signed, {}, mitchell_table(), "Mitchell, IRE Trans. EC-11(4), 1962")


def roba(signed: bool = False) -> Multiplier:
    """Rounding-based approximate multiplier (Zendegani et al., IEEE TVLSI 2017)."""
    return _make("roba", signed, {}, roba_table(), "Zendegani et al., IEEE TVLSI 25(2), 2017")


_SIGN = r"(?P<s>u8|s8)"


def _register(pattern: str, build: Callable[..., Multiplier], example: str) -> None:
    def factory(m: re.Match[str]) -> Multiplier:
        args = {k: int(v) for k, v in m.groupdict().items() if k != "s"}
        try:
            return build(signed=m.group("s") == "s8", **args)
        except ValueError as err:  # get() reports unusable names as KeyError
            raise KeyError(f"multiplier {m.group(0)!r}: {err}") from None

    register_generator(pattern, factory, example)


_register(rf"trunc_{_SIGN}_k(?P<k>\d+)", truncated, "trunc_s8_k4")
_register(rf"bam_{_SIGN}_h(?P<h>\d+)_v(?P<v>\d+)", bam, "bam_u8_h2_v4")
_register(rf"drum_{_SIGN}_k(?P<k>\d+)", drum, "drum_u8_k4")
_register(rf"mitchell_{_SIGN}", mitchell, "mitchell_s8")
_register(rf"roba_{_SIGN}", roba, "roba_u8")
