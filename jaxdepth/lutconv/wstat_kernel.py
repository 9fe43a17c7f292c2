"""``wstat`` (numba, both cores): weight-stationary product rows.

For a tile of output positions and a chunk of input channels, precompute ``T[c, v, pos] = lut[v, x[c,
pos]]`` for every weight byte ``v`` that channel ``c`` uses (at most 256 per input element, not per
multiply). Each output channel then adds whole rows ``T[c, w[kh, kw, c, o], pos + tap offset]``: per
block of up to 64 positions, the rows of the chunk's (input channel, tap) pairs summed in registers
(`simd.rows_add64`: one precomputed int32 offset load per row and 64 lanes), the table cost amortised
over all output channels and taps. When every table entry fits in 16 bits (every 8x8-bit multiplier) the
table and T are int16/uint16 (half the bytes; rows widened exactly to int32 in the sums); T is built in
16 x 16 blocks from the table's columns and a 16-bit transpose (`simd.lookup_cols16`, any AVX2 CPU) or,
on AVX-512BW, per row with register permutes. Wider tables use int32 rows.

The row sums read T from L2 (the rows an output channel picks are spread over the whole chunk), so
tiles are sized to the host's L2 (`_tiles`): the tile's int32 accumulators of all output channels and one
chunk of T together stay within ~60% of it, choosing the tile and chunk that move the fewest bytes per
multiply-accumulate (row entries, accumulator reloads per chunk, build, padding lanes, idle threads).
Stride 1 (1x1 kernels: any stride); strided layers with larger kernels run as the int32 sum of their
phases' stride-1 convolutions (`_phases`). The whole kernel (layouts included) is compiled: under
`jax.jit` it is an XLA FFI custom call (`ffi_bridge`) with the table a runtime operand.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numba
import numpy as np
from numba import carray, njit, prange

from . import ffi_bridge, xla_ffi
from .simd import (HAVE_AVX512, HAVE_AVX512BW, lookup_cols16, lookup_row, rows_add16, rows_add32, rows_add64,
                   table_strips)
from .spec import ConvSpec, is_traced

_FLAT_BELOW = 64          # maps with fewer output columns run as one flat row per image
_MAX_COLS = 256           # widest tile (output columns) of the row layout


def _l2_bytes() -> int:
    """Per-core L2 cache size (Linux sysfs), 1 MiB when unknown."""
    try:
        text = open("/sys/devices/system/cpu/cpu0/cache/index2/size").read().strip().upper()
        return int(text[:-1]) * (1 << 10 if text.endswith("K") else 1 << 20) if text[-1] in "KM" else int(text)
    except (OSError, ValueError, IndexError):
        return 1 << 20


L2_BYTES = _l2_bytes()
T_BUDGET = int(L2_BYTES * 0.3)    # bytes of product rows per tile and channel chunk (stay in L2 with...)
ACC_BUDGET = int(L2_BYTES * 0.3)  # ...the tile's int32 accumulators of all output channels

RATE_ROW_ADD = 1.5e10    # row-add elements per second (int32 rows)
RATE_ROW_ADD16 = 2.4e10  # the same with 16-bit rows (half the bytes)
RATE_BUILD = 3e9         # product-row entries built per second (int32 table: gathers / scalar loads)
RATE_BUILD16 = 1.6e10    # the same with a 16-bit table (transposed table columns or register permutes)
RATE_OFFSETS = 1e9       # row offsets prepared per second (once per call: output channel, input channel, tap)
ROW_ADD_OVERHEAD = 6e-10  # seconds per register sum (output channel, output row, lane block, chunk)
CALL_OVERHEAD = 1e-4     # seconds per call
GROUP_OVERHEAD = 5e-4    # seconds per group
PHASE_OVERHEAD = 2.5e-4  # seconds per phase of a strided layer (its slices, call and sum in XLA)
if not HAVE_AVX512:
    RATE_BUILD = 1.5e9


# cache=False: called from cached jitted code (lutconv/README.md, "numba's disk cache")
@njit(parallel=True, cache=False, fastmath=False, boundscheck=False)
def _wstat(xc, offs, vslot, slot, n_blocks, used, n_used, strips, lut, rows, cols, row_len, halo_r, chunk, taps,
           transposed, compact, out):  # pragma: no cover
    """One group. xc (N,C,R,L) uint8 channel-major codes (spare zero columns past every tile's reach);
    offs (chunks, O, chunk * taps) int32: the T offset of the row each (output channel, input channel of
    the chunk, tap) adds (`_offsets`); T holds ``n_blocks`` blocks of 16 rows per channel, weight byte v of
    channel c in row slot[c, v] of the channel's (`_slots`): in the byte layout vslot[c, b] is the block of
    weight bytes [16 b, 16 b + 16) (-1: channel c uses none of them); ``compact``: the channel's used bytes
    in rank order, 16 per block, built from the channel's own strips (`_compact_strips`).
    used[c, :n_used[c]]: the bytes channel c uses; strips: the 16-bit table in `simd.table_strips` layout
    (for ``transposed``; compact: the channels' strips), lut: the flat table (int32, or int16 / uint16 when
    every entry fits); out (N,O,Ho,Wo) int32 (overwritten).

    A task is a tile of ``rows`` x ``cols`` outputs of one image. Per chunk of input channels it builds
    the product rows ``T[c, v, r, s] = lut[v, x[c, i0 + r, j0 + s]]`` (r < rows + halo_r, s < row_len)
    for the weight bytes v the channel uses (the 16-byte blocks it uses): with ``transposed``, 16 x 16
    blocks from 16 table columns (`simd.lookup_cols16`, any AVX2 CPU), else one `simd.lookup_row` per
    byte and input row (register permutes on AVX-512BW, gathers or scalar loads otherwise). Then every
    output channel adds, per output row and block of up to 64 columns, the chunk's rows at its offsets
    with the sums in registers (`simd.rows_add64/32/16`), into the tile's int32 accumulators."""
    n_batch, channels, _, _ = xc.shape
    n_chunks, n_out, k_max = offs.shape
    _, _, ho, wo = out.shape
    r_in = rows + halo_r
    plane = r_in * row_len
    cols_pad = (cols + 15) // 16 * 16
    row_tiles = (ho + rows - 1) // rows
    col_tiles = (wo + cols - 1) // cols
    offs_flat = offs.reshape(-1)
    x_rows = xc.shape[2]
    x_len = xc.shape[3]
    x_flat = xc.reshape(-1)
    for tile in prange(n_batch * row_tiles * col_tiles):
        n = tile // (row_tiles * col_tiles)
        i0 = (tile // col_tiles) % row_tiles * rows
        j0 = tile % col_tiles * cols
        nr = min(rows, ho - i0)
        nc = min(cols, wo - j0)
        ncp = (nc + 15) // 16 * 16
        nr_in = nr + halo_r
        table = np.empty(chunk * n_blocks * 16 * plane + 64, dtype=lut.dtype)
        acc = np.zeros(n_out * rows * cols_pad, dtype=np.int32)
        for ci in range(n_chunks):
            c0 = ci * chunk
            c1 = min(c0 + chunk, channels)
            if compact:  # every block of a channel from its own strip (its used bytes' table rows)
                for c in range(c0, c1):
                    for b in range((n_used[c] + 15) // 16):
                        tb = ((c - c0) * n_blocks + b) * 16 * plane
                        for rr in range(nr_in):
                            xb = ((n * channels + c) * x_rows + i0 + rr) * x_len + j0
                            for sb in range(0, row_len, 16):
                                lookup_cols16(table, tb + rr * row_len + sb, plane, strips, x_flat, xb + sb,
                                              (c * n_blocks + b) * 16)
            elif transposed:  # v blocks outermost: the table strip (8 KiB) stays in L1 for the whole chunk
                for vb in range(16):
                    for c in range(c0, c1):
                        if vslot[c, vb] >= 0:
                            tb = ((c - c0) * n_blocks + vslot[c, vb]) * 16 * plane
                            for rr in range(nr_in):
                                xb = ((n * channels + c) * x_rows + i0 + rr) * x_len + j0
                                for sb in range(0, row_len, 16):
                                    lookup_cols16(table, tb + rr * row_len + sb, plane, strips, x_flat, xb + sb,
                                                  vb * 16)
            else:
                for c in range(c0, c1):
                    for s in range(n_used[c]):
                        v = np.int64(used[c, s])
                        row = (c - c0) * n_blocks * 16 + slot[c, v]
                        for rr in range(nr_in):  # whole 32-lane blocks: may spill into a later built row
                            lookup_row(table, (row * r_in + rr) * row_len, lut, v * 256,
                                       xc[n, c, i0 + rr], j0, row_len)
            k_n = (c1 - c0) * taps
            for o in range(n_out):
                ob = (ci * n_out + o) * k_max
                for r in range(nr):
                    ab = (o * rows + r) * cols_pad
                    q = 0
                    while q + 64 <= ncp:
                        rows_add64(acc, ab + q, table, offs_flat, ob, k_n, r * row_len + q)
                        q += 64
                    if q + 32 <= ncp:
                        rows_add32(acc, ab + q, table, offs_flat, ob, k_n, r * row_len + q)
                        q += 32
                    if q < ncp:
                        rows_add16(acc, ab + q, table, offs_flat, ob, k_n, r * row_len + q)
        for o in range(n_out):
            for r in range(nr):
                ab = (o * rows + r) * cols_pad
                for q in range(nc):
                    out[n, o, i0 + r, j0 + q] = acc[ab + q]


@njit(cache=True)
def _tiles(fh, fw, n_out, channels, taps, halo_r, halo_c, used, itemsize, n_batch, threads, t_budget,
           acc_budget):  # pragma: no cover - compiled
    """(rows, cols, row_len, chunk) of a tile, the cheapest by a model of the bytes each multiply-accumulate
    moves between L2 and L1: its product row entry, a share of the accumulators' load and store per chunk
    (8 / (chunk * taps)), of the build (entries per MAC x ~1.5 entry sizes: store, refill, table read), of
    lanes lost to padding and of threads idle on the last tiles. Constraints: the tile's int32
    accumulators of all ``n_out`` output channels within ``acc_budget`` bytes, and ``chunk`` input
    channels' product rows (``used`` rows of (rows + halo_r) x row_len entries each) within the rest of
    ``t_budget + acc_budget`` (so both stay in L2). Flat layouts (fh == 1) take any multiple of 16 columns;
    row layouts take whole rows of up to `_MAX_COLS` columns or an equal split of a row."""
    total = t_budget + acc_budget
    best = (1, 16, (16 + halo_c + 15) // 16 * 16, 1)
    best_cost = 1e30
    parts = 1
    while parts <= max(1, (fw + 15) // 16):
        cols = -(-fw // parts)
        if fh == 1:
            cols = min((fw + 15) // 16 * 16, max(16, (cols + 15) // 16 * 16))
        parts += 1
        if cols > _MAX_COLS and fh > 1:
            continue
        if fh == 1 and cols > 4096:
            continue
        cols_pad = (cols + 15) // 16 * 16
        row_len = (cols_pad + halo_c + 15) // 16 * 16
        for rows in range(1, fh + 1):
            acc = 4 * n_out * rows * cols_pad
            per_channel = used * (rows + halo_r) * row_len * itemsize
            if rows > 1 and (acc > acc_budget or per_channel > total - acc):
                break
            chunk = max(1, min(channels, (total - acc) // max(1, per_channel)))
            tiles = n_batch * -(-fh // rows) * -(-fw // cols)
            busy = tiles / (-(-tiles // threads) * threads)
            lanes = cols_pad * -(-fh // rows) * rows * -(-fw // cols) / (fh * fw)
            build = used * (rows + halo_r) * row_len / (rows * cols * n_out * taps)
            cost = (itemsize * lanes + 8.0 / (chunk * taps) + 1.5 * itemsize * build
                    + 24.0 / min(64, cols_pad)) / busy
            if acc > acc_budget or per_channel > total - acc:
                cost *= 4.0  # spills out of L2
            if cost < best_cost:
                best_cost = cost
                best = (rows, cols, row_len, chunk)
            if fh == 1:
                break
    return best


@njit(parallel=True, cache=False, boundscheck=False)
def _offsets(wb, slot, n_blocks, tap_r, tap_c, chunk, plane, row_len):  # pragma: no cover - compiled
    """wb (KH,KW,Cg,O) weight bytes -> offs (chunks, O, chunk * taps) int32: the offset in a chunk's product
    rows (`_wstat`) of the row of output channel o, input channel c and tap t,
    ``((c - c0) * n_blocks * 16 + slot[c, w]) * plane + tap_r[t] * row_len + tap_c[t]``."""
    kh_n, kw_n, channels, n_out = wb.shape
    taps = kh_n * kw_n
    n_chunks = (channels + chunk - 1) // chunk
    offs = np.zeros((n_chunks, n_out, chunk * taps), dtype=np.int32)
    for ci in prange(n_chunks):
        for c in range(ci * chunk, min(channels, ci * chunk + chunk)):
            for kh in range(kh_n):
                for kw in range(kw_n):
                    t = kh * kw_n + kw
                    k = (c - ci * chunk) * taps + t
                    base = (c - ci * chunk) * n_blocks * 16 * plane + tap_r[t] * row_len + tap_c[t]
                    for o in range(n_out):
                        offs[ci, o, k] = base + np.int64(slot[c, wb[kh, kw, c, o]]) * plane
    return offs


@njit(cache=True, boundscheck=False)
def _compact_blocks(n_used):  # pragma: no cover - compiled
    """Blocks per channel when T holds each channel's used weight bytes in rank order (16 per block)."""
    n_compact = 1
    for c in range(n_used.shape[0]):
        n_compact = max(n_compact, (n_used[c] + 15) // 16)
    return n_compact


@njit(cache=True, boundscheck=False)
def _compact_pays(channels, n_blocks, n_compact, native, compact, halo_r, fh, fw, n_batch,
                  strip_budget):  # pragma: no cover - compiled
    """Whether building T from per-channel strips (`_compact_strips`: ``n_compact`` blocks per channel) is
    cheaper than from the table's 16-byte blocks (``n_blocks``). ``native`` / ``compact``: each layout's
    tile (rows, cols, row_len, chunk) from `_tiles`. Per channel and tile, building costs ~1/3.5 cycle per
    entry (16 rows per block and position); the table's strips (128 KiB) stay in L2, but when the channels'
    strips exceed ``strip_budget`` bytes each tile reloads the lines it touches of every strip (at most 128
    per strip, ~1 per built position: ~3 cycles a line from L3, ~10 from memory past 4 MiB of strips).
    Making the strips: 4,096 entries per block.
    Compact wins on layers whose channels use few scattered bytes (1x1 projections to 16-24 channels), and
    loses on wide 1x1 layers with narrow tiles (DenseNet's 720 -> 192 ran markedly slower with it always on)."""
    rows_n, cols_n, len_n, _ = native
    rows_c, cols_c, len_c, _ = compact
    tiles_n = n_batch * -(-fh // rows_n) * -(-fw // cols_n)
    tiles_c = n_batch * -(-fh // rows_c) * -(-fw // cols_c)
    p_n = (rows_n + halo_r) * len_n
    p_c = (rows_c + halo_r) * len_c
    native_cost = tiles_n * n_blocks * 16.0 * p_n / 3.5
    per_block = 16.0 * p_c / 3.5
    strips = channels * n_compact * 8192
    if strips > strip_budget:  # reloaded per tile: from L3 (~3 cycles a line) or, past a few MiB, memory
        per_block += min(128, p_c) * (3.0 if strips <= (4 << 20) else 10.0)
    return tiles_c * n_compact * per_block + n_compact * 4096 * 0.5 < native_cost


@njit(cache=True, boundscheck=False)
def _slots(used, n_used, vslot, compact):  # pragma: no cover - compiled
    """slot[c, v]: the row of weight byte v among channel c's rows of T: its rank among the bytes the
    channel uses (``compact``), else its place in the channel's 16-byte blocks (vslot[c, v // 16] * 16 +
    v % 16); -1 for bytes the channel does not use."""
    channels = used.shape[0]
    slot = np.full((channels, 256), -1, dtype=np.int32)
    for c in range(channels):
        for s in range(n_used[c]):
            v = np.int64(used[c, s])
            slot[c, v] = s if compact else vslot[c, v // 16] * 16 + v % 16
    return slot


@njit(cache=True, boundscheck=False)
def _group_layout(wg, transposed, fh, fw, og, cg, taps, halo_r, halo_c, itemsize, n_batch, threads, t_budget,
                  acc_budget):  # pragma: no cover - compiled
    """A group's weight bytes (`_weight_bytes`), T's layout and the tile: (used, n_used, vslot, compact,
    blocks per channel, (rows, cols, row_len, chunk)). Compact layouts only with table-column builds."""
    used, n_used, vslot, n_blocks = _weight_bytes(wg)
    native = _tiles(fh, fw, og, cg, taps, halo_r, halo_c, n_blocks * 16, itemsize, n_batch, threads, t_budget,
                    acc_budget)
    n_compact = _compact_blocks(n_used)
    if transposed and n_compact < n_blocks:
        compact = _tiles(fh, fw, og, cg, taps, halo_r, halo_c, n_compact * 16, itemsize, n_batch, threads,
                         t_budget, acc_budget)
        if _compact_pays(cg, n_blocks, n_compact, native, compact, halo_r, fh, fw, n_batch, t_budget):
            return used, n_used, vslot, True, n_compact, compact
    return used, n_used, vslot, False, n_blocks, native


@njit(parallel=True, cache=False, boundscheck=False)
def _compact_strips(lut, used, n_used, n_blocks, strips):  # pragma: no cover - compiled
    """Channel c's strips in `simd.table_strips` layout, strip c * n_blocks + b holding the table rows of
    its used bytes 16 b .. 16 b + 15 (rank order; zero past n_used[c]):
    ``strips[((c * n_blocks + b) * 256 + x) * 16 + j] = lut[used[c, 16 b + j], x]``."""
    for c in prange(used.shape[0]):
        for b in range(n_blocks):
            base = (c * n_blocks + b) * 4096
            for j in range(16):
                s = 16 * b + j
                if s < n_used[c]:
                    row = np.int64(used[c, s]) * 256
                    for x in range(256):
                        strips[base + x * 16 + j] = lut[row + x]
                else:
                    for x in range(256):
                        strips[base + x * 16 + j] = 0


@njit(cache=True, boundscheck=False)
def _weight_bytes(wb):  # pragma: no cover - compiled
    """Per input channel of wb (KH,KW,Cg,Og) the weight bytes it uses: used[c, :n_used[c]] ascending;
    vslot[c, b]: rank of the block of bytes [16 b, 16 b + 16) among the blocks channel c uses (-1: none
    used); n_blocks: the most blocks any channel uses."""
    kh_n, kw_n, channels, n_out = wb.shape
    present = np.zeros((channels, 256), dtype=np.bool_)
    for kh in range(kh_n):
        for kw in range(kw_n):
            for c in range(channels):
                for o in range(n_out):
                    present[c, wb[kh, kw, c, o]] = True
    used = np.zeros((channels, 256), dtype=np.uint8)
    n_used = np.zeros(channels, dtype=np.int32)
    vslot = np.full((channels, 16), -1, dtype=np.int32)
    n_blocks = 1
    for c in range(channels):
        k = 0
        blocks = 0
        for v in range(256):
            if present[c, v]:
                used[c, k] = v
                k += 1
                if vslot[c, v // 16] < 0:
                    vslot[c, v // 16] = blocks
                    blocks += 1
        n_used[c] = k
        n_blocks = max(n_blocks, blocks)
    return used, n_used, vslot, n_blocks


@njit(parallel=True, cache=False, boundscheck=False)
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


@njit(parallel=True, cache=False, boundscheck=False)
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
def _run(xb, wb, lut, sh, sw, dh, dw, groups, threads, t_budget, acc_budget, build, out):  # pragma: no cover - compiled
    """xb (N,H,W,C) uint8 padded code bytes; wb (KH,KW,Cg,O) uint8; lut the flat table (65,536 entries:
    uint16 / int16 when every entry fits, else int32); out (N,Ho,Wo,O) int32 (overwritten).

    Layouts: 1x1 kernels subsample for the stride and treat the positions as one flat row. Maps narrower
    than `_FLAT_BELOW` output columns are flattened too (each image is one row of H * W inputs, tap
    (kh, kw) at offset kh * dh * W + kw * dw; the kw - 1 wrapped columns per row are computed and
    dropped): no lanes lost to padding a short row to 16, no halo rows per tile. Wider maps keep rows.
    16-bit tables build product rows from transposed table columns unless the CPU has AVX-512BW
    (register permutes per row); ``build`` 1 / 2 forces table columns / per-row lookups (0: that choice)."""
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
    halo_r = tap_r.max()
    halo_c = tap_c.max()
    og = n_out // groups
    transposed = lut.itemsize == 2 and (build == 1 or (build == 0 and not HAVE_AVX512BW))
    strips = np.empty(65536 if transposed else 1, dtype=lut.dtype)
    if transposed:
        table_strips(lut, strips)
    layouts = np.empty((groups, 6), dtype=np.int64)  # per group: rows, cols, row_len, chunk, compact, blocks
    width = in_cols
    for g in range(groups):  # tiles first: a tile reads row_len columns (+ a 32-lane block) from its first
        _, _, _, compact_g, n_blocks_g, tile = _group_layout(wb[:, :, :, g * og:(g + 1) * og], transposed, fh, fw,
                                                             og, cg, taps, halo_r, halo_c, lut.itemsize, n_batch,
                                                             threads, t_budget, acc_budget)
        rows, cols, row_len, chunk = tile
        # one entry at a time (a tuple into a row would compile numba's shape-mismatch error messages:
        # seconds of string code)
        layouts[g, 0], layouts[g, 1], layouts[g, 2], layouts[g, 3] = rows, cols, row_len, chunk
        layouts[g, 4], layouts[g, 5] = compact_g, n_blocks_g
        width = max(width, (fw - 1) // cols * cols + row_len + 32)
    xc = np.zeros((groups, n_batch, cg, in_rows, width), dtype=np.uint8)  # spare columns zero
    _channel_major(xb, xc, mode, sh, sw, ho, wo)
    acc = np.empty((n_batch, n_out, fh, fw), dtype=np.int32)
    for g in range(groups):
        wg = wb[:, :, :, g * og:(g + 1) * og]
        used, n_used, vslot, _ = _weight_bytes(wg)
        rows, cols, row_len, chunk, compact_flag, n_blocks = layouts[g]
        compact = compact_flag != 0
        slot = _slots(used, n_used, vslot, compact)
        offs = _offsets(wg, slot, n_blocks, tap_r, tap_c, chunk, (rows + halo_r) * row_len, row_len)
        group_strips = strips
        if compact:
            group_strips = np.empty(cg * n_blocks * 4096, dtype=lut.dtype)
            _compact_strips(lut, used, n_used, n_blocks, group_strips)
        _wstat(xc[g], offs, vslot, slot, n_blocks, used, n_used, group_strips, lut, rows, cols, row_len, halo_r,
               chunk, taps, transposed, compact, acc[:, g * og:(g + 1) * og])
    _channels_last(acc, out, row_width)


def _is_polyphase(w_shape: tuple[int, ...], spec: ConvSpec) -> bool:
    """A strided layer with a kernel larger than 1x1: run as stride-1 convolutions of its phases."""
    return tuple(w_shape[:2]) != (1, 1) and spec.stride != (1, 1)


def _phases(w_shape: tuple[int, ...], spec: ConvSpec) -> list[tuple[int, int]]:
    """The (p, q) phases of a strided convolution that hold kernel taps: with stride (sh, sw), output (i, j)
    adds ``lut[w[a, b], x[sh i + a, sw j + b]]`` over taps (a, b); the taps a = sh a' + p, b = sw b' + q
    read phase image ``x[p::sh, q::sw]`` at (i + a', j + b'), so the layer is the int32 sum over phases
    of stride-1 convolutions of ``x[p::sh, q::sw]`` with ``w[p::sh, q::sw]`` (the same products, regrouped:
    bit-exact, wrap-around included), each cropped to the layer's output size."""
    (sh, sw), (kh_n, kw_n) = spec.stride, w_shape[:2]
    return [(p, q) for p in range(min(sh, kh_n)) for q in range(min(sw, kw_n))]


def _sum_of_phases(conv: Callable, xb: Any, wb: Any, spec: ConvSpec, ho: int, wo: int) -> Any:
    """The strided layer as the sum of ``conv(x phase, w phase)`` (stride-1 convolutions, NumPy or traced
    arrays) over `_phases`, each cropped to (ho, wo); int32 sums wrap like the definition's accumulation."""
    (sh, sw), total = spec.stride, None
    for p, q in _phases(tuple(wb.shape), spec):
        part = conv(xb[:, p::sh, q::sw], wb[p::sh, q::sw])[:, :ho, :wo]
        total = part if total is None else total + part
    return total


def _check_spec(w_shape: tuple[int, ...], spec: ConvSpec) -> None:
    if _is_polyphase(w_shape, spec) and spec.dilation != (1, 1):
        raise ValueError("wstat runs strided layers as stride-1 phases: not with dilation (use direct)")


def wstat_host(x: np.ndarray, w: np.ndarray, lut: np.ndarray, spec: ConvSpec, build: int = 0) -> np.ndarray:
    """The ``wstat`` kernel on concrete arrays (int32 result); strided layers with kernels larger than 1x1
    as the sum of their phases' stride-1 convolutions (`_phases`). ``build``: how 16-bit product rows are
    built, 0 the CPU's best, 1 from table columns (transposes), 2 one table row per weight byte (the two
    paths are compared in the tests)."""
    xb = np.ascontiguousarray(np.asarray(x) & 0xFF, dtype=np.uint8)
    wb = np.ascontiguousarray(np.asarray(w) & 0xFF, dtype=np.uint8)
    kh_n, kw_n, _, n_out = wb.shape
    _check_spec(wb.shape, spec)
    ho, wo = spec.output_hw(xb.shape[1:3], (kh_n, kw_n))
    if _is_polyphase(wb.shape, spec):
        unit = ConvSpec(groups=spec.groups)
        return _sum_of_phases(lambda xp, wp: wstat_host(xp, wp, lut, unit, build), xb, wb, spec, ho, wo)
    out = np.empty((xb.shape[0], ho, wo, n_out), dtype=np.int32)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    with xla_ffi.KERNEL_LOCK, xla_ffi.kernel_opt_level():
        _run(xb, wb, ffi_bridge.narrow_table(lut).reshape(-1), sh, sw, dh, dw, spec.groups, numba.get_num_threads(),
             T_BUDGET, ACC_BUDGET, build, out)
    return out


@njit(cache=True, boundscheck=False)
def _execute(frame, lut):  # pragma: no cover - compiled into the XLA FFI handler
    """Operands x (N,H,W,C) uint8, w (KH,KW,Cg,O) uint8, the table, params (sh, sw, dh, dw, groups,
    threads, T budget, accumulator budget, exclusive) int32; result (N,Ho,Wo,O) int32, written in place."""
    _, x_at, _, x_dims = xla_ffi.buffer(frame, 0, False)
    _, w_at, _, w_dims = xla_ffi.buffer(frame, 1, False)
    _, p_at, _, _ = xla_ffi.buffer(frame, 3, False)
    _, out_at, _, out_dims = xla_ffi.buffer(frame, 0, True)
    x = carray(xla_ffi.as_voidptr(x_at), xla_ffi.dims4(x_dims), dtype=np.uint8)
    w = carray(xla_ffi.as_voidptr(w_at), xla_ffi.dims4(w_dims), dtype=np.uint8)
    out = carray(xla_ffi.as_voidptr(out_at), xla_ffi.dims4(out_dims), dtype=np.int32)
    p = carray(xla_ffi.as_voidptr(p_at), (9,), dtype=np.int32).astype(np.int64)
    xla_ffi.begin(p[5], p[8])
    _run(x, w, lut, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], 0, out)
    xla_ffi.end(p[8])


def _handler(frame):  # pragma: no cover - compiled (a traced table: any dtype)
    return ffi_bridge.run_any(frame, _execute, True)


def _handler_u16(frame):  # pragma: no cover - compiled
    return ffi_bridge.run_fixed(frame, _execute, np.uint16)


def _handler_s16(frame):  # pragma: no cover - compiled
    return ffi_bridge.run_fixed(frame, _execute, np.int16)


def _handler_s32(frame):  # pragma: no cover - compiled
    return ffi_bridge.run_fixed(frame, _execute, np.int32)


FFI = ffi_bridge.FfiKernel("jaxdepth_wstat", {"any": _handler, "u16": _handler_u16, "s16": _handler_s16,
                                              "s32": _handler_s32})


def wstat_conv(x, w, lut, spec: ConvSpec) -> jax.Array:
    """jittable ``wstat`` on padded codes: the host kernel on concrete arrays, an XLA FFI call under
    tracing (the table, traced or not, a runtime operand); a strided layer with a kernel larger than 1x1
    is one call per phase (`_phases`), summed in int32."""
    if not is_traced(x, w, lut):
        return jnp.asarray(wstat_host(np.asarray(x), np.asarray(w), np.asarray(lut), spec))
    _check_spec(tuple(w.shape), spec)
    ho, wo = spec.output_hw(tuple(x.shape[1:3]), tuple(w.shape[:2]))
    xb, wb = ffi_bridge.code_bytes(jnp.asarray(x)), ffi_bridge.code_bytes(jnp.asarray(w))
    if _is_polyphase(tuple(w.shape), spec):
        unit = ConvSpec(groups=spec.groups)
        return _sum_of_phases(lambda xp, wp: wstat_conv(xp, wp, lut, unit), xb, wb, spec, ho, wo)
    tail = (ho, wo, w.shape[3])
    target = FFI.target(lut)
    if target is None:
        return ffi_bridge.callback_call(wstat_host, (x.shape[0],) + tail, xb, wb, lut, spec)
    share = xla_ffi.call_threads()
    params = np.array([*spec.stride, *spec.dilation, spec.groups, share.threads, T_BUDGET, ACC_BUDGET,
                       share.exclusive], np.int32)
    return ffi_bridge.ffi_call(target, tail, xb, wb, ffi_bridge.table_for_call(lut), params)


def supports(problem) -> str | None:
    if _is_polyphase(problem.w_shape, problem.spec) and problem.spec.dilation != (1, 1):
        return "strided layers run as stride-1 phases: not with dilation"
    return None


def _narrow(problem) -> bool:
    """True when the table runs as 16-bit rows (a traced table is assumed to: every 8x8-bit multiplier)."""
    return problem.table is None or ffi_bridge.narrow_table(problem.table).itemsize == 2


def estimate(problem) -> float:
    """Predicted seconds (the model of `_tiles` and the measured rates above); a strided layer with a kernel
    larger than 1x1: the sum over its phases' stride-1 convolutions."""
    if _is_polyphase(problem.w_shape, problem.spec):
        (sh, sw), unit = problem.spec.stride, ConvSpec(groups=problem.spec.groups)
        n_batch, h, w_in, channels = problem.x_shape
        total = 0.0
        for p, q in _phases(problem.w_shape, problem.spec):
            kh_p, kw_q = -(-(problem.w_shape[0] - p) // sh), -(-(problem.w_shape[1] - q) // sw)
            x_shape = (n_batch, -(-(h - p) // sh), -(-(w_in - q) // sw), channels)
            w_shape = (kh_p, kw_q) + tuple(problem.w_shape[2:])
            total += estimate(dataclasses.replace(problem, x_shape=x_shape, w_shape=w_shape, spec=unit))
        return total + PHASE_OVERHEAD * len(_phases(problem.w_shape, problem.spec))
    n_batch, _, _, channels = problem.x_shape
    kh_n, kw_n, cg, n_out = problem.w_shape
    (dh, dw), og = problem.spec.dilation, n_out // problem.spec.groups
    ho, wo = problem.spec.output_hw(problem.x_shape[1:3], (kh_n, kw_n))
    w_in = problem.x_shape[2]
    if (kh_n, kw_n) == (1, 1):  # the layouts of _run: flat positions, flat rows, or rows
        fh, fw, halo_r, halo_c = 1, ho * wo, 0, 0
    elif wo < _FLAT_BELOW:
        fh, fw, halo_r, halo_c = 1, ho * w_in, 0, (kh_n - 1) * dh * w_in + (kw_n - 1) * dw
    else:
        fh, fw, halo_r, halo_c = ho, wo, (kh_n - 1) * dh, (kw_n - 1) * dw
    used = min(256, -(-og * kh_n * kw_n // 16) * 16)  # weight bytes per input channel (16-byte blocks)
    narrow = _narrow(problem)
    itemsize = 2 if narrow else 4
    # the Python definition of the compiled tiling (the same arithmetic): planning a model at trace time
    # then never waits for numba, which may be compiling the kernels' handlers meanwhile (`xla_ffi.register`)
    rows, cols, row_len, chunk = _tiles.py_func(fh, fw, og, cg, kh_n * kw_n, halo_r, halo_c, used, itemsize,
                                                n_batch, numba.get_num_threads(), T_BUDGET, ACC_BUDGET)
    tiles = n_batch * -(-fh // rows) * -(-fw // cols)
    build = tiles * channels * used * (rows + halo_r) * row_len
    cols_pad = -(-cols // 16) * 16
    sums = tiles * n_out * rows * -(-cols_pad // 64) * -(-cg // chunk)
    padded = cols_pad / cols * fh * fw / (ho * wo)  # 16-lane rows; flat rows' wrapped columns
    return (problem.macs * padded / (RATE_ROW_ADD16 if narrow else RATE_ROW_ADD)
            + build / (RATE_BUILD16 if narrow else RATE_BUILD)
            + sums * ROW_ADD_OVERHEAD
            + n_out * cg * kh_n * kw_n / RATE_OFFSETS
            + CALL_OVERHEAD + GROUP_OVERHEAD * (problem.spec.groups - 1))


def warmup() -> None:
    """Compile (or load from numba's cache) the kernel and its FFI handler."""
    x, w = np.zeros((1, 4, 20, 2), np.int32), np.zeros((3, 3, 2, 2), np.int32)
    signed = np.zeros((256, 256), np.int32)
    signed[0, 0] = -1
    for table in (np.zeros((256, 256), np.int32), signed):
        wstat_host(x, w, table, ConvSpec())
    FFI.register("u16")
    FFI.register("s16")
