"""The readable definitions in NumPy: ``loop`` (v1, one output value at a time) and ``vectorized`` (v2).

Both compute, for a VALID convolution of int32 codes (see `spec.ConvSpec`),

    acc[n, i, j, o] = sum_{kh, kw, c} lut[w[kh, kw, c, o] & 0xFF,
                                          x[n, i*sh + kh*dh, j*sw + kw*dw, g*Cg + c] & 0xFF]

with g = o // (O / groups) and Cg = C / groups. They are slow by design and only run on concrete arrays.
"""
from __future__ import annotations

import numpy as np

from .spec import ConvSpec


def loop_conv(x: np.ndarray, w: np.ndarray, lut: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """v1: a plain Python loop per output value and per product (small shapes only)."""
    x, w, lut = np.asarray(x), np.asarray(w), np.asarray(lut)
    n_batch, height, width, channels = x.shape
    kh_n, kw_n, cg, n_out = w.shape
    ho, wo = spec.output_hw((height, width), (kh_n, kw_n))
    og = n_out // spec.groups
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    out = np.zeros((n_batch, ho, wo, n_out), dtype=np.int64)
    for n in range(n_batch):
        for i in range(ho):
            for j in range(wo):
                for o in range(n_out):
                    g = o // og
                    total = 0
                    for kh in range(kh_n):
                        for kw in range(kw_n):
                            for c in range(cg):
                                wb = int(w[kh, kw, c, o]) & 0xFF
                                xb = int(x[n, i * sh + kh * dh, j * sw + kw * dw, g * cg + c]) & 0xFF
                                total += int(lut[wb, xb])
                    out[n, i, j, o] = total
    return out.astype(np.int32)


def vectorized_conv(x: np.ndarray, w: np.ndarray, lut: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """v2: per output channel, one vectorised table lookup over all positions and the reduction."""
    x, w, lut = np.asarray(x), np.asarray(w), np.asarray(lut)
    patches = im2col(x, w.shape[:2], spec)  # (N, Ho, Wo, KH*KW, C)
    n_batch, ho, wo, taps, channels = patches.shape
    cg, n_out = w.shape[2], w.shape[3]
    og = n_out // spec.groups
    xb = (patches & 0xFF).reshape(n_batch, ho, wo, taps, spec.groups, cg)
    wb = (w & 0xFF).reshape(taps, cg, n_out)
    out = np.empty((n_batch, ho, wo, n_out), dtype=np.int32)
    for o in range(n_out):
        g = o // og
        prods = lut[wb[None, None, None, :, :, o], xb[:, :, :, :, g, :]]
        out[..., o] = prods.sum(axis=(3, 4), dtype=np.int64)
    return out


def im2col(x: np.ndarray, kernel_hw: tuple[int, int], spec: ConvSpec) -> np.ndarray:
    """(N, H, W, C) -> (N, Ho, Wo, KH*KW, C): the input window of each output position, tap-major."""
    (kh_n, kw_n), (sh, sw), (dh, dw) = kernel_hw, spec.stride, spec.dilation
    ho, wo = spec.output_hw(x.shape[1:3], kernel_hw)
    taps = [x[:, kh * dh: kh * dh + (ho - 1) * sh + 1: sh, kw * dw: kw * dw + (wo - 1) * sw + 1: sw, :]
            for kh in range(kh_n) for kw in range(kw_n)]
    return np.stack(taps, axis=3)
