"""Before / after report of a fine-tuning run: what the approximate multiplier cost and what training won back.

`before_after` evaluates, on held-out frames and with the evaluation protocol of `jaxdepth.evaluate` (flip
averaging, bilinear upsampling to the ground-truth size), the exact model, the approximate model before and
after fine-tuning: each against ground truth (when the frames have depth) and the approximate ones against the
exact model (fidelity, PSNR included). ``recovered`` = the fraction of the exact model's lead won back
((after - before) / (exact - before)) per metric. `write_report` puts ``report.json`` and ``report.png``
(metric bars + loss curve) in the run folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from .data import ArrayData

METRICS = ("delta1", "delta2", "delta3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "psnr")


def before_after(exact: tuple[Any, dict], before: tuple[Any, dict], after: tuple[Any, dict], val: ArrayData, *,
                 input_size: Optional[tuple[int, int]] = None, flip: bool = True, batch_size: int = 8,
                 progress: bool = False) -> dict[str, Any]:
    """Metrics of three (model, variables) pairs on ``val``: {"exact": {"vs_gt"}, "before": {"vs_gt",
    "vs_exact"}, "after": {...}, "recovered": {...}, "frames": n}; "vs_gt" only when ``val`` has depth."""
    from tqdm import tqdm

    from .. import metrics as M
    from ..inference import make_predictor, upsample_depth
    from ..models import depth_range

    preds = {k: make_predictor(m, v, flip=flip, input_size=input_size)
             for k, (m, v) in (("exact", exact), ("before", before), ("after", after))}
    hi = depth_range(exact[0])[1]    # the preset's max depth: ground-truth cap and PSNR peak (10 m NYU, 80 m KITTI)
    gt_acc = {k: M.Accumulator(max_depth=hi, peak=hi) for k in preds} if val.has_depth else None
    fid_acc = {k: M.Accumulator(peak=hi) for k in ("before", "after")}
    for s in tqdm(range(0, len(val), batch_size), desc="before/after", disable=not progress):
        imgs, deps = val.batch(np.arange(s, min(s + batch_size, len(val))))
        size = imgs.shape[1:3] if deps is None else deps.shape[1:]
        out = {k: upsample_depth(p(imgs), size) for k, p in preds.items()}
        for k in ("before", "after"):
            fid_acc[k].add(out[k], out["exact"])
        if gt_acc is not None:
            for k, d in out.items():
                gt_acc[k].add(d, deps)
    res: dict[str, Any] = {"frames": len(val), "exact": {}, "before": {}, "after": {}}
    for k in ("before", "after"):
        res[k]["vs_exact"] = fid_acc[k].result()
    if gt_acc is not None:
        for k in preds:
            res[k]["vs_gt"] = gt_acc[k].result()
    res["recovered"] = recovered(res)
    return res


def recovered(res: dict[str, Any]) -> dict[str, Optional[float]]:
    """Fraction of the loss won back per metric: vs ground truth ``(after - before) / (exact - before)``; vs the
    exact model for delta1 and PSNR (where exact = 1 / no finite ideal: PSNR reported as the gain in dB)."""
    out: dict[str, Optional[float]] = {}
    if "vs_gt" in res["exact"]:
        for m, e in res["exact"]["vs_gt"].items():
            if m not in METRICS:
                continue
            b, a = res["before"]["vs_gt"][m], res["after"]["vs_gt"][m]
            out[f"{m}_vs_gt"] = None if abs(e - b) < 1e-12 else (a - b) / (e - b)
    b, a = res["before"]["vs_exact"]["delta1"], res["after"]["vs_exact"]["delta1"]
    out["delta1_vs_exact"] = None if abs(1.0 - b) < 1e-12 else (a - b) / (1.0 - b)
    out["psnr_gain_db"] = res["after"]["vs_exact"]["psnr"] - res["before"]["vs_exact"]["psnr"]
    return out


def format_report(res: dict[str, Any]) -> str:
    """The report as a metrics table plus the recovered fractions (text, for the terminal)."""
    from ..metrics import format_table
    rows = {}
    if "vs_gt" in res["exact"]:
        rows = {"exact vs gt": res["exact"]["vs_gt"], "approx before vs gt": res["before"]["vs_gt"],
                "approx after vs gt": res["after"]["vs_gt"]}
    rows.update({"approx before vs exact": res["before"]["vs_exact"], "approx after vs exact": res["after"]["vs_exact"]})
    rec = res["recovered"]
    lines = [format_table(rows)]
    if rec.get("delta1_vs_gt") is not None:
        lines.append(f"recovered {100 * rec['delta1_vs_gt']:.0f}% of the delta1 lost vs ground truth")
    if rec.get("delta1_vs_exact") is not None:
        lines.append(f"recovered {100 * rec['delta1_vs_exact']:.0f}% of the delta1 lost vs the exact model; "
                     f"PSNR vs exact {rec['psnr_gain_db']:+.1f} dB")
    return "\n".join(lines)


def write_report(out: Path, res: dict[str, Any], log: Optional[dict] = None, title: str = "") -> tuple[Path, Path]:
    """``out/report.json`` (``res`` plus the loss curve) and ``out/report.png`` (delta1 bars, PSNR vs exact,
    loss curve); written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = {**res}
    if log is not None:
        data["loss_curve"] = {"steps": log.get("steps", []), "loss": log.get("loss", []), "time": log.get("time", [])}
    json_path = out / "report.json"
    atomic.write_json(json_path, data)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    names, vals, colors = [], [], []
    if "vs_gt" in res["exact"]:
        for k, c in (("exact", "tab:green"), ("before", "tab:red"), ("after", "tab:blue")):
            names.append(f"{k}\nvs gt")
            vals.append(res[k]["vs_gt"]["delta1"])
            colors.append(c)
    for k, c in (("before", "salmon"), ("after", "lightsteelblue")):
        names.append(f"{k}\nvs exact")
        vals.append(res[k]["vs_exact"]["delta1"])
        colors.append(c)
    ax.bar(names, vals, color=colors)
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("delta1")
    ax.set_title("delta1 (approximate = before / after fine-tuning)", fontsize=9)
    ax = axes[1]
    ps = [res[k]["vs_exact"]["psnr"] for k in ("before", "after")]
    ax.bar(["before", "after"], ps, color=["salmon", "lightsteelblue"])
    for i, v in enumerate(ps):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("depth PSNR vs exact (dB)")
    ax.set_title("fidelity to the exact model", fontsize=9)
    ax = axes[2]
    if log and log.get("steps"):
        ax.plot(log["steps"], log["loss"], lw=2)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
    ax.set_title("loss curve", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png_path = out / "report.png"
    with atomic.replacing(png_path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return json_path, png_path
