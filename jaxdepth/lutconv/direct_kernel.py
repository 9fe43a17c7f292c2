"""``direct`` (numba, both cores): output-stationary column gather.

For each input byte ``x`` the table column ``lut[:, x]`` is 256 contiguous ints (1 KiB, stays in L1);
every output channel adds ``column[w_byte]``: one L1 load per multiply-accumulate, vectorised over output
channels (AVX-512 gathers with a constant index vector per tap and channel). Depthwise layers (one input
channel per group) vectorise over channels instead, gathering from the flat table at
``(x & 0xFF) + 256 * w``. Any stride, dilation and grouping; best for few output channels per group.
Under `jax.jit` it is an XLA FFI custom call (`ffi_bridge`), the table a runtime operand.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numba import carray, njit, prange

from . import ffi_bridge, xla_ffi
from .simd import HAVE_AVX512, gather_add16, table_gather_add16
from .spec import ConvSpec, is_traced

RATE_DIRECT = 2.5e9      # multiply-accumulates per second, direct column gather (AVX-512)
RATE_DEPTHWISE = 0.8e9   # multiply-accumulates per second, depthwise direct
POSITION_COST = 2e-8     # seconds per output position (loop set-up, store)
CALL_OVERHEAD = 1e-4     # seconds per call
if not HAVE_AVX512:      # scalar table loads instead of 16-lane gathers; rates fitted on the project's AVX2 host
    RATE_DIRECT, RATE_DEPTHWISE = 1.2e9, 1.7e9  # (depthwise: MobileNetV2's 3x3 layers at 480x640, bench/results/models_paired.md)


# cache=False: called from cached jitted code (lutconv/README.md, "numba's disk cache")
@njit(parallel=True, cache=False, fastmath=False, boundscheck=False)
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


@njit(parallel=True, cache=False, fastmath=False, boundscheck=False)
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


@njit(cache=True, boundscheck=False)
def _run(xb, wb, lut, sh, sw, dh, dw, groups, out):  # pragma: no cover - compiled
    """xb (N,H,W,C) uint8 padded code bytes; wb (KH,KW,Cg,O) uint8; lut the flat table (65,536 entries,
    any integer type); out (N,Ho,Wo,O) int32 (overwritten)."""
    channels = xb.shape[3]
    cg, n_out = wb.shape[2], wb.shape[3]
    if cg == 1 and groups == channels == n_out and n_out > 1:
        w256 = np.empty(wb.shape, dtype=np.int32)  # int32 lanes: the gather reads 16 of them
        for kh in range(wb.shape[0]):
            for kw in range(wb.shape[1]):
                for c in range(n_out):
                    w256[kh, kw, 0, c] = np.int32(wb[kh, kw, 0, c]) * 256
        _depthwise(xb.astype(np.int32), w256, lut.astype(np.int32), sh, sw, dh, dw, out)
    else:
        lut_t = np.empty((256, 256), dtype=np.int32)
        for v in range(256):
            for u in range(256):
                lut_t[u, v] = lut[v * 256 + u]
        _direct(xb, wb, lut_t, sh, sw, dh, dw, groups, out)


def direct_host(x: np.ndarray, w: np.ndarray, lut: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The ``direct`` kernel on concrete arrays (int32 result)."""
    xb = np.ascontiguousarray(np.asarray(x) & 0xFF, dtype=np.uint8)
    wb = np.ascontiguousarray(np.asarray(w) & 0xFF, dtype=np.uint8)
    kh_n, kw_n, _, n_out = wb.shape
    ho, wo = spec.output_hw(xb.shape[1:3], (kh_n, kw_n))
    out = np.empty((xb.shape[0], ho, wo, n_out), dtype=np.int32)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    with xla_ffi.KERNEL_LOCK, xla_ffi.kernel_opt_level():
        _run(xb, wb, np.asarray(lut, np.int32).reshape(-1), sh, sw, dh, dw, spec.groups, out)
    return out


@njit(cache=True, boundscheck=False)
def _execute(frame, lut):  # pragma: no cover - compiled into the XLA FFI handler
    """Operands x (N,H,W,C) uint8, w (KH,KW,Cg,O) uint8, the table, params (sh, sw, dh, dw, groups,
    threads, exclusive) int32; result (N,Ho,Wo,O) int32, written in place."""
    _, x_at, _, x_dims = xla_ffi.buffer(frame, 0, False)
    _, w_at, _, w_dims = xla_ffi.buffer(frame, 1, False)
    _, p_at, _, _ = xla_ffi.buffer(frame, 3, False)
    _, out_at, _, out_dims = xla_ffi.buffer(frame, 0, True)
    x = carray(xla_ffi.as_voidptr(x_at), xla_ffi.dims4(x_dims), dtype=np.uint8)
    w = carray(xla_ffi.as_voidptr(w_at), xla_ffi.dims4(w_dims), dtype=np.uint8)
    out = carray(xla_ffi.as_voidptr(out_at), xla_ffi.dims4(out_dims), dtype=np.int32)
    p = carray(xla_ffi.as_voidptr(p_at), (7,), dtype=np.int32).astype(np.int64)
    xla_ffi.begin(p[5], p[6])
    _run(x, w, lut, p[0], p[1], p[2], p[3], p[4], out)
    xla_ffi.end(p[6])


def _handler(frame):  # pragma: no cover - compiled (a traced table: any dtype)
    return ffi_bridge.run_any(frame, _execute, False)


def _handler_u16(frame):  # pragma: no cover - compiled
    return ffi_bridge.run_fixed(frame, _execute, np.uint16)


def _handler_s16(frame):  # pragma: no cover - compiled
    return ffi_bridge.run_fixed(frame, _execute, np.int16)


def _handler_s32(frame):  # pragma: no cover - compiled
    return ffi_bridge.run_fixed(frame, _execute, np.int32)


FFI = ffi_bridge.FfiKernel("jaxdepth_direct", {"any": _handler, "u16": _handler_u16, "s16": _handler_s16,
                                              "s32": _handler_s32})


def direct_conv(x, w, lut, spec: ConvSpec) -> jax.Array:
    """jittable ``direct`` on padded codes: the host kernel on concrete arrays, an XLA FFI call under
    tracing (the table, traced or not, a runtime operand)."""
    if not is_traced(x, w, lut):
        return jnp.asarray(direct_host(np.asarray(x), np.asarray(w), np.asarray(lut), spec))
    ho, wo = spec.output_hw(tuple(x.shape[1:3]), tuple(w.shape[:2]))
    tail = (ho, wo, w.shape[3])
    xb, wb = ffi_bridge.code_bytes(jnp.asarray(x)), ffi_bridge.code_bytes(jnp.asarray(w))
    target = FFI.target(lut)
    if target is None:
        return ffi_bridge.callback_call(direct_host, (x.shape[0],) + tail, xb, wb, lut, spec)
    share = xla_ffi.call_threads()
    params = np.array([*spec.stride, *spec.dilation, spec.groups, share.threads, share.exclusive], np.int32)
    return ffi_bridge.ffi_call(target, tail, xb, wb, ffi_bridge.table_for_call(lut), params)


def is_depthwise(problem) -> bool:
    return problem.w_shape[2] == 1 and problem.spec.groups == problem.x_shape[3] > 1


def estimate(problem) -> float:
    rate = RATE_DEPTHWISE if is_depthwise(problem) else RATE_DIRECT
    n_batch, _, _, _ = problem.x_shape
    ho, wo = problem.spec.output_hw(problem.x_shape[1:3], problem.w_shape[:2])
    return problem.macs / rate + n_batch * ho * wo * POSITION_COST + CALL_OVERHEAD


def warmup() -> None:
    """Compile (or load from numba's cache) the kernel and its FFI handler."""
    direct_host(np.zeros((1, 4, 20, 2), np.int32), np.zeros((3, 3, 2, 2), np.int32), np.zeros((256, 256), np.int32),
                ConvSpec())
    direct_host(np.zeros((1, 4, 20, 2), np.int32), np.zeros((3, 3, 1, 2), np.int32), np.zeros((256, 256), np.int32),
                ConvSpec(groups=2))
    FFI.register("u16")
    FFI.register("s16")
