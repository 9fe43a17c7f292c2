"""``wstat`` (numba, both cores): weight-stationary product rows.

For a tile of input positions and a chunk of input channels, precompute ``T[c, v, pos] = lut[v, x[c,
pos]]`` for every weight byte ``v`` that channel ``c`` actually uses (at most 256 per input element, not
per multiply). Each output channel then adds whole rows ``T[c, w[kh, kw, c, o], pos + tap offset]``:
contiguous 16-lane vector loads summed in a register over a chunk of channels and all taps (one load per
16 multiply-accumulates), the table cost amortised over all output channels and taps. When every table
entry fits in 16 bits (every 8x8-bit multiplier) the table and T are int16/uint16: a table row is 8
AVX-512 registers and 32 entries of T cost 4 ``vpermi2w`` + 3 blends instead of two memory gathers; rows
are widened exactly to int32 in the sums. Wider tables use int32 and gathers. Stride 1, or any stride for
1x1 kernels. The whole kernel (layouts included) is compiled: under `jax.jit` it is an XLA FFI custom
call (`ffi_bridge`) with the table a runtime operand.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numba
import numpy as np
from numba import carray, njit, prange

from . import ffi_bridge, xla_ffi
from .simd import HAVE_AVX512, HAVE_AVX512BW, lookup_row, rows_sum_add16
from .spec import ConvSpec, is_traced

_OUTPUTS_PER_TILE = 1280  # output positions per spatial tile (rows x cols)
_COLS_PER_TILE = 160      # at most this many output columns per tile
_T_BUDGET = 1 << 20       # bytes of precomputed product rows per channel chunk (~half of L2)
_MIN_ROWS_PER_SUM = 16    # fewest rows per register sum worth sharing offsets across images
_FLAT_BELOW = 64          # maps with fewer output columns run as one flat row per image

RATE_ROW_ADD = 6e9       # int32 row-add elements per second
RATE_ROW_ADD16 = 9e9     # the same with 16-bit rows (half the bytes)
RATE_BUILD = 3e9         # product-row entries built per second (int32 table: gathers)
RATE_BUILD16 = 1.2e10    # the same with a 16-bit table (register permutes)
RATE_OFFSETS = 5e8       # row offsets computed per second (per tile, output channel, tap)
CALL_OVERHEAD = 1e-4     # seconds per call
GROUP_OVERHEAD = 5e-4    # seconds per group
if not HAVE_AVX512:
    RATE_BUILD = 1.5e9
if not HAVE_AVX512BW:    # no 16-bit permutes: narrow tables are built like int32 ones
    RATE_BUILD16 = RATE_BUILD


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


@njit(cache=True)
def _tiles(ho, wo, threads):  # pragma: no cover - compiled
    """(rows, cols) of a spatial tile of one image: up to ~1280 outputs (fewer halo rows to build, more
    rows per product-row pass) while leaving at least two tiles per thread; a single short row (a 1x1
    layer on a small map) splits into one tile per thread only: each tile pays its row offsets per output
    channel, so halving the tiles is worth more than the balance. The images of a batch share each tile
    (`_image_groups`). ``threads``: numba's thread count (passed in: reading it in compiled code would keep
    the kernel out of numba's disk cache)."""
    col_tiles = -(-wo // _COLS_PER_TILE)
    if ho < threads:  # too few rows to share: split the columns further
        col_tiles = max(col_tiles, -(-threads // max(1, ho)))
    cols = -(-wo // col_tiles)
    rows = max(1, min(ho, _OUTPUTS_PER_TILE // cols))
    while rows > 1 and -(-ho // rows) * col_tiles < 2 * threads:
        rows = max(1, rows // 2)
    return rows, cols


@njit(cache=True)
def _image_groups(n_batch, channels, plane_bytes, taps):  # pragma: no cover - compiled
    """(images per task, channels per chunk): a tile takes as many images as fit the T budget while a
    chunk still gives every row sum at least `_MIN_ROWS_PER_SUM` rows (the images share the tile's row
    offsets), then as many channels as fit."""
    least = -(-_MIN_ROWS_PER_SUM // taps)  # channels per chunk
    images = max(1, min(n_batch, _T_BUDGET // max(1, plane_bytes * least)))
    images = -(-n_batch // -(-n_batch // images))  # equal groups
    return images, max(1, min(channels, _T_BUDGET // (images * plane_bytes)))


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


@njit(parallel=True, cache=True, boundscheck=False)
def _channel_major(xb, xc, mode, sh, sw, ho, wo):  # pragma: no cover - compiled
    """xb (N,H,W,C) bytes -> xc (groups, N, Cg, rows, cols + spare): mode 0 (1x1) the strided output
    positions as one flat row, mode 1 the whole image as one flat row, mode 2 rows kept."""
    n_batch, h, wd, channels = xb.shape
    cg = xc.shape[2]
    if mode == 0:
        for t in prange(n_batch * ho):
            n = t // ho
            i = t % ho
            for j in range(wo):
                for c in range(channels):
                    xc[c // cg, n, c % cg, 0, i * wo + j] = xb[n, i * sh, j * sw, c]
    else:
        for t in prange(n_batch * h):
            n = t // h
            r = t % h
            for q in range(wd):
                for c in range(channels):
                    if mode == 1:
                        xc[c // cg, n, c % cg, 0, r * wd + q] = xb[n, r, q, c]
                    else:
                        xc[c // cg, n, c % cg, r, q] = xb[n, r, q, c]


@njit(parallel=True, cache=True, boundscheck=False)
def _channels_last(acc, out, row_width):  # pragma: no cover - compiled
    """acc (N,O,fh,fw) -> out (N,Ho,Wo,O); a flat layout (fh == 1) reads output (i, j) at i * row_width + j."""
    n_batch, ho, wo, n_out = out.shape
    flat = acc.shape[2] == 1 and ho > 1
    for t in prange(n_batch * ho):
        n = t // ho
        i = t % ho
        for o in range(n_out):
            for j in range(wo):
                if flat:
                    out[n, i, j, o] = acc[n, o, 0, i * row_width + j]
                else:
                    out[n, i, j, o] = acc[n, o, i, j]


@njit(cache=True, boundscheck=False)
def _run(xb, wb, lut, sh, sw, dh, dw, groups, threads, out):  # pragma: no cover - compiled
    """xb (N,H,W,C) uint8 padded code bytes; wb (KH,KW,Cg,O) uint8; lut the flat table (65,536 entries:
    uint16 / int16 when every entry fits, else int32); out (N,Ho,Wo,O) int32 (overwritten).

    Layouts: 1x1 kernels subsample for the stride and treat the positions as one flat row. Maps narrower
    than `_FLAT_BELOW` output columns are flattened too (each image is one row of H * W inputs, tap
    (kh, kw) at offset kh * dh * W + kw * dw; the kw - 1 wrapped columns per row are computed and
    dropped): no lanes lost to padding a short row to 16, no halo rows per tile. Wider maps keep rows."""
    n_batch, h, wd, channels = xb.shape
    kh_n, kw_n, cg, n_out = wb.shape
    _, ho, wo, _ = out.shape
    taps = kh_n * kw_n
    tap_r = np.empty(taps, dtype=np.int64)
    tap_c = np.empty(taps, dtype=np.int64)
    for kh in range(kh_n):
        for kw in range(kw_n):
            tap_r[kh * kw_n + kw] = kh * dh
            tap_c[kh * kw_n + kw] = kw * dw
    if kh_n == 1 and kw_n == 1:
        mode, fh, fw, in_rows, in_cols, row_width = 0, 1, ho * wo, 1, ho * wo, wo
    elif wo < _FLAT_BELOW:
        mode, fh, fw, in_rows, in_cols, row_width = 1, 1, ho * wd, 1, h * wd, wd
        for t in range(taps):
            tap_c[t] = tap_r[t] * wd + tap_c[t]
            tap_r[t] = 0
    else:
        mode, fh, fw, in_rows, in_cols, row_width = 2, ho, wo, h, wd, wo
    spare = 32 + tap_c.max() if fh == 1 else 32  # the flat layout's last taps read past the image
    xc = np.zeros((groups, n_batch, cg, in_rows, in_cols + spare), dtype=np.uint8)
    _channel_major(xb, xc, mode, sh, sw, ho, wo)
    rows, cols = _tiles(fh, fw, threads)
    og = n_out // groups
    acc = np.empty((n_batch, n_out, fh, fw), dtype=np.int32)
    for g in range(groups):
        wt, slot, used, n_used = _weight_prep(wb[:, :, :, g * og:(g + 1) * og])
        plane = ((rows + tap_r.max()) * ((cols + 15) // 16 * 16 + tap_c.max()) * lut.itemsize
                 * max(1, n_used.max()))
        images, chunk = _image_groups(n_batch, cg, plane, taps)
        _wstat(xc[g], wt.reshape(cg, taps, og), slot, used, n_used, lut, tap_r, tap_c, rows, cols, chunk,
               images, acc[:, g * og:(g + 1) * og])
    _channels_last(acc, out, row_width)


def wstat_host(x: np.ndarray, w: np.ndarray, lut: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The ``wstat`` kernel on concrete arrays (int32 result). Stride must be 1 unless the kernel is 1x1."""
    xb = np.ascontiguousarray(np.asarray(x) & 0xFF, dtype=np.uint8)
    wb = np.ascontiguousarray(np.asarray(w) & 0xFF, dtype=np.uint8)
    kh_n, kw_n, _, n_out = wb.shape
    if (kh_n, kw_n) != (1, 1) and spec.stride != (1, 1):
        raise ValueError("wstat needs stride 1 (or a 1x1 kernel)")
    ho, wo = spec.output_hw(xb.shape[1:3], (kh_n, kw_n))
    out = np.empty((xb.shape[0], ho, wo, n_out), dtype=np.int32)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    with xla_ffi.KERNEL_LOCK:
        _run(xb, wb, ffi_bridge.narrow_table(lut).reshape(-1), sh, sw, dh, dw, spec.groups, numba.get_num_threads(),
             out)
    return out


@njit(cache=True, boundscheck=False)
def _execute(frame, lut):  # pragma: no cover - compiled into the XLA FFI handler
    """Operands x (N,H,W,C) uint8, w (KH,KW,Cg,O) uint8, the table, params (sh, sw, dh, dw, groups,
    threads) int32; result (N,Ho,Wo,O) int32, written in place."""
    _, x_at, _, x_dims = xla_ffi.buffer(frame, 0, False)
    _, w_at, _, w_dims = xla_ffi.buffer(frame, 1, False)
    _, p_at, _, _ = xla_ffi.buffer(frame, 3, False)
    _, out_at, _, out_dims = xla_ffi.buffer(frame, 0, True)
    x = carray(xla_ffi.as_voidptr(x_at), xla_ffi.dims4(x_dims), dtype=np.uint8)
    w = carray(xla_ffi.as_voidptr(w_at), xla_ffi.dims4(w_dims), dtype=np.uint8)
    out = carray(xla_ffi.as_voidptr(out_at), xla_ffi.dims4(out_dims), dtype=np.int32)
    p = carray(xla_ffi.as_voidptr(p_at), (6,), dtype=np.int32).astype(np.int64)
    xla_ffi.lock()
    _run(x, w, lut, p[0], p[1], p[2], p[3], p[4], p[5], out)
    xla_ffi.unlock()


def _handler(frame):  # pragma: no cover - compiled
    if xla_ffi.is_execution(frame):
        ffi_bridge.run_with_table(frame, 2, _execute, True)
    return 0


TARGET = "jaxdepth_wstat"


def wstat_conv(x, w, lut, spec: ConvSpec) -> jax.Array:
    """jittable ``wstat`` on padded codes: the host kernel on concrete arrays, an XLA FFI call under
    tracing (the table, traced or not, a runtime operand)."""
    if not is_traced(x, w, lut):
        return jnp.asarray(wstat_host(np.asarray(x), np.asarray(w), np.asarray(lut), spec))
    if tuple(w.shape[:2]) != (1, 1) and spec.stride != (1, 1):
        raise ValueError("wstat needs stride 1 (or a 1x1 kernel)")
    ho, wo = spec.output_hw(tuple(x.shape[1:3]), tuple(w.shape[:2]))
    tail = (ho, wo, w.shape[3])
    xb, wb = ffi_bridge.code_bytes(jnp.asarray(x)), ffi_bridge.code_bytes(jnp.asarray(w))
    target = ffi_bridge.register(TARGET, _handler)
    if target is None:
        return ffi_bridge.callback_call(wstat_host, (x.shape[0],) + tail, xb, wb, lut, spec)
    params = np.array([*spec.stride, *spec.dilation, spec.groups, numba.get_num_threads()], np.int32)
    return ffi_bridge.ffi_call(target, tail, xb, wb, ffi_bridge.table_for_call(lut), params)


def supports(problem) -> str | None:
    kh_n, kw_n, _, _ = problem.w_shape
    if (kh_n, kw_n) != (1, 1) and problem.spec.stride != (1, 1):
        return "needs stride 1 (or a 1x1 kernel)"
    return None


def _narrow(problem) -> bool:
    """True when the table runs as 16-bit rows (a traced table is assumed to: every 8x8-bit multiplier)."""
    return problem.table is None or ffi_bridge.narrow_table(problem.table).itemsize == 2


def estimate(problem) -> float:
    n_batch, _, _, channels = problem.x_shape
    kh_n, kw_n, _, n_out = problem.w_shape
    (dh, dw), og = problem.spec.dilation, n_out // problem.spec.groups
    ho, wo = problem.spec.output_hw(problem.x_shape[1:3], (kh_n, kw_n))
    w_in = problem.x_shape[2]
    if (kh_n, kw_n) == (1, 1):  # the layouts of _run: flat positions, flat rows, or rows
        fh, fw, halo_r, halo_c = 1, ho * wo, 0, 0
    elif wo < _FLAT_BELOW:
        fh, fw, halo_r, halo_c = 1, ho * w_in, 0, (kh_n - 1) * dh * w_in + (kw_n - 1) * dw
    else:
        fh, fw, halo_r, halo_c = ho, wo, (kh_n - 1) * dh, (kw_n - 1) * dw
    rows, cols = _tiles(fh, fw, numba.get_num_threads())
    tiles = n_batch * -(-fh // rows) * -(-fw // cols)
    halo = (rows + halo_r) * (cols + halo_c)
    used = min(256, og * kh_n * kw_n)
    build = tiles * halo * channels * used
    narrow = _narrow(problem)
    plane = (rows + halo_r) * (-(-cols // 16) * 16 + halo_c) * (2 if narrow else 4) * used
    images, _ = _image_groups(n_batch, channels // problem.spec.groups, plane, kh_n * kw_n)
    offsets = tiles // images * n_out * channels // problem.spec.groups * kh_n * kw_n  # shared by a group
    padded = -(-cols // 16) * 16 / cols * fh * fw / (ho * wo)  # 16-lane rows; flat rows' wrapped columns
    return (problem.macs * padded / (RATE_ROW_ADD16 if narrow else RATE_ROW_ADD)
            + build / (RATE_BUILD16 if narrow else RATE_BUILD)
            + offsets / RATE_OFFSETS
            + CALL_OVERHEAD + GROUP_OVERHEAD * (problem.spec.groups - 1))


def warmup() -> None:
    """Compile (or load from numba's cache) the kernel and its FFI handler."""
    x, w = np.zeros((1, 4, 20, 2), np.int32), np.zeros((3, 3, 2, 2), np.int32)
    signed = np.zeros((256, 256), np.int32)
    signed[0, 0] = -1
    for table in (np.zeros((256, 256), np.int32), signed):
        wstat_host(x, w, table, ConvSpec())
    ffi_bridge.register(TARGET, _handler)
