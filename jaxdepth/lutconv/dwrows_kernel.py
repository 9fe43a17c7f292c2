"""``dwrows`` (numba, both cores): depthwise layers (groups == C == O) as table-row lookups over whole
rows of one channel, any stride and dilation.

Per band of output rows and block of 16 channels, the input is transposed to channel-major bytes (stride
phases side by side), then per channel and tap the weight byte's table row is looked up along whole rows
(`simd.lookup_add_rows`: 32 products per ``vpermi2w`` with a 16-bit table) and added to int32
accumulators. The kernel reads the caller's unpadded codes and writes the pad bytes itself. Under
`jax.jit` it is an XLA FFI custom call (`ffi_bridge`), the table a runtime operand.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numba
import numpy as np
from numba import carray, njit, prange

from . import ffi_bridge, xla_ffi
from .simd import HAVE_AVX512, HAVE_AVX512BW, lookup_add_rows, strided_load16
from .spec import ConvSpec, is_traced

Pads = tuple[tuple[int, int], tuple[int, int]]

_DW_BAND_BYTES = 1 << 16  # channel-major input bytes per band and 16 channels (L1-sized)
RATE_DW_ROWS16 = 6e9     # lookups-and-adds per second with a 16-bit table (permutes)
RATE_DW_ROWS = 2e9       # the same with an int32 table (gathers from the row)
DW_LAYOUT_COST = 2e-10   # seconds per input / output element (to channel-major bytes and back)
CALL_OVERHEAD = 1e-4     # seconds per call
if not HAVE_AVX512:
    RATE_DW_ROWS = 1e9
if not HAVE_AVX512BW:    # no 16-bit permutes
    RATE_DW_ROWS16 = RATE_DW_ROWS


# cache=False: called from cached jitted code (lutconv/README.md, "numba's disk cache")
@njit(parallel=True, cache=False, boundscheck=False)
def _dw_rows(x, roffs, lut, sh, sw, dh, dw, kh_n, kw_n, rows, row, pad_top, pad_left, h, wd, pad_byte,
             out):  # pragma: no cover - compiled
    """x (N,H0,W0,C) codes (uint8 or int32: the low byte is used); roffs (KH*KW, C) weight byte * 256;
    out (N,Ho,Wo,C) int32 (overwritten). The convolution runs over x padded to (h, wd) with ``pad_top`` rows
    and ``pad_left`` columns before it, padded positions holding ``pad_byte`` (the padding is written while
    transposing: no padded copy of x is made).
    One task per (image, band of ``rows`` output rows); per block of 16 channels the band's input rows
    are transposed into channel-major bytes ``buf[c, r, p, m] = x[r, m * sw + p, c]`` (the stride phases
    of a row side by side, so each tap reads contiguous bytes; ``row`` >= every tap's whole 32-lane
    blocks), then per channel and tap `lookup_add_rows` adds the table row of the tap's weight byte
    looked up along the band's rows, and the block is written back channels-last (one 64-byte line per
    position)."""
    n_batch, h0, w0, channels = x.shape
    _, ho, wo, _ = out.shape
    wop = (wo + 31) // 32 * 32
    bands = (ho + rows - 1) // rows
    xflat = x.reshape(-1)
    oflat = out.reshape(-1)
    for task in prange(n_batch * bands):
        n = task // bands
        i0 = task % bands * rows
        nr = min(rows, ho - i0)
        r0 = i0 * sh
        nr_in = min(h - r0, (nr - 1) * sh + (kh_n - 1) * dh + 1)
        plane = nr_in * sw * row
        buf = np.empty(16 * plane + 64, dtype=np.uint8)  # spare: whole 32-lane blocks
        acc = np.empty(16 * nr * wop, dtype=np.int32)
        for c0 in range(0, channels, 16):
            c1 = min(c0 + 16, channels)
            for r in range(nr_in):  # transpose: 16-lane strided gathers along a row phase, the 16
                for ph in range(sw):  # channels of the block back to back (their source lines stay in L1)
                    dst = (r * sw + ph) * row
                    m_n = (wd - ph + sw - 1) // sw
                    src_row = r0 + r - pad_top
                    if src_row < 0 or src_row >= h0:  # a padding row
                        m_lo, m_hi = m_n, m_n
                    else:  # phase columns m with source column m * sw + ph - pad_left inside x
                        m_lo = min(m_n, max(0, (pad_left - ph + sw - 1) // sw))
                        m_hi = max(m_lo, min(m_n, (w0 + pad_left - ph + sw - 1) // sw))
                    for c in range(c0, c1):
                        base = (c - c0) * plane + dst
                        buf[base:base + m_lo] = pad_byte
                        buf[base + m_hi:base + m_n] = pad_byte
                    if m_hi == m_lo:
                        continue
                    src = ((n * h0 + src_row) * w0 + m_lo * sw + ph - pad_left) * channels
                    m = m_lo
                    # (x is gathered as dwords: stay 3 bytes clear of its end)
                    while m + 16 <= m_hi and src + (m - m_lo + 15) * sw * channels + c1 + 3 < xflat.size:
                        for c in range(c0, c1):
                            strided_load16(buf, (c - c0) * plane + dst + m, xflat,
                                           src + (m - m_lo) * sw * channels + c, sw * channels)
                        m += 16
                    for m in range(m, m_hi):
                        for c in range(c0, c1):
                            buf[(c - c0) * plane + dst + m] = xflat[src + (m - m_lo) * sw * channels + c] & 0xFF
            acc[:] = 0
            for c in range(c0, c1):
                for kh in range(kh_n):
                    for kw in range(kw_n):
                        col = kw * dw
                        start = (c - c0) * plane + (kh * dh * sw + col % sw) * row + col // sw
                        lookup_add_rows(acc, (c - c0) * nr * wop, wop, lut, roffs[kh * kw_n + kw, c], buf, start,
                                        sh * sw * row, wo, nr)
            for r in range(nr):  # back to channels-last: one 16-lane gather per position
                for j in range(wo):
                    dst = ((n * ho + i0 + r) * wo + j) * channels + c0
                    if c1 - c0 == 16:
                        strided_load16(oflat, dst, acc, r * wop + j, nr * wop)
                    else:
                        for c in range(c0, c1):
                            oflat[dst + c - c0] = acc[((c - c0) * nr + r) * wop + j]


@njit(cache=True, boundscheck=False)
def _dw_rows_host(x, roffs, lut, p, out):  # pragma: no cover - compiled
    """`_dw_rows` for the host path, cached (``p``: `_dw_geometry`'s 12 parameters, then the pad code)."""
    _dw_rows(x, roffs, lut, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], out)


def dwrows_host(x: np.ndarray, w: np.ndarray, lut: np.ndarray, spec: ConvSpec,
                pads: Pads = ((0, 0), (0, 0)), pad_code: int = 0) -> np.ndarray:
    """The ``dwrows`` kernel on concrete arrays (int32 result): depthwise layers (groups == C == O), any
    stride and dilation. Channel-major rows of bytes per band of output rows, one table row per (channel,
    tap): 32 lookups are 4 register permutes with a 16-bit table (int32 tables: gathers from the row).
    ``x`` is the unpadded input; ``pads`` rows and columns of ``pad_code`` surround it."""
    x = _dw_codes(np.asarray(x))
    (ho, wo), params = _dw_geometry(x.shape, np.shape(w), spec, pads)
    out = np.empty((x.shape[0], ho, wo, x.shape[3]), dtype=np.int32)
    with xla_ffi.KERNEL_LOCK, xla_ffi.kernel_opt_level():
        _dw_rows_host(x, _dw_row_offsets(np.asarray(w, np.int32)), ffi_bridge.narrow_table(lut).reshape(-1),
                      np.array([*params, int(pad_code) & 0xFF], np.int64), out)
    return out


def _dw_codes(x: np.ndarray) -> np.ndarray:
    """x as `dwrows_host` reads it: C-contiguous uint8 or int32 (the kernel uses the low byte), int8 viewed
    as uint8, other integer dtypes converted to int32."""
    if x.dtype == np.int8:
        return np.ascontiguousarray(x).view(np.uint8)
    return np.ascontiguousarray(x if x.dtype in (np.uint8, np.int32) else x.astype(np.int32))


def _dw_geometry(x_shape, w_shape, spec: ConvSpec, pads: Pads) -> tuple[tuple[int, int], tuple[int, ...]]:
    """((Ho, Wo), params) of a dwrows call on an unpadded input: the output size and the kernel's scalar
    parameters (sh, sw, dh, dw, kh, kw, rows, row, pad_top, pad_left, padded H, padded W), where ``rows``
    is output rows per band and ``row`` bytes per transposed input row phase."""
    kh_n, kw_n = w_shape[:2]
    n_batch, h0, w0, _ = x_shape
    if not _one_filter_per_channel(x_shape, w_shape, spec.groups):
        raise ValueError(f"dwrows needs a depthwise layer (groups == C == O), got x {tuple(x_shape)}, "
                         f"w {tuple(w_shape)}, groups {spec.groups}")
    (pt, pb), (pl, pr) = pads
    h, wd = h0 + pt + pb, w0 + pl + pr
    ho, wo = spec.output_hw((h, wd), (kh_n, kw_n))
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    wop = -(-wo // 32) * 32
    row = -(-max(-(-wd // sw), (kw_n - 1) * dw // sw + wop) // 16) * 16
    rows = _dw_band_rows(ho, n_batch, 16 * sh * sw * row)
    return (ho, wo), (sh, sw, dh, dw, kh_n, kw_n, rows, row, pt, pl, h, wd)


@njit(cache=True, boundscheck=False)
def _dw_row_offsets(w):  # pragma: no cover - compiled
    """w (KH, KW, 1, C) int32 codes -> (KH * KW, C) int64 offsets of each weight byte's table row."""
    kh_n, kw_n, _, channels = w.shape
    roffs = np.empty((kh_n * kw_n, channels), dtype=np.int64)
    for kh in range(kh_n):
        for kw in range(kw_n):
            for c in range(channels):
                roffs[kh * kw_n + kw, c] = (w[kh, kw, 0, c] & 0xFF) * 256
    return roffs


def _dw_band_rows(ho: int, n_batch: int, bytes_per_row: int) -> int:
    """Output rows per dwrows band: at least two bands per thread, a 16-channel block of the band's
    input bytes within `_DW_BAND_BYTES`."""
    threads = numba.get_num_threads()
    rows = -(-ho * n_batch // (2 * threads))
    return int(max(1, min(ho, rows, _DW_BAND_BYTES // max(1, bytes_per_row))))


@njit(cache=True, boundscheck=False)
def _execute(frame, lut):  # pragma: no cover - compiled into the XLA FFI handlers
    """Run dwrows on an XLA FFI call frame: arguments x (N,H,W,C) uint8 (unpadded), w (KH,KW,1,C) int32,
    the table (given here as ``lut``), params (15,) int32 (`_dw_geometry`, the pad byte, threads,
    exclusive); result
    (N,Ho,Wo,C) int32, written in place."""
    _, x_at, _, x_dims = xla_ffi.buffer(frame, 0, False)
    _, w_at, _, w_dims = xla_ffi.buffer(frame, 1, False)
    _, params_at, _, _ = xla_ffi.buffer(frame, 3, False)
    _, out_at, _, out_dims = xla_ffi.buffer(frame, 0, True)
    x = carray(xla_ffi.as_voidptr(x_at), xla_ffi.dims4(x_dims), dtype=np.uint8)
    w = carray(xla_ffi.as_voidptr(w_at), xla_ffi.dims4(w_dims), dtype=np.int32)
    out = carray(xla_ffi.as_voidptr(out_at), xla_ffi.dims4(out_dims), dtype=np.int32)
    p = carray(xla_ffi.as_voidptr(params_at), (15,), dtype=np.int32).astype(np.int64)  # as the host passes them
    roffs = _dw_row_offsets(w)
    xla_ffi.begin(p[13], p[14])
    _dw_rows(x, roffs, lut, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], out)
    xla_ffi.end(p[14])


def _handler(frame):  # pragma: no cover - compiled (a traced table: any dtype)
    return ffi_bridge.run_any(frame, _execute, True)


def _handler_u16(frame):  # pragma: no cover - compiled
    return ffi_bridge.run_fixed(frame, _execute, np.uint16)


def _handler_s16(frame):  # pragma: no cover - compiled
    return ffi_bridge.run_fixed(frame, _execute, np.int16)


def _handler_s32(frame):  # pragma: no cover - compiled
    return ffi_bridge.run_fixed(frame, _execute, np.int32)


FFI = ffi_bridge.FfiKernel("jaxdepth_dwrows", {"any": _handler, "u16": _handler_u16, "s16": _handler_s16,
                                              "s32": _handler_s32})


def dwrows_conv(x, w, lut, spec: ConvSpec, pads: Pads = ((0, 0), (0, 0)), pad_code: Any = 0) -> jax.Array:
    """jittable dwrows on the unpadded input: the host kernel on concrete arrays, an XLA FFI call under
    tracing (XLA's own buffers, no Python and no copies on the way, the padding written by the kernel, the
    table a runtime operand)."""
    if not is_traced(x, w, lut, pad_code):
        return jnp.asarray(dwrows_host(np.asarray(x), np.asarray(w), np.asarray(lut), spec, pads, int(pad_code)))
    (ho, wo), params = _dw_geometry(tuple(x.shape), tuple(w.shape), spec, pads)
    target = FFI.target(lut)
    if target is None:
        xp = jnp.pad(jnp.asarray(x, jnp.int32), ((0, 0), *pads, (0, 0)), constant_values=pad_code)
        return ffi_bridge.callback_call(lambda x, w, t: dwrows_host(x, w, t, spec), (x.shape[0], ho, wo, x.shape[3]),
                                        xp, w, lut)
    share = xla_ffi.call_threads()
    params = jnp.concatenate([jnp.asarray(params, jnp.int32), jnp.asarray(pad_code, jnp.int32).reshape(1) & 0xFF,
                              jnp.asarray([share.threads, share.exclusive], jnp.int32)])
    return ffi_bridge.ffi_call(target, (ho, wo, x.shape[3]), ffi_bridge.code_bytes(jnp.asarray(x)),
                               jnp.asarray(w, jnp.int32), ffi_bridge.table_for_call(lut), params)


def _one_filter_per_channel(x_shape, w_shape, groups: int) -> bool:
    """The layer shape dwrows computes: depthwise with one filter per channel (groups == C == O)."""
    return w_shape[2] == 1 and groups == x_shape[3] == w_shape[3]


def supports(problem) -> str | None:
    if _one_filter_per_channel(problem.x_shape, problem.w_shape, problem.spec.groups) and problem.x_shape[3] > 1:
        return None
    return "depthwise layers only"


def estimate(problem) -> float:
    n_batch, h, w, channels = problem.x_shape
    ho, wo = problem.spec.output_hw(problem.x_shape[1:3], problem.w_shape[:2])
    narrow = problem.table is None or ffi_bridge.narrow_table(problem.table).itemsize == 2
    lanes = -(-wo // 32) * 32 / wo
    return (problem.macs * lanes / (RATE_DW_ROWS16 if narrow else RATE_DW_ROWS)
            + n_batch * h * w * channels * DW_LAYOUT_COST + n_batch * ho * wo * channels * DW_LAYOUT_COST
            + CALL_OVERHEAD)


def warmup() -> None:
    """Compile (or load from numba's cache) the kernel and its FFI handler."""
    x = np.zeros((1, 4, 20, 2), dtype=np.int32)
    lut = np.zeros((256, 256), dtype=np.int32)
    signed = lut.copy()
    signed[0, 0] = -1  # a table that narrows to int16 (the zero table narrows to uint16)
    for codes in (x, x.astype(np.uint8)):  # what models pass (int32 codes) and bytes
        for table in (lut, signed):
            dwrows_host(codes, np.zeros((3, 3, 1, 2), np.int32), table, ConvSpec(groups=2), ((1, 1), (1, 1)))
    FFI.register("u16")
    FFI.register("s16")
