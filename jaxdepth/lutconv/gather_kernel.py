"""``gather``: the pure-XLA LUT kernel, jittable with traced inputs.

im2col patches, table index ``w_byte * 256 + x_byte``, one gather from the flattened table, int32 sum;
`jax.lax.map` over output channels keeps memory at one channel's (positions x reduction) indices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .spec import ConvSpec


RATE = 4e8  # multiply-accumulates per second (XLA gather on CPU), for impl="auto"


def estimate(problem) -> float:
    return problem.macs / RATE


def im2col(x: jax.Array, kernel_hw: tuple[int, int], spec: ConvSpec) -> jax.Array:
    """(N, H, W, C) -> (N, Ho, Wo, KH*KW, C) with strided, dilated slices (tap-major)."""
    (kh_n, kw_n), (sh, sw), (dh, dw) = kernel_hw, spec.stride, spec.dilation
    ho, wo = spec.output_hw(x.shape[1:3], kernel_hw)
    taps = [jax.lax.slice(x, (0, kh * dh, kw * dw, 0),
                          (x.shape[0], kh * dh + (ho - 1) * sh + 1, kw * dw + (wo - 1) * sw + 1, x.shape[3]),
                          (1, sh, sw, 1))
            for kh in range(kh_n) for kw in range(kw_n)]
    return jnp.stack(taps, axis=3)


def channel_lookup(x: jax.Array, w: jax.Array, lut: jax.Array, spec: ConvSpec):
    """``(one_channel, n_out)``: ``one_channel(o)`` is output channel ``o`` (N, Ho, Wo) int32, one
    vectorised table lookup over every position, tap and input channel of its group (the index
    ``w_byte * 256 + x_byte`` into the flattened table) and an int32 sum."""
    x, w, lut = jnp.asarray(x, jnp.int32), jnp.asarray(w, jnp.int32), jnp.asarray(lut, jnp.int32)
    patches = im2col(x, w.shape[:2], spec)
    n_batch, ho, wo, taps, _ = patches.shape
    cg, n_out = w.shape[2], w.shape[3]
    og = n_out // spec.groups
    xb = jnp.moveaxis((patches & 0xFF).reshape(n_batch, ho, wo, taps, spec.groups, cg), 4, 0)
    w_rows = ((w & 0xFF) * 256).reshape(taps, cg, n_out)
    flat = lut.reshape(-1)

    def one_channel(o: jax.Array) -> jax.Array:
        idx = w_rows[:, :, o] + xb[o // og]
        return jnp.take(flat, idx, mode="clip").sum(axis=(3, 4), dtype=jnp.int32)

    return one_channel, n_out


def gather_conv(x: jax.Array, w: jax.Array, lut: jax.Array, spec: ConvSpec) -> jax.Array:
    """The jitted gather kernel: returns int32 accumulators (N, Ho, Wo, O)."""
    one_channel, n_out = channel_lookup(x, w, lut, spec)
    out = jax.lax.map(one_channel, jnp.arange(n_out))  # (O, N, Ho, Wo)
    return jnp.moveaxis(out, 0, -1)
