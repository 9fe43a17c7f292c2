"""DenseDepth's training loss and its targets (Alhashim & Wonka 2018, Keras code).

On depth-norm maps ``y = max_depth / depth_m`` (DenseDepth's ``DepthNorm``, the network's raw output convention:
10 m for NYU presets, 80 m for densedepth_kitti; depths clipped to the preset's [min_depth, max_depth] first) at
the output resolution:

    loss = 0.1 * mean|y_hat - y| + clip((1 - SSIM(y_hat, y)) / 2, 0, 1) + mean(|dx y_hat - dx y| + |dy y_hat - dy y|)

with SSIM over an 11x11 Gaussian window (sigma 1.5) and ``L`` = the target range ``max_depth / min_depth``
(100 for NYU, as in the reference code's ``maxDepthVal = 1000 / 10``; 80 for densedepth_kitti's 1-80 m). The same loss serves distillation: the target is then the exact (teacher) model's raw output.

Depth maps with holes (0 / NaN: no measurement, as the data loaders mark them) give NaN targets there
(`depth_to_target`); `depth_loss` leaves those pixels out (the means run over measured pixels, a gradient
needs both its pixels, SSIM takes the windows without a hole) instead of training towards a made-up depth.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

RAW_RANGE = (1.0, 100.0)   # raw outputs of NYU depths 10 m .. 0.1 m (what `models.to_metres` keeps)
NYU_RANGE = (0.1, 10.0)    # (min, max) metres of the NYU presets


def raw_range(depth_range: tuple[float, float] = NYU_RANGE) -> tuple[float, float]:
    """The raw outputs `models.to_metres` keeps for a (min, max) metres range: (1, max / min)."""
    lo, hi = (float(v) for v in depth_range)
    return 1.0, hi / lo


def _gaussian(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float32) - size // 2
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).astype(np.float32)


def _blur(x: jax.Array, g: np.ndarray) -> jax.Array:
    """Separable 'valid' Gaussian filter of (N, H, W, 1)."""
    k = len(g)
    kh = jnp.asarray(g.reshape(k, 1, 1, 1))
    kw = jnp.asarray(g.reshape(1, k, 1, 1))
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn)
    return jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn)


def ssim(a: jax.Array, b: jax.Array, val_range: float = 100.0, mask: Optional[jax.Array] = None) -> jax.Array:
    """Mean SSIM of two (N, H, W, 1) maps (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03).

    ``mask`` (N, H, W, 1), 1 = valid: the mean runs over the windows whose every pixel is valid (1.0 when no
    window is); values under the mask's zeros must be finite (they only enter windows that are left out)."""
    g = _gaussian()
    c1, c2 = (0.01 * val_range) ** 2, (0.03 * val_range) ** 2
    mu_a, mu_b = _blur(a, g), _blur(b, g)
    saa = _blur(a * a, g) - mu_a ** 2
    sbb = _blur(b * b, g) - mu_b ** 2
    sab = _blur(a * b, g) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    if mask is None:
        return s.mean()
    box = np.ones(len(g), np.float32)
    whole = (_blur(mask.astype(jnp.float32), box) > box.size ** 2 - 0.5).astype(s.dtype)   # every pixel valid
    n = whole.sum()
    return jnp.where(n > 0, (s * whole).sum() / jnp.maximum(n, 1.0), 1.0)


def image_gradients(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(dy, dx) forward differences of (N, H, W, C), zero in the last row / column (tf.image.image_gradients)."""
    dy = jnp.pad(x[:, 1:] - x[:, :-1], ((0, 0), (0, 1), (0, 0), (0, 0)))
    dx = jnp.pad(x[:, :, 1:] - x[:, :, :-1], ((0, 0), (0, 0), (0, 1), (0, 0)))
    return dy, dx


def depth_loss(pred: jax.Array, target: jax.Array, w_l1: float = 0.1, w_ssim: float = 1.0,
               w_grad: float = 1.0, val_range: float = 100.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DenseDepth loss of raw predictions vs depth-norm targets, both (N, h, w, 1): (total, parts).

    Target pixels that are not finite (NaN: no measurement, see `depth_to_target`) are left out: L1 and the
    gradient term are summed over measured pixels (a gradient only where both of its pixels are measured) and
    divided by their number, SSIM is averaged over the windows without such a pixel. With every pixel
    measured this is DenseDepth's loss exactly; with none it is 0."""
    measured = jnp.isfinite(target)
    target = jnp.where(measured, target, 0.0)        # finite everywhere: no NaN reaches a gradient
    m = measured.astype(pred.dtype)
    count = jnp.maximum(m.sum(), 1.0)
    l1 = (jnp.abs(pred - target) * m).sum() / count
    l_ssim = jnp.clip((1.0 - ssim(pred, target, val_range, mask=m)) * 0.5, 0.0, 1.0)
    pdy, pdx = image_gradients(pred)
    tdy, tdx = image_gradients(target)
    mdy = jnp.pad(m[:, 1:] * m[:, :-1], ((0, 0), (0, 1), (0, 0), (0, 0)))    # both pixels of the difference
    mdx = jnp.pad(m[:, :, 1:] * m[:, :, :-1], ((0, 0), (0, 0), (0, 1), (0, 0)))
    l_grad = (jnp.abs(pdy - tdy) * mdy + jnp.abs(pdx - tdx) * mdx).sum() / count
    total = w_l1 * l1 + w_ssim * l_ssim + w_grad * l_grad
    return total, {"l1": l1, "ssim": l_ssim, "grad": l_grad}


def depth_to_target(depth_m: np.ndarray, out_hw: tuple[int, int],
                    depth_range: tuple[float, float] = NYU_RANGE) -> np.ndarray:
    """Metres (N, H, W) -> depth-norm targets ``max / depth`` (N, h, w, 1) at the output size (block mean in
    metres; bilinear when the sizes are not multiples), depths clipped to ``depth_range`` = the preset's
    (min, max) metres (`jaxdepth.models.depth_range`).

    Pixels without a measurement (0 / NaN / inf, <= 1e-3 m: `jaxdepth.metrics.valid_mask`, as evaluation
    scores ground truth) stay out of the means; a target pixel with no measured pixel under it is NaN, which
    `depth_loss` leaves out (a hole is not the 0.1 m a clipped 0 would say)."""
    from ..metrics import valid_mask
    lo, hi = (float(v) for v in depth_range)
    d = np.asarray(depth_m, np.float32)
    if d.ndim != 3:
        raise ValueError(f"depth_m must be metres (N, H, W), got shape {d.shape}")
    measured = valid_mask(d)
    d = np.where(measured, np.clip(d, lo, hi), np.nan).astype(np.float32)
    n, h, w = d.shape
    oh, ow = out_hw
    if (h, w) != (oh, ow):
        if h % oh == 0 and w % ow == 0:
            blocks = d.reshape(n, oh, h // oh, ow, w // ow)
            if measured.all():
                d = blocks.mean(axis=(2, 4))
            else:
                count = measured.reshape(blocks.shape).sum(axis=(2, 4))
                with np.errstate(invalid="ignore", divide="ignore"):
                    d = np.where(count > 0, np.nansum(blocks, axis=(2, 4)) / count, np.nan)
        else:
            from ..data.transforms import resize_measured_depth
            d = resize_measured_depth(d, (oh, ow))
    with np.errstate(divide="ignore"):
        return (hi / d)[..., None].astype(np.float32)


def clip_straight_through(raw: jax.Array, raw_range: tuple[float, float] = RAW_RANGE) -> jax.Array:
    """A student's raw output clipped to the metric range (`raw_range` of the preset's) in value, with the
    identity gradient: a saturated student still learns towards a teacher that is not (a plain clip would
    stop its gradient)."""
    return raw + jax.lax.stop_gradient(jnp.clip(raw, *raw_range) - raw)


def teacher_target(raw: jax.Array, raw_range: tuple[float, float] = RAW_RANGE) -> jax.Array:
    """A teacher's raw output as a distillation target: clipped to the range `models.to_metres` keeps (`raw_range`
    of the preset's), no gradient."""
    return jax.lax.stop_gradient(jnp.clip(raw, *raw_range))
