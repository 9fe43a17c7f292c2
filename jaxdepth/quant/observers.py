"""Calibration observers: accumulate activation statistics over a few batches, then give a range.

``minmax``: the observed extremes. ``percentile``: the p-th / (100-p)-th percentiles of |values| seen
(robust to outliers). ``mse``: the clipping range minimising the quantisation MSE on the observed sample.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .params import QParams, activation_qparams

_SAMPLE_CAP = 1 << 18  # values kept per observer for percentile / MSE estimates


class Observer:
    """Collects statistics of one tensor; ``qparams(signed)`` turns them into `QParams`."""

    def __init__(self, method: str = "minmax", percentile: float = 99.99, seed: int = 0) -> None:
        if method not in ("minmax", "percentile", "mse"):
            raise ValueError(f"unknown calibration method {method!r}: use minmax, percentile or mse")
        self.method, self.percentile = method, float(percentile)
        self.lo, self.hi = np.inf, -np.inf
        self._samples: list[np.ndarray] = []
        self._rng = np.random.default_rng(seed)

    def update(self, values: Any) -> None:
        v = np.asarray(values, np.float32).ravel()
        if v.size == 0:
            return
        if not np.all(np.isfinite(v)):
            raise ValueError("calibration saw NaN or infinite activations")
        self.lo, self.hi = min(self.lo, float(v.min())), max(self.hi, float(v.max()))
        if self.method != "minmax":
            keep = v if v.size <= _SAMPLE_CAP else self._rng.choice(v, _SAMPLE_CAP, replace=False)
            self._samples.append(keep)

    def range(self, signed: bool) -> tuple[float, float]:
        if not np.isfinite(self.lo):
            raise RuntimeError("observer has seen no data")
        if self.method == "minmax":
            return self.lo, self.hi
        sample = np.concatenate(self._samples)
        if self.method == "percentile":
            lo = float(np.percentile(sample, 100.0 - self.percentile))
            hi = float(np.percentile(sample, self.percentile))
            return min(lo, 0.0), max(hi, 0.0)
        return _mse_range(sample, self.lo, self.hi, signed)

    def qparams(self, signed: bool) -> QParams:
        lo, hi = self.range(signed)
        return activation_qparams(lo, hi, signed)


def _mse_range(sample: np.ndarray, lo: float, hi: float, signed: bool) -> tuple[float, float]:
    """Shrink the min/max range by factors in (0, 1] and keep the one with least quantisation MSE."""
    best, best_err = (lo, hi), np.inf
    for frac in np.linspace(0.3, 1.0, 36):
        cand_lo, cand_hi = min(lo, 0.0) * frac, max(hi, 0.0) * frac
        qp = activation_qparams(cand_lo, cand_hi, signed)
        scale, zero = float(qp.scale), int(qp.zero_point)
        qmin, qmax = qp.code_range
        codes = np.clip(np.round(sample / scale) + zero, qmin, qmax)
        err = float(np.mean(((codes - zero) * scale - sample) ** 2))
        if err < best_err:
            best, best_err = (cand_lo, cand_hi), err
    return best
