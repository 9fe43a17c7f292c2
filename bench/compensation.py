"""What error compensation wins back: every circuit on every layer of the bundled model, with and without it.

For each circuit (default: the 66 EvoApprox multipliers), the bundled model (or ``--model``) runs with the
circuit on every layer through the explore evaluator (`jaxdepth.explore.Evaluator`: tables as runtime
operands, one compilation per signedness, the evaluate protocol), once plain and once with error
compensation (`jaxdepth.models.compensate`). Offsets and input ranges are measured on ``--calib`` frames
from a different synthetic sequence than the evaluated ones, so the figures are held out (``--calib same``:
the first 8 evaluated frames, the evaluate protocol). Writes
``<out>.json`` / ``<out>.md`` and ``<out>.png`` (accuracy vs power, plain and compensated), each atomically.

    python bench/compensation.py                                     # ~8 min on the 2-core host
    python bench/compensation.py --tables mul8u_NLX mul8s_1KV8 --out /tmp/comp
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import numpy as np

from jaxdepth import multipliers
from jaxdepth.explore import Config, Evaluator, Protocol
from jaxdepth.explore.evaluator import EvalSpec
from jaxdepth.io import atomic

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint folder (default: the bundled model)")
    ap.add_argument("--data", default="synthetic:32:1000", help="evaluated frames (evaluate's default)")
    ap.add_argument("--calib", default="synthetic:8:5",
                    help="calibration / compensation frames (default: 8 rooms of another sequence, held out); "
                         "'same': the first 8 evaluated frames, as evaluate and explore calibrate")
    ap.add_argument("--tables", nargs="+", help="circuits (default: every EvoApprox multiplier)")
    ap.add_argument("--out", default=str(RESULTS / "compensation"), help="output path without suffix")
    args = ap.parse_args(argv)
    names = args.tables or [n for n in multipliers.names() if n.startswith("mul8")]
    try:
        tables = [multipliers.get(n) for n in names]
    except (KeyError, ValueError) as e:
        ap.error(f"--tables: {e}")
    out = Path(args.out)
    problem = atomic.write_obstacle(out.with_suffix(".json"))
    if problem:
        ap.error(f"--out: {problem}")

    from jaxdepth.data import load
    spec = EvalSpec(model=args.model, data=args.data)
    loaded = spec.load_model()
    ds = load(args.data)
    batches = list(ds.batches(8))
    if args.calib == "same":
        calib = batches[0][0]
    else:
        calib_ds = load(args.calib)
        calib = np.concatenate([b[0] for b in calib_ds.batches(len(calib_ds))])
    evs = {c: Evaluator(*loaded, batches, description=spec.describe(), calib_images=calib,
                        protocol=Protocol(compensate=c)) for c in (False, True)}
    rows = []
    for ref in ("exact_s8", "exact_u8"):
        r = evs[False].evaluate(Config.per_layer(ref, {n: multipliers.get(ref) for n in evs[False].layer_names},
                                                 kind="reference"))
        rows.append(_row(ref, multipliers.get(ref), r, None))
        print(f"{ref:<14} delta1 {r['accuracy']['delta1']:.4f}", flush=True)
    for i, m in enumerate(tables):
        config = Config.per_layer(m.name, {n: m for n in evs[False].layer_names})
        plain, comp = evs[False].evaluate(config), evs[True].evaluate(config)
        rows.append(_row(m.name, m, plain, comp))
        print(f"[{i + 1}/{len(tables)}] {m.name:<14} delta1 {plain['accuracy']['delta1']:.4f} -> "
              f"{comp['accuracy']['delta1']:.4f}   psnr {plain['fidelity']['psnr']:.1f} -> "
              f"{comp['fidelity']['psnr']:.1f} dB", flush=True)
    float_delta1 = rows[0]["float_delta1"]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = {"date": stamp, "data": args.data, "calib": args.calib, "model": args.model or "bundled",
            "loadavg_1min": os.getloadavg()[0], "float_delta1": float_delta1}
    atomic.write_json(out.with_suffix(".json"), {"meta": meta, "rows": rows})
    atomic.write_text(out.with_suffix(".md"), markdown(rows, meta))
    plot(rows, out.with_suffix(".png"), meta)
    print(f"wrote {out}.json, .md, .png")
    return 0


def _row(label: str, m, plain: dict, comp) -> dict:
    row = {"table": label, "signed": m.signed, "power_mw": m.power_mw, "float_delta1": plain["reference_accuracy"]["delta1"]}
    for tag, r in (("plain", plain), ("comp", comp)):
        if r is None:
            continue
        row[tag] = {"delta1": r["accuracy"]["delta1"], "abs_rel": r["accuracy"]["abs_rel"],
                    "psnr": r["fidelity"]["psnr"], "depth_rel_rms": r["fidelity"]["depth_rel_rms"],
                    "warning": r["warning"]}
    return row


def summary(rows: list[dict]) -> dict:
    """How many circuits compensation helped / hurt (delta1 and PSNR vs the exact model), and by how much."""
    circuits = [r for r in rows if "comp" in r]
    d = np.array([r["comp"]["delta1"] - r["plain"]["delta1"] for r in circuits])
    p = np.array([r["comp"]["psnr"] - r["plain"]["psnr"] for r in circuits])
    return {"circuits": len(circuits), "delta1_better": int((d > 0.005).sum()), "delta1_worse": int((d < -0.005).sum()),
            "psnr_better": int((p > 0.5).sum()), "psnr_worse": int((p < -0.5).sum()),
            "delta1_gain_median": float(np.median(d)) if d.size else 0.0,
            "psnr_gain_median": float(np.median(p)) if p.size else 0.0}


def markdown(rows: list[dict], meta: dict) -> str:
    s = summary(rows)
    where = ("the first 8 evaluated frames (the evaluate protocol)" if meta["calib"] == "same" else
             f"{meta['calib']} (other rooms than the evaluated ones)")
    lines = [f"Error compensation on the bundled model, every layer through the circuit; evaluated on {meta['data']}, "
             f"input ranges and offsets measured on {where}; {meta['date']}, load "
             f"{meta['loadavg_1min']:.1f}. Float model delta1 {meta['float_delta1']:.4f}. Signed circuits use the "
             "checkpoint's stored int8 ranges (as evaluate does); unsigned ones are calibrated on those frames.", "",
             f"Of {s['circuits']} circuits, compensation raised delta1 by more than 0.005 for {s['delta1_better']} and "
             f"lowered it for {s['delta1_worse']} (median change {s['delta1_gain_median']:+.4f}); PSNR vs the exact "
             f"model rose by more than 0.5 dB for {s['psnr_better']}, fell for {s['psnr_worse']} (median "
             f"{s['psnr_gain_median']:+.1f} dB).", "",
             "| circuit | power mW | delta1 plain | delta1 compensated | PSNR vs exact plain | compensated | abs_rel plain | compensated |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["power_mw"] is None, -(r["power_mw"] or 0))):
        p, c = r["plain"], r.get("comp")
        power = "" if r["power_mw"] is None else f"{r['power_mw']:.3f}"
        if c is None:
            lines.append(f"| {r['table']} (exact) | {power} | {p['delta1']:.4f} | | {p['psnr']:.1f} | | {p['abs_rel']:.4f} | |")
            continue
        lines.append(f"| {r['table']} | {power} | {p['delta1']:.4f} | {c['delta1']:.4f} | {p['psnr']:.1f} | "
                     f"{c['psnr']:.1f} | {p['abs_rel']:.4f} | {c['abs_rel']:.4f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, meta: dict) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    circuits = [r for r in rows if "comp" in r and r["power_mw"] is not None]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for r in circuits:
        ax.plot([r["power_mw"]] * 2, [r["plain"]["delta1"], r["comp"]["delta1"]], color="0.75", lw=0.8, zorder=1)
    ax.scatter([r["power_mw"] for r in circuits], [r["plain"]["delta1"] for r in circuits], s=16, color="tab:gray",
               label="circuit, plain", zorder=2)
    ax.scatter([r["power_mw"] for r in circuits], [r["comp"]["delta1"] for r in circuits], s=16, color="tab:blue",
               label="circuit, compensated", zorder=3)
    for r in rows:
        if "comp" not in r and r["power_mw"] is not None:
            ax.scatter([r["power_mw"]], [r["plain"]["delta1"]], marker="s", s=50, color="tab:green", zorder=4,
                       label=f"{r['table']} (exact)")
    ax.axhline(meta["float_delta1"], color="tab:red", ls="--", lw=0.8, label="float model")
    ax.set_xlabel("multiplier power (mW, EvoApprox)")
    ax.set_ylabel("delta1 (vs ground truth)")
    ax.set_title(f"Error compensation, bundled model, every layer ({meta['data']})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    sys.exit(main())
