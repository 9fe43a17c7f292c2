"""Compiled CPU kernels (numba, both cores) for the normalised LUT convolution of `spec`.

Three algorithms, all bit-exact for any table (int32 accumulation, as the definition):

``direct``  (output-stationary column gather). For each input byte ``x`` the table column
            ``lut[:, x]`` is 256 contiguous ints (1 KiB, stays in L1); every output channel adds
            ``column[w_byte]``: one L1 load per multiply-accumulate, vectorised over output channels
            (AVX-512 gathers with a constant index vector per tap and channel). Depthwise layers
            (one input channel per group) vectorise over channels instead, gathering from the flat
            table at ``(x & 0xFF) + 256 * w``.
            Handles every stride, dilation and grouping; best for few output channels per group.

``wstat``   (weight-stationary product rows, stride 1). For a tile of input positions and a chunk of
            input channels, precompute ``T[c, v, pos] = lut[v, x[c, pos]]`` for every weight byte ``v``
            that channel ``c`` actually uses (at most 256 per input element, not per multiply). Each
            output channel then adds whole rows ``T[c, w[kh, kw, c, o], pos + tap offset]``:
            contiguous 16-lane vector loads summed in a register over a chunk of channels and all
            taps (one load per 16 multiply-accumulates), the table cost amortised over all output
            channels and taps. Best when a group has many output channels. When every table entry fits
            in 16 bits (every 8x8-bit multiplier: signed products |p| <= 2^14, unsigned <= 65025) the
            table and T are int16/uint16: a table row is 8 AVX-512 registers and 32 entries of T cost 4
            ``vpermi2w`` + 3 blends instead of two memory gathers (the build ~4x cheaper, T half the
            bytes); rows are widened exactly to int32 in the sums. Wider tables use int32 and gathers.

``dwrows``  (depthwise layers, any stride). Per band of output rows and block of 16 channels, the input
            is transposed to channel-major bytes (stride phases side by side), then per channel and tap
            the weight byte's table row is looked up along whole rows (`simd.lookup_add_rows`: 32
            products per ``vpermi2w`` with a 16-bit table) and added to int32 accumulators.

The gathers and vector sums are explicit (`simd`: AVX-512 ``vpgatherdd``, scalar fallback elsewhere).
All are plain host functions on numpy arrays; `direct_conv` / `wstat_conv` / `dwrows_conv` wrap them for JAX with
`jax.pure_callback` (int32 result), so they run inside `jax.jit` with traced inputs and tables.
`impl="auto"` chooses between them (and the XLA kernels) with the cost model at the end of this file.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numba
import numpy as np
from numba import carray, njit, prange

from . import xla_ffi

from .simd import (HAVE_AVX512, HAVE_AVX512BW, gather_add16, lookup_add_rows, lookup_row, strided_load16,
                   rows_sum_add16, table_gather_add16)
from .spec import ConvSpec, is_traced

Pads = tuple[tuple[int, int], tuple[int, int]]

_LOCK = xla_ffi.KERNEL_LOCK  # one kernel at a time: each one already uses every core
_OUTPUTS_PER_TILE = 1280  # wstat: output positions per spatial tile (rows x cols)
_COLS_PER_TILE = 160      # wstat: at most this many output columns per tile
_T_BUDGET = 1 << 20       # wstat: bytes of precomputed product rows per channel chunk (~half of L2)
_DW_BAND_BYTES = 1 << 16  # dwrows: channel-major input bytes per band and 16 channels (L1-sized)
_MIN_ROWS_PER_SUM = 16     # wstat: fewest rows per register sum worth sharing offsets across images
_FLAT_BELOW = 64          # wstat: maps with fewer output columns run as one flat row per image


# ----------------------------------------------------------------------------------------------
# direct: output-stationary column gather
# ----------------------------------------------------------------------------------------------
@njit(parallel=True, cache=True, fastmath=False, boundscheck=False)
def _direct(xb, wb, lut_t, sh, sw, dh, dw, groups, out):  # pragma: no cover - compiled
    """xb (N,H,W,C) uint8; wb (KH,KW,Cg,O) uint8; lut_t[x, w] = lut[w, x]; out (N,Ho,Wo,O) int32."""
    n_batch, _, _, _ = xb.shape
    kh_n, kw_n, cg, n_out = wb.shape
    _, ho, wo, _ = out.shape
    og = n_out // groups
    for r in prange(n_batch * ho):
        n = r // ho
        i = r % ho
        acc = np.empty(n_out, dtype=np.int32)
        for j in range(wo):
            acc[:] = 0
            for kh in range(kh_n):
                row = i * sh + kh * dh
                for kw in range(kw_n):
                    col = j * sw + kw * dw
                    for g in range(groups):
                        for c in range(cg):
                            column = lut_t[xb[n, row, col, g * cg + c]]
                            wrow = wb[kh, kw, c]
                            o = g * og
                            while o + 16 <= (g + 1) * og:
                                gather_add16(acc, o, column, wrow, o)
                                o += 16
                            for o in range(np.uint64(o), np.uint64((g + 1) * og)):
                                acc[o] += column[wrow[o]]
            out[n, i, j, :] = acc


@njit(parallel=True, cache=True, fastmath=False, boundscheck=False)
def _depthwise(x, w256, lut_flat, sh, sw, dh, dw, out):  # pragma: no cover - compiled
    """groups == C == O (one input channel per group): x (N,H,W,C) int32 codes; w256 (KH,KW,1,C) int32
    weight byte * 256; lut_flat = lut.ravel(); out (N,Ho,Wo,C). Vectorised over channels: 16 channels
    per gather from the flat table at (x & 0xFF) + 256 * w."""
    n_batch = x.shape[0]
    kh_n, kw_n, _, channels = w256.shape
    _, ho, wo, _ = out.shape
    for r in prange(n_batch * ho):
        n = r // ho
        i = r % ho
        acc = np.empty(channels, dtype=np.int32)
        for j in range(wo):
            acc[:] = 0
            for kh in range(kh_n):
                for kw in range(kw_n):
                    xrow = x[n, i * sh + kh * dh, j * sw + kw * dw]
                    wrow = w256[kh, kw, 0]
                    c = 0
                    while c + 16 <= channels:
                        table_gather_add16(acc, c, lut_flat, xrow, c, wrow, c)
                        c += 16
                    for c in range(c, channels):
                        acc[c] += lut_flat[(xrow[c] & 0xFF) + wrow[c]]
            out[n, i, j, :] = acc


def direct_host(x: np.ndarray, w: np.ndarray, lut: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The ``direct`` kernel on concrete arrays (int32 result)."""
    x = np.ascontiguousarray(x)
    wb = np.asarray(w) & 0xFF
    lut = np.asarray(lut, dtype=np.int32)
    kh_n, kw_n, cg, n_out = wb.shape
    ho, wo = spec.output_hw(x.shape[1:3], (kh_n, kw_n))
    out = np.empty((x.shape[0], ho, wo, n_out), dtype=np.int32)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    with _LOCK:
        if cg == 1 and spec.groups == x.shape[3] == n_out > 1:
            w256 = np.ascontiguousarray(wb.astype(np.int32) * 256)
            _depthwise(np.ascontiguousarray(x, dtype=np.int32), w256, np.ascontiguousarray(lut).reshape(-1),
                       sh, sw, dh, dw, out)
        else:
            xb = np.ascontiguousarray(x & 0xFF, dtype=np.uint8)
            _direct(xb, np.ascontiguousarray(wb, dtype=np.uint8), np.ascontiguousarray(lut.T),
                    sh, sw, dh, dw, spec.groups, out)
    return out


# ----------------------------------------------------------------------------------------------
# wstat: weight-stationary product rows (stride 1)
# ----------------------------------------------------------------------------------------------
@njit(parallel=True, cache=True, fastmath=False, boundscheck=False)
def _wstat(xc, wt, slot, used, n_used, lut, tap_r, tap_c, rows, cols, chunk, images, out):  # pragma: no cover
    """One group, stride 1. xc (N,C,H,W+pad) uint8 (spare zero columns: see wstat_host); wt (C,taps,O)
    uint8 weight bytes (channel-major: a chunk's bytes are contiguous); output (i, j) of tap t reads input
    (i + tap_r[t], j + tap_c[t]); slot[c, v]: row of byte v in T for channel c; used[c, s]: the byte of
    row s; n_used[c]; lut: the flat table (256 * w + x), int32 or, when every entry fits, int16 / uint16
    (T then holds 16-bit rows, built with register permutes and widened exactly in the row sums);
    out (N,O,Ho,Wo) int32 (overwritten).
    A task is a spatial tile of rows x cols outputs for a group of ``images`` images: the row offsets of
    each (output channel, channel chunk) are computed once and reused for every image of the group (so a
    batch costs fewer offsets per image). Rows of T and of the accumulators are padded to 16 lanes
    (padding lanes are discarded)."""
    n_batch, channels, _, _ = xc.shape
    _, taps, n_out = wt.shape
    _, _, ho, wo = out.shape
    halo_r = 0
    halo_c = 0
    for t in range(taps):
        halo_r = max(halo_r, tap_r[t])
        halo_c = max(halo_c, tap_c[t])
    row_tiles = (ho + rows - 1) // rows
    col_tiles = (wo + cols - 1) // cols
    groups = (n_batch + images - 1) // images
    cols_pad = (cols + 15) // 16 * 16
    r_in = rows + halo_r
    c_in = cols_pad + halo_c
    plane = r_in * c_in
    vmax = 0
    for c in range(channels):
        vmax = max(vmax, n_used[c])
    per_image = chunk * vmax * plane  # T elements of one image
    acc_image = n_out * rows * cols_pad
    for tile in prange(groups * row_tiles * col_tiles):
        n0 = tile // (row_tiles * col_tiles) * images
        n1 = min(n0 + images, n_batch)
        i0 = (tile // col_tiles) % row_tiles * rows
        j0 = tile % col_tiles * cols
        nr = min(rows, ho - i0)
        nc = min(cols, wo - j0)
        nr_in = nr + halo_r
        nc_in = nc + halo_c
        table = np.empty((n1 - n0) * per_image + 32, dtype=lut.dtype)
        acc = np.zeros((n1 - n0) * acc_image, dtype=np.int32)
        offs = np.empty((n_out, chunk * taps), dtype=np.int64)
        for c0 in range(0, channels, chunk):
            c1 = min(c0 + chunk, channels)
            for n in range(n0, n1):  # product rows T[n, c, v, :] = lut[v, x[n, c, :]] of this channel chunk
                for c in range(c0, c1):
                    for s in range(n_used[c]):
                        roff = np.int64(used[c, s]) * 256
                        for rr in range(nr_in):
                            tb = (n - n0) * per_image + ((c - c0) * vmax + s) * plane + rr * c_in
                            # whole 32-lane blocks: may spill into the next (later built) row
                            lookup_row(table, tb, lut, roff, xc[n, c, i0 + rr], j0, nc_in)
            k_n = (c1 - c0) * taps
            for c in range(c0, c1):  # row offsets of every output channel, streaming the chunk's weight bytes
                for t in range(taps):
                    k = (c - c0) * taps + t
                    at = (c - c0) * vmax * plane + tap_r[t] * c_in + tap_c[t]
                    for o in range(n_out):
                        offs[o, k] = at + slot[c, wt[c, t, o]] * plane
            for o in range(n_out):  # every output channel sums whole rows, 16 lanes in a register
                o_offs = offs[o]
                for n in range(n1 - n0):
                    for r in range(nr):
                        ab = n * acc_image + (o * rows + r) * cols_pad
                        for q in range(0, nc, 16):
                            rows_sum_add16(acc, ab + q, table, o_offs, k_n, n * per_image + r * c_in + q)
        for n in range(n0, n1):
            for o in range(n_out):
                for r in range(nr):
                    ab = (n - n0) * acc_image + (o * rows + r) * cols_pad
                    for q in range(nc):
                        out[n, o, i0 + r, j0 + q] = acc[ab + q]


def _tiles(ho: int, wo: int) -> tuple[int, int]:
    """(rows, cols) of a wstat spatial tile of one image: up to ~1280 outputs (fewer halo rows to build,
    more rows per product-row pass) while leaving at least two tiles per thread; a single short row (a 1x1
    layer on a small map) splits into one tile per thread only: each tile pays its row offsets per output
    channel, so halving the tiles is worth more than the balance (decoder conv2: 0.15x -> 0.17x float).
    The images of a batch share each tile (`_image_groups`)."""
    threads = numba.get_num_threads()
    col_tiles = -(-wo // _COLS_PER_TILE)
    if ho < threads:  # too few rows to share: split the columns further
        col_tiles = max(col_tiles, -(-threads // max(1, ho)))
    cols = -(-wo // col_tiles)
    rows = max(1, min(ho, _OUTPUTS_PER_TILE // cols))
    while rows > 1 and -(-ho // rows) * col_tiles < 2 * threads:
        rows = max(1, rows // 2)
    return rows, cols


def _image_groups(n_batch: int, channels: int, plane_bytes: int, taps: int) -> tuple[int, int]:
    """(images per wstat task, channels per chunk): a tile takes as many images as fit the T budget while
    a chunk still gives every row sum at least `_MIN_ROWS_PER_SUM` rows (the images share the tile's row
    offsets; a chunk too small pays an accumulator round trip per few rows), then as many channels as fit."""
    least = -(-_MIN_ROWS_PER_SUM // taps)  # channels per chunk
    images = int(max(1, min(n_batch, _T_BUDGET // max(1, plane_bytes * least))))
    images = -(-n_batch // -(-n_batch // images))  # equal groups
    return images, int(max(1, min(channels, _T_BUDGET // (images * plane_bytes))))


@njit(cache=True, boundscheck=False)
def _weight_prep(wb):  # pragma: no cover - compiled
    """wb (KH,KW,Cg,Og) weight bytes -> wt (Cg,KH,KW,Og); per input channel the bytes it uses:
    slot[c, v] (row of byte v), used[c, s] (byte of row s), n_used[c]."""
    kh_n, kw_n, channels, n_out = wb.shape
    wt = np.empty((channels, kh_n, kw_n, n_out), dtype=np.uint8)
    present = np.zeros((channels, 256), dtype=np.bool_)
    for kh in range(kh_n):
        for kw in range(kw_n):
            for c in range(channels):
                for o in range(n_out):
                    v = wb[kh, kw, c, o]
                    wt[c, kh, kw, o] = v
                    present[c, v] = True
    slot = np.zeros((channels, 256), dtype=np.int32)
    used = np.zeros((channels, 256), dtype=np.uint8)
    n_used = np.zeros(channels, dtype=np.int32)
    for c in range(channels):
        k = 0
        for v in range(256):
            if present[c, v]:
                slot[c, v] = k
                used[c, k] = v
                k += 1
        n_used[c] = k
    return wt, slot, used, n_used


def narrow_table(lut: np.ndarray) -> np.ndarray:
    """The table as uint16 or int16 when every entry fits (exactly the same values, half the bytes, and
    lookups by register permutes on AVX-512BW), else int32."""
    lut = np.asarray(lut)
    lo, hi = int(lut.min()), int(lut.max())
    if HAVE_AVX512BW and 0 <= lo and hi <= 0xFFFF:
        return np.ascontiguousarray(lut, dtype=np.uint16)
    if HAVE_AVX512BW and -0x8000 <= lo and hi <= 0x7FFF:
        return np.ascontiguousarray(lut, dtype=np.int16)
    return np.ascontiguousarray(lut, dtype=np.int32)


def wstat_host(x: np.ndarray, w: np.ndarray, lut: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The ``wstat`` kernel on concrete arrays (int32 result). Stride must be 1 unless the kernel is 1x1.

    Layouts: 1x1 kernels subsample for the stride and treat the positions as one flat row. Maps narrower
    than `_FLAT_BELOW` output columns are flattened too (each image is one row of H * W inputs, tap
    (kh, kw) at offset kh * dh * W + kw * dw; the kw - 1 wrapped columns per row are computed and
    dropped): no lanes lost to padding a short row to 16, no halo rows per tile. Wider maps keep rows."""
    x = np.asarray(x)
    wb = (np.asarray(w) & 0xFF).astype(np.uint8)
    lut = narrow_table(lut).reshape(-1)
    kh_n, kw_n, cg, n_out = wb.shape
    n_batch, h, wd, channels = x.shape
    ho, wo = spec.output_hw((h, wd), (kh_n, kw_n))
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    tap_r = np.array([kh * dh for kh in range(kh_n) for _ in range(kw_n)], dtype=np.int64)
    tap_c = np.array([kw * dw for _ in range(kh_n) for kw in range(kw_n)], dtype=np.int64)
    if kh_n == kw_n == 1:  # 1x1: subsample for the stride, then positions are a flat axis
        x = x[:, :(ho - 1) * sh + 1:sh, :(wo - 1) * sw + 1:sw, :].reshape(n_batch, 1, ho * wo, channels)
        fh, fw = 1, ho * wo
    elif (sh, sw) != (1, 1):
        raise ValueError("wstat needs stride 1 (or a 1x1 kernel)")
    elif wo < _FLAT_BELOW:  # flatten each image to one row; wrapped columns dropped at the end
        x = x.reshape(n_batch, 1, h * wd, channels)
        tap_c, tap_r = tap_r * wd + tap_c, np.zeros_like(tap_r)
        fh, fw = 1, ho * wd
    else:
        fh, fw = ho, wo
    spare = 32 + int(tap_c.max()) if fh == 1 else 32  # the flat layout's last taps read past the image
    xc = np.zeros((n_batch, channels, x.shape[1], x.shape[2] + spare), dtype=np.uint8)
    xc[..., :x.shape[2]] = np.moveaxis(x, 3, 1) & 0xFF
    rows, cols = _tiles(fh, fw)
    og = n_out // spec.groups
    out = np.empty((n_batch, n_out, fh, fw), dtype=np.int32)
    for g in range(spec.groups):
        wt, slot, used, n_used = _weight_prep(np.ascontiguousarray(wb[:, :, :, g * og:(g + 1) * og]))
        plane = ((rows + int(tap_r.max())) * (-(-cols // 16) * 16 + int(tap_c.max())) * lut.itemsize
                 * max(1, int(n_used.max())))
        images, chunk = _image_groups(n_batch, cg, plane, kh_n * kw_n)
        with _LOCK:
            _wstat(xc[:, g * cg:(g + 1) * cg], wt.reshape(cg, kh_n * kw_n, og), slot, used, n_used, lut,
                   tap_r, tap_c, rows, cols, chunk, images, out[:, g * og:(g + 1) * og])
    out = np.moveaxis(out, 1, 3)
    if fh == 1 and fw != ho * wo:  # flattened rows of width W: keep the first wo columns of each
        out = out.reshape(n_batch, ho, wd, n_out)[:, :, :wo]
    return np.ascontiguousarray(out).reshape(n_batch, ho, wo, n_out)


# ----------------------------------------------------------------------------------------------
# dwrows: depthwise layers as table-row lookups over whole rows of one channel
# ----------------------------------------------------------------------------------------------
@njit(parallel=True, cache=True, boundscheck=False)
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


def dwrows_host(x: np.ndarray, w: np.ndarray, lut: np.ndarray, spec: ConvSpec,
                pads: Pads = ((0, 0), (0, 0)), pad_code: int = 0) -> np.ndarray:
    """The ``dwrows`` kernel on concrete arrays (int32 result): depthwise layers (groups == C == O), any
    stride and dilation. Channel-major rows of bytes per band of output rows, one table row per (channel,
    tap): 32 lookups are 4 register permutes with a 16-bit table (int32 tables: gathers from the row).
    ``x`` is the unpadded input; ``pads`` rows and columns of ``pad_code`` surround it."""
    x = _dw_codes(np.asarray(x))
    (ho, wo), params = _dw_geometry(x.shape, np.shape(w), spec, pads)
    out = np.empty((x.shape[0], ho, wo, x.shape[3]), dtype=np.int32)
    with _LOCK:
        _dw_rows(x, _dw_row_offsets(np.asarray(w, np.int32)), narrow_table(lut).reshape(-1), *params,
                 int(pad_code) & 0xFF, out)
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


# ----------------------------------------------------------------------------------------------
# JAX entry points: direct call on concrete arrays, jax.pure_callback under tracing
# ----------------------------------------------------------------------------------------------
def _batched_host(host, spec: ConvSpec):
    """Host callback for pure_callback(vmap_method="expand_dims"): leading vmap axes of x are merged
    into the batch when w and the table are shared, else looped over."""

    def run(x: np.ndarray, w: np.ndarray, lut: np.ndarray) -> np.ndarray:
        lead = np.broadcast_shapes(x.shape[:-4], w.shape[:-4], lut.shape[:-2])
        if not lead:
            return host(x, w, lut, spec)
        if all(d == 1 for d in w.shape[:-4] + lut.shape[:-2]):
            flat = np.broadcast_to(x, lead + x.shape[-4:]).reshape((-1,) + x.shape[-3:])
            out = host(flat, w.reshape(w.shape[-4:]), lut.reshape(lut.shape[-2:]), spec)
            return out.reshape(lead + (x.shape[-4],) + out.shape[1:])
        xs = np.broadcast_to(x, lead + x.shape[-4:]).reshape((-1,) + x.shape[-4:])
        ws = np.broadcast_to(w, lead + w.shape[-4:]).reshape((-1,) + w.shape[-4:])
        ls = np.broadcast_to(lut, lead + lut.shape[-2:]).reshape((-1, 256, 256))
        outs = [host(a, b, c, spec) for a, b, c in zip(xs, ws, ls)]
        return np.stack(outs).reshape(lead + outs[0].shape)

    return run


def as_jax_kernel(host):
    """Wrap a host kernel ``host(x, w, lut, spec) -> int32 ndarray`` as a jittable kernel function."""

    def kernel(x, w, lut, spec: ConvSpec):
        if not is_traced(x, w, lut):
            return jnp.asarray(host(np.asarray(x), np.asarray(w), np.asarray(lut), spec))
        ho, wo = spec.output_hw(tuple(x.shape[1:3]), tuple(w.shape[:2]))
        result = jax.ShapeDtypeStruct((x.shape[0], ho, wo, w.shape[3]), jnp.int32)
        run = _batched_host(host, spec)
        # the callback copies its operands: hand over bytes (the kernels only read x & 0xFF), 4x less
        x, w = (jnp.asarray(x, jnp.int32) & 0xFF).astype(jnp.uint8), jnp.asarray(w, jnp.int32)
        if is_traced(lut):
            return jax.pure_callback(run, result, x, w, jnp.asarray(lut, jnp.int32), vmap_method="expand_dims")
        # A concrete table stays on the host, closed over by the callback: passed as an operand it would be
        # embedded as a 256 KiB constant in the compiled program once per layer (slow compiles, big HLO).
        table = np.asarray(lut, np.int32)
        return jax.pure_callback(lambda x, w: run(x, w, table), result, x, w, vmap_method="expand_dims")

    kernel.__name__ = host.__name__.replace("_host", "_conv")
    kernel.__doc__ = f"jittable wrapper (jax.pure_callback) of `{host.__name__}`"
    return kernel


direct_conv = as_jax_kernel(direct_host)
wstat_conv = as_jax_kernel(wstat_host)
_dwrows_callback_conv = as_jax_kernel(dwrows_host)


@njit(cache=True, boundscheck=False)
def _dwrows_execute(frame, lut):  # pragma: no cover - compiled into the XLA FFI handlers
    """Run dwrows on an XLA FFI call frame: arguments x (N,H,W,C) uint8 (unpadded), w (KH,KW,1,C) int32,
    the table (given here as ``lut``), params (13,) int32 (`_dw_geometry`, then the pad byte); result
    (N,Ho,Wo,C) int32, written in place."""
    _, x_at, _, x_dims = xla_ffi.buffer(frame, 0, False)
    _, w_at, _, w_dims = xla_ffi.buffer(frame, 1, False)
    _, params_at, _, _ = xla_ffi.buffer(frame, 3, False)
    _, out_at, _, out_dims = xla_ffi.buffer(frame, 0, True)
    x = carray(xla_ffi.as_voidptr(x_at), xla_ffi.dims4(x_dims), dtype=np.uint8)
    w = carray(xla_ffi.as_voidptr(w_at), xla_ffi.dims4(w_dims), dtype=np.int32)
    out = carray(xla_ffi.as_voidptr(out_at), xla_ffi.dims4(out_dims), dtype=np.int32)
    p = carray(xla_ffi.as_voidptr(params_at), (13,), dtype=np.int32).astype(np.int64)  # as the host passes them
    roffs = _dw_row_offsets(w)
    xla_ffi.lock()
    _dw_rows(x, roffs, lut, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], out)
    xla_ffi.unlock()


# One handler per 16-bit table type, each compiled (or loaded from numba's cache) on first use only.
def _dwrows_handler_u16(frame):  # pragma: no cover - compiled
    if xla_ffi.is_execution(frame):
        _dwrows_execute(frame, carray(xla_ffi.as_voidptr(xla_ffi.buffer(frame, 2, False)[1]), (65536,),
                                      dtype=np.uint16))
    return 0


def _dwrows_handler_s16(frame):  # pragma: no cover - compiled
    if xla_ffi.is_execution(frame):
        _dwrows_execute(frame, carray(xla_ffi.as_voidptr(xla_ffi.buffer(frame, 2, False)[1]), (65536,),
                                      dtype=np.int16))
    return 0


_DWROWS_HANDLERS = {np.dtype(np.uint16): ("jaxdepth_dwrows_u16", _dwrows_handler_u16),
                    np.dtype(np.int16): ("jaxdepth_dwrows_s16", _dwrows_handler_s16)}


def dwrows_conv(x, w, lut, spec: ConvSpec, pads: Pads = ((0, 0), (0, 0)), pad_code: Any = 0):
    """jittable dwrows on the unpadded input. Under tracing with a concrete table that fits 16 bits (every
    8x8-bit multiplier): an XLA FFI custom call (XLA's own buffers, no Python and no copies on the way,
    the padding written by the kernel). Concrete arrays: `dwrows_host`. Traced or wider tables, or no FFI
    bridge: `jax.pure_callback` on a padded copy."""
    if not is_traced(x, w, lut, pad_code):
        return jnp.asarray(dwrows_host(np.asarray(x), np.asarray(w), np.asarray(lut), spec, pads, int(pad_code)))
    table = None if is_traced(lut) else narrow_table(np.asarray(lut))
    if not xla_ffi.AVAILABLE or table is None or table.dtype not in _DWROWS_HANDLERS:
        xp = jnp.pad(jnp.asarray(x, jnp.int32), ((0, 0), *pads, (0, 0)), constant_values=pad_code)
        return _dwrows_callback_conv(xp, w, lut, spec)
    (ho, wo), params = _dw_geometry(tuple(x.shape), tuple(w.shape), spec, pads)
    call = jax.ffi.ffi_call(xla_ffi.register(*_DWROWS_HANDLERS[table.dtype]),
                            jax.ShapeDtypeStruct((x.shape[0], ho, wo, x.shape[3]), jnp.int32),
                            vmap_method="sequential")
    params = jnp.concatenate([jnp.asarray(params, jnp.int32), jnp.asarray(pad_code, jnp.int32).reshape(1) & 0xFF])
    return call(_code_bytes(jnp.asarray(x)), jnp.asarray(w, jnp.int32), table, params)


def _code_bytes(x: jax.Array) -> jax.Array:
    """The low byte of every code as uint8 (int8 codes: the same bytes, reinterpreted)."""
    if x.dtype == jnp.uint8:
        return x
    if x.dtype == jnp.int8:
        return jax.lax.bitcast_convert_type(x, jnp.uint8)
    return (jnp.asarray(x, jnp.int32) & 0xFF).astype(jnp.uint8)


# ----------------------------------------------------------------------------------------------
# Cost model for impl="auto" (rates measured on 2 cores of the development machine, see bench/)
# ----------------------------------------------------------------------------------------------
RATE_DIRECT = 2.5e9      # multiply-accumulates per second, direct column gather (AVX-512)
RATE_DEPTHWISE = 0.8e9   # multiply-accumulates per second, depthwise direct
RATE_ROW_ADD = 6e9       # wstat: int32 row-add elements per second
RATE_ROW_ADD16 = 9e9     # wstat: the same with 16-bit rows (half the bytes)
RATE_BUILD = 3e9         # wstat: product-row entries built per second (int32 table: gathers)
RATE_BUILD16 = 1.2e10    # wstat: the same with a 16-bit table (register permutes)
RATE_OFFSETS = 5e8       # wstat: row offsets computed per second (per tile, output channel, tap)
RATE_DW_ROWS16 = 6e9     # dwrows: lookups-and-adds per second with a 16-bit table (permutes)
RATE_DW_ROWS = 2e9       # dwrows: the same with an int32 table (gathers from the row)
DW_LAYOUT_COST = 2e-10   # dwrows: seconds per input / output element (to channel-major bytes and back)
POSITION_COST = 2e-8     # direct: seconds per output position (loop set-up, store)
CALL_OVERHEAD = 1e-4     # seconds per call
GROUP_OVERHEAD = 5e-4    # wstat: seconds per group (one compiled call each)
if not HAVE_AVX512:      # scalar table loads instead of 16-lane gathers
    RATE_DIRECT, RATE_DEPTHWISE, RATE_BUILD, RATE_DW_ROWS = 1.2e9, 0.4e9, 1.5e9, 1e9
if not HAVE_AVX512BW:    # no 16-bit permutes: narrow tables are built like int32 ones
    RATE_BUILD16, RATE_DW_ROWS16 = RATE_BUILD, RATE_DW_ROWS


def is_depthwise(problem) -> bool:
    return problem.w_shape[2] == 1 and problem.spec.groups == problem.x_shape[3] > 1


def estimate_direct(problem) -> float:
    rate = RATE_DEPTHWISE if is_depthwise(problem) else RATE_DIRECT
    n_batch, _, _, _ = problem.x_shape
    ho, wo = problem.spec.output_hw(problem.x_shape[1:3], problem.w_shape[:2])
    return problem.macs / rate + n_batch * ho * wo * POSITION_COST + CALL_OVERHEAD


def wstat_supports(problem) -> str | None:
    kh_n, kw_n, _, _ = problem.w_shape
    if (kh_n, kw_n) != (1, 1) and problem.spec.stride != (1, 1):
        return "needs stride 1 (or a 1x1 kernel)"
    return None


def estimate_wstat(problem) -> float:
    n_batch, _, _, channels = problem.x_shape
    kh_n, kw_n, _, n_out = problem.w_shape
    (dh, dw), og = problem.spec.dilation, n_out // problem.spec.groups
    ho, wo = problem.spec.output_hw(problem.x_shape[1:3], (kh_n, kw_n))
    w_in = problem.x_shape[2]
    if (kh_n, kw_n) == (1, 1):  # the layouts of wstat_host: flat positions, flat rows, or rows
        fh, fw, halo_r, halo_c = 1, ho * wo, 0, 0
    elif wo < _FLAT_BELOW:
        fh, fw, halo_r, halo_c = 1, ho * w_in, 0, (kh_n - 1) * dh * w_in + (kw_n - 1) * dw
    else:
        fh, fw, halo_r, halo_c = ho, wo, (kh_n - 1) * dh, (kw_n - 1) * dw
    rows, cols = _tiles(fh, fw)
    tiles = n_batch * -(-fh // rows) * -(-fw // cols)
    halo = (rows + halo_r) * (cols + halo_c)
    used = min(256, og * kh_n * kw_n)
    build = tiles * halo * channels * used
    narrow = problem.table is not None and narrow_table(problem.table).itemsize == 2
    plane = (rows + halo_r) * (-(-cols // 16) * 16 + halo_c) * (2 if narrow else 4) * used
    images, _ = _image_groups(n_batch, channels // problem.spec.groups, plane, kh_n * kw_n)
    offsets = tiles // images * n_out * channels // problem.spec.groups * kh_n * kw_n  # shared by a group
    padded = -(-cols // 16) * 16 / cols * fh * fw / (ho * wo)  # 16-lane rows; flat rows' wrapped columns
    return (problem.macs * padded / (RATE_ROW_ADD16 if narrow else RATE_ROW_ADD)
            + build / (RATE_BUILD16 if narrow else RATE_BUILD)
            + offsets / RATE_OFFSETS
            + CALL_OVERHEAD + GROUP_OVERHEAD * (problem.spec.groups - 1))


def _one_filter_per_channel(x_shape, w_shape, groups: int) -> bool:
    """The layer shape dwrows computes: depthwise with one filter per channel (groups == C == O)."""
    return w_shape[2] == 1 and groups == x_shape[3] == w_shape[3]


def dwrows_supports(problem) -> str | None:
    if _one_filter_per_channel(problem.x_shape, problem.w_shape, problem.spec.groups) and problem.x_shape[3] > 1:
        return None
    return "depthwise layers only"


def estimate_dwrows(problem) -> float:
    n_batch, h, w, channels = problem.x_shape
    ho, wo = problem.spec.output_hw(problem.x_shape[1:3], problem.w_shape[:2])
    narrow = problem.table is not None and narrow_table(problem.table).itemsize == 2
    lanes = -(-wo // 32) * 32 / wo
    return (problem.macs * lanes / (RATE_DW_ROWS16 if narrow else RATE_DW_ROWS)
            + n_batch * h * w * channels * DW_LAYOUT_COST + n_batch * ho * wo * channels * DW_LAYOUT_COST
            + CALL_OVERHEAD)


def warmup() -> None:
    """Compile (or load from numba's on-disk cache) every kernel on tiny inputs, so the first real call
    does not pay the compilation (a few seconds on a cold cache, milliseconds afterwards)."""
    lut = np.zeros((256, 256), dtype=np.int32)
    x = np.zeros((1, 4, 20, 2), dtype=np.int32)
    direct_host(x, np.zeros((3, 3, 2, 2), np.int32), lut, ConvSpec())
    direct_host(x, np.zeros((3, 3, 1, 2), np.int32), lut, ConvSpec(groups=2))
    wstat_host(x, np.zeros((3, 3, 2, 2), np.int32), lut, ConvSpec())
    signed = lut.copy()
    signed[0, 0] = -1  # a table that narrows to int16 (the zero table narrows to uint16)
    for codes in (x, x.astype(np.uint8)):  # what models pass (int32 codes) and bytes
        for table in (lut, signed):
            dwrows_host(codes, np.zeros((3, 3, 1, 2), np.int32), table, ConvSpec(groups=2), ((1, 1), (1, 1)))
    if xla_ffi.AVAILABLE:
        for target in _DWROWS_HANDLERS.values():
            xla_ffi.register(*target)
