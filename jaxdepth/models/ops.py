"""Small numerics shared by the models: PyTorch-compatible bilinear resize (activations: `jaxdepth.quant.requant.apply_activation`)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch's align_corners=True source indices and weights for one axis (float32, as torch computes)."""
    scale = np.float32((n_in - 1) / (n_out - 1)) if n_out > 1 else np.float32(0.0)
    src = np.arange(n_out, dtype=np.float32) * scale
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, lam


def resize_bilinear_align_corners(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """``F.interpolate(x, size, mode="bilinear", align_corners=True)`` for NHWC ``x``."""
    h_out, w_out = int(size[0]), int(size[1])
    _, h_in, w_in, _ = x.shape
    if (h_in, w_in) == (h_out, w_out):
        return x
    if h_out != h_in:
        i0, i1, lam = _axis_weights(h_in, h_out)
        lam = jnp.asarray(lam)[None, :, None, None]
        x = jnp.take(x, i0, axis=1) * (1 - lam) + jnp.take(x, i1, axis=1) * lam
    if w_out != w_in:
        i0, i1, lam = _axis_weights(w_in, w_out)
        lam = jnp.asarray(lam)[None, None, :, None]
        x = jnp.take(x, i0, axis=2) * (1 - lam) + jnp.take(x, i1, axis=2) * lam
    return x
