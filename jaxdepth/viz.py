"""Figures (matplotlib, Agg backend): depth maps, exact-vs-approximate comparisons, metrics, loss curves.

Depth maps use the 'plasma' colour map on a FIXED range (default 0-10 m, NYU's range) so maps of
different models and images compare: dark = near, light = far. Every function writes a PNG and returns
its path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DEPTH_RANGE = (0.0, 10.0)
CMAP = "plasma"


def _save(fig, path: Union[str, Path]) -> Path:
    """Write ``fig`` to ``path`` atomically (temporary name, then rename) and close it."""
    from .io.atomic import replacing
    path = Path(path)
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def colorize(depth: np.ndarray, vmin: float = DEPTH_RANGE[0], vmax: float = DEPTH_RANGE[1]) -> np.ndarray:
    """uint8 (H, W, 3) plasma rendering of a depth map in metres on the fixed range [vmin, vmax]."""
    d = np.clip((np.asarray(depth, np.float32) - vmin) / (vmax - vmin), 0, 1)
    return (plt.get_cmap(CMAP)(np.nan_to_num(d))[..., :3] * 255 + 0.5).astype(np.uint8)


def depth_png(depth: np.ndarray, path: Union[str, Path], title: Optional[str] = None,
              vmin: float = DEPTH_RANGE[0], vmax: float = DEPTH_RANGE[1]) -> Path:
    """A depth map (metres) in plasma on [vmin, vmax] with a colour bar in metres."""
    d = np.asarray(depth, np.float32)
    h, w = d.shape
    fig, ax = plt.subplots(figsize=(max(3.0, 6.4 * w / max(h, w)) + 1.0, 6.4 * h / max(h, w)))
    im = ax.imshow(d, cmap=CMAP, vmin=vmin, vmax=vmax)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="depth (m)")
    return _save(fig, path)


def comparison(image: np.ndarray, exact: np.ndarray, approx: np.ndarray, path: Union[str, Path],
               titles: Sequence[str] = ("input", "exact", "approximate", "|difference|"),
               vmax: float = DEPTH_RANGE[1], diff_max: Optional[float] = None) -> Path:
    """Side by side: input | exact depth | approximate depth | |difference| (metres, own colour bar)."""
    exact, approx = np.asarray(exact, np.float32), np.asarray(approx, np.float32)
    diff = np.abs(approx - exact)
    dmax = diff_max if diff_max is not None else max(float(np.percentile(diff, 99.5)), 1e-3)
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.4))
    axes[0].imshow(image)
    im1 = axes[1].imshow(exact, cmap=CMAP, vmin=0, vmax=vmax)
    axes[2].imshow(approx, cmap=CMAP, vmin=0, vmax=vmax)
    im3 = axes[3].imshow(diff, cmap="inferno", vmin=0, vmax=dmax)
    for ax, t in zip(axes, titles):
        ax.set_title(t, fontsize=9)
        ax.set_axis_off()
    fig.colorbar(im1, ax=axes[1:3], fraction=0.025, pad=0.02, label="depth (m)")
    fig.colorbar(im3, ax=axes[3], fraction=0.046, pad=0.02, label="|difference| (m)")
    return _save(fig, path)


def metrics_bars(results: dict[str, dict[str, float]], path: Union[str, Path],
                 keys: Sequence[str] = ("delta1", "delta2", "delta3", "abs_rel", "rmse", "log10"),
                 title: str = "") -> Path:
    """Grouped bars: one group per metric, one bar per run (e.g. exact / approximate / fidelity)."""
    names = list(results)
    x = np.arange(len(keys))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(1.3 * len(keys) + 2, 3.6))
    for i, n in enumerate(names):
        vals = [float(results[n].get(k, np.nan)) for k in keys]
        bars = ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=n)
        for b, v in zip(bars, vals):
            if np.isfinite(v):
                ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{v:.3f}", ha="center", va="bottom",
                        fontsize=6, rotation=90)
    ax.set_xticks(x, keys)
    ax.set_ylabel("value (delta: higher is better; errors: lower)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def loss_curve(log: dict, path: Union[str, Path]) -> Path:
    """Training loss (and its L1 / SSIM / gradient parts) against step; validation delta1 if logged."""
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = log.get("steps", [])
    ax.plot(steps, log.get("loss", []), label="loss", lw=2)
    for k, lab in (("l1", "L1 (x0.1 in loss)"), ("ssim", "(1-SSIM)/2"), ("grad", "gradient L1")):
        if log.get(k):
            ax.plot(steps, log[k], label=lab, lw=1, alpha=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    val = log.get("val") or []
    if val:
        ax2 = ax.twinx()
        ax2.plot([v["step"] for v in val], [v["delta1"] for v in val], "k--o", ms=3, label="val delta1")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("held-out delta1")
        ax2.legend(loc="center right", fontsize=7)
    ax.legend(loc="upper right", fontsize=7)
    return _save(fig, path)
