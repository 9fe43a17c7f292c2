"""Resizing helpers for images and depth maps (NumPy / PIL, no SciPy)."""
from __future__ import annotations

import numpy as np


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (h, w, 3) with PIL bilinear (antialiased when shrinking)."""
    from PIL import Image
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.BILINEAR))


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float depth (..., H, W) -> (..., h, w), bilinear with align_corners=False (half-pixel centres).

    Works on any leading batch shape; NaN / zero values spread to their neighbours, so resize gt with
    `nearest_depth` instead when it has holes.
    """
    d = np.asarray(depth, np.float32)
    H, W = d.shape[-2:]
    h, w = size
    if (H, W) == (h, w):
        return d

    def coords(n_in, n_out):
        x = (np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5
        x = np.clip(x, 0, n_in - 1)
        x0 = np.floor(x).astype(np.int64)
        x1 = np.minimum(x0 + 1, n_in - 1)
        return x0, x1, (x - x0).astype(np.float32)

    r0, r1, fr = coords(H, h)
    c0, c1, fc = coords(W, w)
    top = d[..., r0, :] * (1 - fr)[:, None] + d[..., r1, :] * fr[:, None]
    return (top[..., c0] * (1 - fc) + top[..., c1] * fc).astype(np.float32)


def resize_measured_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`resize_depth` of depth with holes (0 / NaN / inf: no measurement, `jaxdepth.metrics.valid_mask`): each
    output pixel is the bilinear mean of the measured pixels among its neighbours (weights renormalised), NaN
    where none is measured. Without holes: `resize_depth` exactly."""
    from ..metrics import valid_mask
    d = np.asarray(depth, np.float32)
    measured = valid_mask(d)
    if measured.all():
        return resize_depth(d, size)
    weight = resize_depth(measured.astype(np.float32), size)
    total = resize_depth(np.where(measured, d, 0.0), size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 1e-6, total / weight, np.nan).astype(np.float32)


def nearest_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of (..., H, W) (keeps invalid values invalid)."""
    d = np.asarray(depth)
    H, W = d.shape[-2:]
    h, w = size
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return d[..., rows[:, None], cols[None, :]]
