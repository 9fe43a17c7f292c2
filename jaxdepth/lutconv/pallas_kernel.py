"""``pallas``: the LUT convolution as a Pallas kernel, for accelerators (GPU / TPU).

The input is unfolded into patches by XLA (`gather_kernel.im2col`): per group, a (positions, reduction)
matrix of input bytes, and the weights a (reduction, output channels) matrix of weight bytes. The Pallas
grid is (group, block of output channels, block of positions): each program holds the whole flattened
table (65,536 int32, 256 KiB) as one block (on-chip memory: VMEM on TPU, shared memory / L1 on GPU), its
weight block and its patch block, and loops over the reduction: per step one (positions x channels)
lookup ``table[w_byte * 256 + x_byte]`` added to an int32 accumulator. Blocks are padded (zero bytes) to
whole blocks and the padding dropped from the result.

On CPU it runs in Pallas's interpreter (``interpret=True``): that is how it is tested, bit-exact against
the integer reference; ``impl="auto"`` never picks it there (``platforms`` of its registry entry). Its
speed on a GPU or TPU is unmeasured (no accelerator here), and whether Mosaic / Triton lower the in-kernel
table gather has not been tried; it has no cost model, so on an accelerator ``auto`` prefers kernels with
one.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .gather_kernel import im2col
from .spec import ConvSpec

BLOCK_CHANNELS = 128  # output channels per program (lane width); fewer when a group has fewer
BLOCK_POSITIONS = 256  # output positions per program


def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block


def _lookup_kernel(x_ref, w_ref, lut_ref, out_ref):
    """One program: out (positions, channels) = sum over the reduction of table[w * 256 + x]."""
    table = lut_ref[...]
    x = x_ref[0]  # (positions, reduction) input bytes
    w = w_ref[0]  # (reduction, channels) weight bytes * 256

    def step(k, acc):
        idx = jax.lax.dynamic_slice_in_dim(w, k, 1, axis=0) + jax.lax.dynamic_slice_in_dim(x, k, 1, axis=1)
        return acc + jnp.take(table, idx, mode="clip")

    out_ref[0] = jax.lax.fori_loop(0, x.shape[1], step, jnp.zeros(out_ref.shape[1:], jnp.int32))


@functools.partial(jax.jit, static_argnames=("spec", "interpret"))
def _pallas_conv(x, w, lut, spec: ConvSpec, interpret: bool):
    from jax.experimental import pallas as pl

    x, w = jnp.asarray(x, jnp.int32) & 0xFF, jnp.asarray(w, jnp.int32) & 0xFF
    flat = jnp.asarray(lut, jnp.int32).reshape(-1)
    kh_n, kw_n, cg, n_out = w.shape
    groups = spec.groups
    og = n_out // groups
    patches = im2col(x, (kh_n, kw_n), spec)  # (N, Ho, Wo, taps, C)
    n_batch, ho, wo, taps, _ = patches.shape
    positions, reduction = n_batch * ho * wo, taps * cg
    # (G, positions, taps * Cg) input bytes and (G, taps * Cg, Og) weight bytes * 256, reduction tap-major
    xg = jnp.moveaxis(patches.reshape(positions, taps, groups, cg), 2, 0).reshape(groups, positions, reduction)
    wg = jnp.moveaxis((w * 256).reshape(taps, cg, groups, og), 2, 0).reshape(groups, reduction, og)
    pb = min(BLOCK_POSITIONS, _round_up(positions, 8))
    cb = min(BLOCK_CHANNELS, _round_up(og, 8))
    p_pad, c_pad = _round_up(positions, pb), _round_up(og, cb)
    xg = jnp.pad(xg, ((0, 0), (0, p_pad - positions), (0, 0)))
    wg = jnp.pad(wg, ((0, 0), (0, 0), (0, c_pad - og)))
    out = pl.pallas_call(
        _lookup_kernel,
        grid=(groups, c_pad // cb, p_pad // pb),
        in_specs=[pl.BlockSpec((1, pb, reduction), lambda g, c, p: (g, p, 0)),
                  pl.BlockSpec((1, reduction, cb), lambda g, c, p: (g, 0, c)),
                  pl.BlockSpec((flat.shape[0],), lambda g, c, p: (0,))],   # the whole table, every program
        out_specs=pl.BlockSpec((1, pb, cb), lambda g, c, p: (g, p, c)),
        out_shape=jax.ShapeDtypeStruct((groups, p_pad, c_pad), jnp.int32),
        interpret=interpret,
    )(xg, wg, flat)
    out = out[:, :positions, :og]  # (G, positions, Og) -> (N, Ho, Wo, O), channel o = g * Og + j
    return jnp.moveaxis(out, 0, 1).reshape(n_batch, ho, wo, n_out)


def pallas_conv(x, w, lut, spec: ConvSpec) -> jax.Array:
    """The Pallas kernel: int32 accumulators (N, Ho, Wo, O); interpreted on CPU."""
    return _pallas_conv(x, w, lut, spec, interpret=jax.default_backend() == "cpu")
