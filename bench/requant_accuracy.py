"""Accuracy cost of integer requantization: the bundled model on held-out synthetic rooms, float vs the
float-rescale quantized layers vs integer requantization (jaxdepth.quant.requant), per table.

    python bench/requant_accuracy.py [--data synthetic:32:1:240x320] [--tables int8 mul8s_1L2J mul8u_2AC]

Every quantized variant is calibrated the same way (min/max on the first --calib-frames frames of the data,
the evaluate CLI's rule for checkpoints without calibration); protocol = `jaxdepth.evaluation.evaluate`
(flip averaging, bilinear up-sampling, metrics over valid pixels). Writes bench/results/requant_accuracy.{json,md}.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import numpy as np

from jaxdepth import inference, models
from jaxdepth.cli.common import DEFAULT_MODEL
from jaxdepth.data import load
from jaxdepth.evaluation import evaluate
from jaxdepth.io import atomic, checkpoint

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ("delta1", "delta2", "abs_rel", "rmse", "log10")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="synthetic:32:1:240x320")
    ap.add_argument("--tables", nargs="+", default=["int8", "mul8s_1L2J", "mul8u_2AC"])
    ap.add_argument("--calib-frames", type=int, default=8)
    ap.add_argument("--out", default=str(RESULTS / "requant_accuracy"))
    args = ap.parse_args(argv)
    model, variables, info = checkpoint.load(DEFAULT_MODEL)
    base = {k: variables[k] for k in ("params", "batch_stats")}
    size = inference.model_input_size(model, info)
    ds = load(args.data)
    calib = np.concatenate([b[0] for b in ds.batches(args.calib_frames, args.calib_frames)])
    calib = inference.resize_batch(calib, size).astype(np.float32) / 255.0
    exact = inference.make_predictor(model, base, input_size=size)
    rows = {"float": evaluate(exact, ds)["accuracy"]}
    print("float", _fmt(rows["float"]), flush=True)
    for table in args.tables:
        for mode in ("float", "integer"):
            plan = models.Plan.make({"*": {"multiplier": table, "requant": mode}})
            qmodel = model.clone(plan=plan)
            qvars = models.calibrate(qmodel, base, calib)
            res = evaluate(inference.make_predictor(qmodel, qvars, input_size=size), ds, reference=exact)
            key = f"{table}, {mode} rescale" if mode == "float" else f"{table}, integer requant"
            rows[key] = {**res["accuracy"], "psnr_vs_float": res["fidelity"].get("psnr")}
            print(key, _fmt(rows[key]), flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_avg = os.getloadavg()[0]
    meta = {"date": stamp, "data": args.data, "calib_frames": args.calib_frames, "frames": len(ds),
            "model": "bundled mobilenetv2_lite", "loadavg_1min": load_avg}
    atomic.write_json(Path(args.out).with_suffix(".json"), {"meta": meta, "rows": rows})
    lines = [f"Bundled model, {args.data} ({len(ds)} held-out rooms), every layer quantized, calibrated on the "
             f"first {args.calib_frames} frames; {stamp}.", "",
             "| arithmetic | " + " | ".join(COLUMNS) + " | PSNR vs float (dB) |",
             "| --- |" + " --- |" * (len(COLUMNS) + 1)]
    for key, r in rows.items():
        psnr = r.get("psnr_vs_float")
        lines.append(f"| {key} | " + " | ".join(f"{r[c]:.4f}" for c in COLUMNS) + f" | {'' if psnr is None else f'{psnr:.1f}'} |")
    atomic.write_text(Path(args.out).with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _fmt(r: dict) -> str:
    return " ".join(f"{c}={r[c]:.4f}" for c in COLUMNS)


if __name__ == "__main__":
    sys.exit(main())
