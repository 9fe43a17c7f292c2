"""The seed's two emulators as jitted XLA programs, beside their NumPy references (`numpy_kernels`).

``xla_loop`` (v1): a `jax.lax.fori_loop` over output values, the way the original emulator looped: each
iteration slices the output's receptive field and its filter, looks the window's products up in the
flattened table (``lut[w_byte * 256 + x_byte]``) and stores their int32 sum. Portable and slow by design
(one loop iteration per output value): a reference, never chosen by ``impl="auto"``.

``xla_vmap`` (v2): one output channel is a single vectorised lookup over every position and tap
(`gather_kernel.channel_lookup`); `jax.vmap` runs a chunk of output channels at once and
`jax.lax.map` walks the chunks, so memory stays at one chunk's indices (about `CHUNK_BYTES`). Runs
wherever XLA runs (CPU, GPU, TPU).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .gather_kernel import channel_lookup
from .spec import ConvSpec

CHUNK_BYTES = 1 << 26  # xla_vmap: index and product bytes per chunk of output channels
RATE_VMAP = 3.5e8      # xla_vmap: multiply-accumulates per second on this CPU, for impl="auto"


@functools.partial(jax.jit, static_argnames="spec")  # compiled once per shape, also on concrete arrays
def xla_loop_conv(x: jax.Array, w: jax.Array, lut: jax.Array, spec: ConvSpec) -> jax.Array:
    """v1 on XLA: int32 accumulators (N, Ho, Wo, O), one `fori_loop` iteration per output value."""
    x = jnp.asarray(x, jnp.int32) & 0xFF
    w = jnp.asarray(w, jnp.int32) & 0xFF
    flat = jnp.asarray(lut, jnp.int32).reshape(-1)
    n_batch = x.shape[0]
    kh_n, kw_n, cg, n_out = w.shape
    ho, wo = spec.output_hw(tuple(x.shape[1:3]), (kh_n, kw_n))
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    og = n_out // spec.groups
    span = ((kh_n - 1) * dh + 1, (kw_n - 1) * dw + 1)
    total = n_batch * ho * wo * n_out

    def one_output(k, out):
        o = k % n_out
        j = k // n_out % wo
        i = k // (n_out * wo) % ho
        n = k // (n_out * wo * ho)
        window = jax.lax.dynamic_slice(x, (n, i * sh, j * sw, o // og * cg), (1,) + span + (cg,))[0, ::dh, ::dw]
        filt = jax.lax.dynamic_slice(w, (0, 0, 0, o), (kh_n, kw_n, cg, 1))[..., 0]
        return out.at[k].set(jnp.take(flat, filt * 256 + window, mode="clip").sum(dtype=jnp.int32))

    out = jax.lax.fori_loop(0, total, one_output, jnp.zeros((total,), jnp.int32))
    return out.reshape(n_batch, ho, wo, n_out)


@functools.partial(jax.jit, static_argnames="spec")
def xla_vmap_conv(x: jax.Array, w: jax.Array, lut: jax.Array, spec: ConvSpec) -> jax.Array:
    """v2 on XLA: int32 accumulators (N, Ho, Wo, O), chunks of output channels under `jax.vmap`."""
    one_channel, n_out = channel_lookup(x, w, lut, spec)
    n_batch = x.shape[0]
    ho, wo = spec.output_hw(tuple(x.shape[1:3]), tuple(w.shape[:2]))
    per_channel = 8 * n_batch * ho * wo * w.shape[0] * w.shape[1] * w.shape[2]  # int32 indices + products
    chunk = max(1, min(n_out, CHUNK_BYTES // max(1, per_channel)))
    chunks = -(-n_out // chunk)
    channels = jnp.minimum(jnp.arange(chunks * chunk), n_out - 1).reshape(chunks, chunk)
    out = jax.lax.map(jax.vmap(one_channel), channels)  # (chunks, chunk, N, Ho, Wo)
    return jnp.moveaxis(out.reshape((chunks * chunk,) + out.shape[2:])[:n_out], 0, -1)


def estimate_vmap(problem) -> float:
    return problem.macs / RATE_VMAP
