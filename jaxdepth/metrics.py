"""Depth-estimation error metrics (NYU Depth v2 / Eigen et al. conventions) and depth PSNR.

All functions take the prediction first and the reference second, in metres, and use only pixels where
the reference is valid (finite and > ``min_depth``; optionally <= ``max_depth``) and the prediction is
finite and positive, inside an optional ``mask``:

- ``delta1/2/3``: fraction of pixels with ``max(p/g, g/p) < 1.25**k``;
- ``abs_rel`` = mean |p - g| / g;  ``sq_rel`` = mean (p - g)^2 / g;
- ``rmse`` = sqrt(mean (p - g)^2);  ``rmse_log`` = sqrt(mean (ln p - ln g)^2);
- ``log10`` = mean |log10 p - log10 g|;
- ``psnr`` = 10 log10(peak^2 / mean (p - g)^2) dB with ``peak`` = the model's maximum depth (default 10 m,
  NYU's range: DenseDepth clips predictions to [0.1, 10] m; `jaxdepth.evaluation.evaluate` passes the
  preset's, 80 m for densedepth_kitti), so it compares maps across models on one fixed scale. Identical
  maps give ``inf``.

With no usable pixel at all (an all-NaN or all-zero reference, an empty mask, or a prediction that is
NaN / non-positive wherever the reference is valid) `compute` and `Accumulator.result` raise
`NoValidPixelsError` instead of returning a table of NaN. Prediction pixels that are NaN or non-positive
where the reference is valid are left out with a RuntimeWarning giving their count.

(The DenseDepth reference code swaps prediction and ground truth in one call; here the order is always
``(pred, gt)``: ``abs_rel`` divides by the reference.)

Over a dataset, `accumulate` sums per-pixel quantities so that the result is the metric over all valid
pixels of all images (``mean="pixels"``), or averages per-image metrics (``mean="images"``, the protocol
of the DenseDepth evaluation code, which averages per image).
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import numpy as np

METRICS = ("delta1", "delta2", "delta3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10")
HIGHER_IS_BETTER = {"delta1", "delta2", "delta3", "psnr"}
PSNR_PEAK = 10.0
EIGEN_CROP = (20, 459, 24, 615)   # rows 20..458, cols 24..614 of a 480x640 map (DenseDepth's eigen_test_crop)


class NoValidPixelsError(ValueError):
    """No pixel is usable for the metrics (reference or prediction invalid everywhere)."""


def valid_mask(gt: np.ndarray, min_depth: float = 1e-3, max_depth: Optional[float] = None) -> np.ndarray:
    """Pixels with a usable reference depth: finite and > ``min_depth`` (and <= ``max_depth`` when given)."""
    gt = np.asarray(gt)
    m = np.isfinite(gt) & (gt > min_depth)
    if max_depth is not None:
        m &= gt <= max_depth
    return m


def crop_mask(shape: tuple[int, ...], crop: Optional[tuple[int, int, int, int]]) -> np.ndarray:
    """Boolean (H, W) mask that is True inside ``crop`` = (row start, row end, col start, col end).

    A crop that does not fit the map is taken as given for 480x640 and scaled to (H, W) (so the Eigen crop
    works on half-resolution maps). ``crop=None`` selects everything.
    """
    h, w = shape[-2], shape[-1]
    m = np.zeros((h, w), bool)
    if crop is None:
        m[:] = True
        return m
    r0, r1, c0, c1 = (int(v) for v in crop)
    if (r1 > h or c1 > w) and r1 <= 480 and c1 <= 640:
        sy, sx = h / 480, w / 640
        r0, r1, c0, c1 = int(round(r0 * sy)), int(round(r1 * sy)), int(round(c0 * sx)), int(round(c1 * sx))
    m[r0:r1, c0:c1] = True
    return m


# sums kept per batch: count, delta counts, abs_rel, sq_rel, sq_err, sq_log, log10; reference pixels valid
# (in the mask) and, of those, the ones the prediction spoils (NaN / non-positive)
_SUM_KEYS = ("n", "d1", "d2", "d3", "abs_rel", "sq_rel", "sq", "sq_log", "log10", "ref", "bad_pred")


def _sums(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, ref_mask: np.ndarray) -> dict[str, float]:
    p = np.asarray(pred, np.float64)[mask]
    g = np.asarray(gt, np.float64)[mask]
    ref = float(np.count_nonzero(ref_mask))
    counts = {"ref": ref, "bad_pred": ref - float(p.size)}
    if p.size == 0:
        return {k: 0.0 for k in _SUM_KEYS} | counts
    ratio = np.maximum(p / g, g / p)
    err = p - g
    return {"n": float(p.size),
            "d1": float((ratio < 1.25).sum()), "d2": float((ratio < 1.25 ** 2).sum()),
            "d3": float((ratio < 1.25 ** 3).sum()),
            "abs_rel": float((np.abs(err) / g).sum()), "sq_rel": float((err ** 2 / g).sum()),
            "sq": float((err ** 2).sum()), "sq_log": float(((np.log(p) - np.log(g)) ** 2).sum()),
            "log10": float(np.abs(np.log10(p) - np.log10(g)).sum())} | counts


def _finish(s: dict[str, float], peak: float = PSNR_PEAK) -> dict[str, float]:
    n = s["n"]
    if n == 0:
        return {k: float("nan") for k in (*METRICS, "psnr")} | {"pixels": 0}
    mse = s["sq"] / n
    return {"delta1": s["d1"] / n, "delta2": s["d2"] / n, "delta3": s["d3"] / n,
            "abs_rel": s["abs_rel"] / n, "sq_rel": s["sq_rel"] / n, "rmse": math.sqrt(mse),
            "rmse_log": math.sqrt(s["sq_log"] / n), "log10": s["log10"] / n,
            "psnr": psnr_from_mse(mse, peak), "pixels": int(n)}


def psnr_from_mse(mse: float, peak: float = PSNR_PEAK) -> float:
    return float("inf") if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def _masks(pred: np.ndarray, gt: np.ndarray, mask: Optional[np.ndarray], min_depth: float,
           max_depth: Optional[float]) -> tuple[np.ndarray, np.ndarray]:
    """(usable pixels, pixels where only the reference and ``mask`` are valid)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {gt.shape}")
    ref = valid_mask(gt, min_depth, max_depth)
    if mask is not None:
        ref &= np.broadcast_to(np.asarray(mask, bool), ref.shape)
    return ref & np.isfinite(pred) & (pred > 0), ref


def full_mask(pred: np.ndarray, gt: np.ndarray, mask: Optional[np.ndarray] = None, min_depth: float = 1e-3,
              max_depth: Optional[float] = None) -> np.ndarray:
    """Valid reference, finite positive prediction, and ``mask`` (broadcast) combined."""
    return _masks(pred, gt, mask, min_depth, max_depth)[0]


def _checked(s: dict[str, float], peak: float) -> dict[str, float]:
    """`_finish` of dataset / image totals, raising when no pixel was usable, warning about spoilt ones."""
    if s["ref"] == 0:
        raise NoValidPixelsError("the reference depth has no valid pixel (NaN, infinite, <= min_depth or "
                                 "beyond max_depth everywhere, or outside the mask): no metric can be computed")
    if s["n"] == 0:
        raise NoValidPixelsError(f"the prediction is NaN, infinite or <= 0 at all {int(s['ref'])} valid "
                                 "reference pixels: no metric can be computed")
    if s["bad_pred"]:
        warnings.warn(f"the prediction is NaN, infinite or <= 0 at {int(s['bad_pred'])} of {int(s['ref'])} "
                      "valid reference pixels; the metrics leave them out", RuntimeWarning, stacklevel=3)
    return _finish(s, peak)


def compute(pred: np.ndarray, gt: np.ndarray, mask: Optional[np.ndarray] = None, *, min_depth: float = 1e-3,
            max_depth: Optional[float] = None, peak: float = PSNR_PEAK) -> dict[str, float]:
    """All metrics (`METRICS` + ``psnr`` + ``pixels``) of ``pred`` against ``gt`` over the valid pixels;
    `NoValidPixelsError` when there is none."""
    m, ref = _masks(pred, gt, mask, min_depth, max_depth)
    return _checked(_sums(pred, gt, m, ref), peak)


def psnr(pred: np.ndarray, ref: np.ndarray, mask: Optional[np.ndarray] = None, peak: float = PSNR_PEAK) -> float:
    """Depth PSNR in dB with ``peak`` metres (default 10 m) over the valid pixels of ``ref``."""
    return compute(pred, ref, mask, peak=peak)["psnr"]


class Accumulator:
    """Metrics over many images: ``add(pred, gt, mask)`` per image or batch, then ``result()``.

    ``mean="pixels"`` pools all valid pixels; ``mean="images"`` averages per-image metrics (each image's
    psnr from its own mse; delta etc. per image). ``per_image`` keeps every image's metrics.
    """

    def __init__(self, mean: str = "pixels", *, min_depth: float = 1e-3, max_depth: Optional[float] = None,
                 peak: float = PSNR_PEAK):
        if mean not in ("pixels", "images"):
            raise ValueError(f"mean must be 'pixels' or 'images', got {mean!r}")
        self.mean, self.min_depth, self.max_depth, self.peak = mean, min_depth, max_depth, peak
        self.totals = {k: 0.0 for k in _SUM_KEYS}
        self.per_image: list[dict[str, float]] = []

    def add(self, pred: np.ndarray, gt: np.ndarray, mask: Optional[np.ndarray] = None) -> None:
        """Add one image (H, W) or a batch (N, H, W); ``mask`` (H, W) or the same shape."""
        pred, gt = np.asarray(pred), np.asarray(gt)
        if pred.ndim == 2:
            pred, gt = pred[None], gt[None]
            mask = None if mask is None else np.asarray(mask)[None] if np.ndim(mask) == 2 else mask
        for i in range(len(pred)):
            mi = None if mask is None else (mask if np.ndim(mask) == 2 else mask[i])
            m, ref = _masks(pred[i], gt[i], mi, self.min_depth, self.max_depth)
            s = _sums(pred[i], gt[i], m, ref)
            for k in _SUM_KEYS:
                self.totals[k] += s[k]
            self.per_image.append(_finish(s, self.peak))

    def result(self) -> dict[str, float]:
        """The metrics over everything added; `NoValidPixelsError` when no pixel of any image was usable."""
        if not self.per_image:
            raise NoValidPixelsError("no image was added: no metric can be computed")
        pooled = _checked(self.totals, self.peak)
        if self.mean == "pixels":
            return pooled
        keys = (*METRICS, "psnr")
        out = {k: float(np.mean([r[k] for r in self.per_image if r["pixels"] > 0])) for k in keys}
        out["pixels"] = int(self.totals["n"])
        return out


def format_table(rows: dict[str, dict[str, float]], keys: tuple[str, ...] = (*METRICS, "psnr")) -> str:
    """A plain-text table: one row per entry of ``rows`` (name -> metrics)."""
    head = f"{'':<24}" + "".join(f"{k:>10}" for k in keys)
    lines = [head]
    for name, r in rows.items():
        cells = "".join(f"{r.get(k, float('nan')):>10.4f}" if k != "psnr" else f"{r.get(k, float('nan')):>10.2f}"
                        for k in keys)
        lines.append(f"{name:<24}{cells}")
    return "\n".join(lines)
