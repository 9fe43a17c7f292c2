"""Depth metrics (delta1/2/3, abs_rel, sq_rel, rmse, rmse_log, log10, PSNR) of a model on an RGB-D dataset, and
of an approximate-multiplier model against the exact one (protocol: `jaxdepth.evaluation`).

    jaxdepth-evaluate                                   # bundled model, 32 held-out synthetic rooms
    jaxdepth-evaluate --data nyu_test.zip --model ckpt --multiplier mul8s_1L2J --out results/

data formats (auto-detected): DenseDepth nyu_test.zip or its folder of eigen_test_*.npy; the NYU Depth v2
labeled .mat; an .npz with images/depths; a folder of NAME.png + NAME_depth.png (16-bit mm) /
NAME_depth.npy (metres) or rgb/ + depth/; a synthetic dataset folder; or synthetic:N[:SEED[:HxW]] to render
N held-out rooms (default synthetic:32:1000).

Depth range: the checkpoint preset's (metres = max / output clipped to [min, max]: NYU's 0.1-10 m,
densedepth_kitti's 1-80 m); ground truth beyond the maximum is not scored, PSNR's peak is the maximum.
Frames without any valid ground-truth pixel are left out of the metrics, with a warning giving their number
(metrics.json: "frames" given, "frames_without_gt", and each metric row's "frames" that contributed).

The metrics are printed before --out is written (metrics.json, metrics.png, example.png; each atomically);
--out is checked writable before the evaluation starts. Exit codes: 0 done; 2 bad usage or data (unknown
model / multiplier / layer pattern, unreadable data, no valid ground-truth pixel, NaN predictions);
130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .. import inference
from .. import metrics as M
from ..data.loaders import FORMATS
from . import common
from .common import CliError


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(
        prog="jaxdepth-evaluate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 2)[2],
        parents=[common.parent_parser(out_help="folder for metrics.json, metrics.png and example.png")])
    ap.add_argument("--data", default="synthetic:32:1000", help="dataset path or synthetic:N[:SEED[:HxW]]")
    ap.add_argument("--format", default="auto", choices=("auto", *FORMATS), help="force a data format")
    ap.add_argument("--limit", type=common.positive_int, help="evaluate only the first N frames")
    ap.add_argument("--batch-size", type=common.positive_int, default=8)
    ap.add_argument("--no-flip", action="store_true", help="skip flip averaging")
    ap.add_argument("--mean", choices=("pixels", "images"), default="pixels",
                    help="pool all valid pixels, or average per-image metrics")
    ap.add_argument("--calib-frames", type=common.positive_int, default=8,
                    help="frames of the data used to calibrate quantization when the checkpoint has none")
    return ap


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The evaluation the arguments describe (`jaxdepth.evaluation.evaluate`'s result plus ``config``).

    Every usage error (model, multiplier, layers, data, --out) is raised before the evaluation starts."""
    from ..data import load
    from ..evaluation import evaluate
    plan = common.make_plan(args.multiplier, args.layers, args.signed)
    common.check_compensate(args.compensate, plan, stored_plan_possible=bool(args.model))   # before any work
    if args.out:
        common.check_out_dir(args.out)
    ds = load(args.data, args.format)
    if len(ds) == 0:
        raise CliError(f"--data {args.data}: the dataset has no frames")
    model, variables, info = common.load_model(args.model)
    model, plan = inference.exact_and_plan(model, plan)
    common.check_compensate(args.compensate, plan)
    size = inference.model_input_size(model, info)
    if args.multiplier:
        common.check_layers(model, args.layers, size)
    if plan is not None:
        inference.compile_kernels_ahead(plan, variables)  # a first run: numba compiles meanwhile
    if info.get("random_weights"):
        print(f"warning: {args.model} has random weights (a preset name, not a checkpoint)", file=sys.stderr)
    exact = inference.make_predictor(model, variables, flip=not args.no_flip, input_size=size)
    predict, reference = exact, None
    if plan is not None:
        calib = np.concatenate([b[0] for b in ds.batches(args.calib_frames, args.calib_frames)])
        calib = inference.resize_batch(calib, size).astype(np.float32) / 255.0
        qmodel, qvars = inference.quantized(model, variables, plan, calib, compensate=args.compensate)
        predict = inference.make_predictor(qmodel, qvars, flip=not args.no_flip, input_size=size)
        reference = exact
    try:
        res = evaluate(predict, ds, reference=reference, batch_size=args.batch_size, limit=args.limit,
                       mean=args.mean, progress=not args.no_progress, keep=1 if args.out else 0)
    except M.NoValidPixelsError as e:            # all-NaN / zero ground truth, or NaN predictions everywhere
        raise CliError(f"--data {args.data}: {e}") from None
    res["config"] = {"data": args.data, "format": ds.format, "model": args.model or "default",
                     "preset": getattr(getattr(model, "preset", None), "name", type(model).__name__),
                     "input_size": size, "depth_range": res["depth_range"], "max_depth": res["max_depth"],
                     "multiplier": args.multiplier, "compensate": bool(args.compensate and plan),
                     "layers": (args.layers or ["*"]) if plan else None, "flip": not args.no_flip,
                     "mean": args.mean, "crop": ds.crop, "devices": getattr(exact, "n_devices", 1)}
    return res


def check_result(res: dict[str, Any]) -> list[str]:
    """Warnings about the result (degenerate or partly NaN predictions); CliError when every prediction is
    NaN (no valid ground truth at all is caught earlier, by the metrics)."""
    warnings = []
    names = {"prediction": "approximate model" if "fidelity" in res else "model", "reference": "exact model"}
    for key, check in res.get("checks", {}).items():
        if "all_nan" in check.problems:
            raise CliError(f"the {names[key]}'s depth is NaN everywhere (corrupt weights?): no metrics")
        if check.problems:
            warnings.append(f"warning: the {names[key]}'s depth looks degenerate over {res['frames']} frames: "
                            f"{check.describe()}")
    return warnings


def rows(res: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The metric rows of the report: model vs gt, or exact vs gt / approximate vs gt / approx vs exact."""
    out = {("approximate" if "fidelity" in res else "model") + " vs gt": res["accuracy"]}
    if "fidelity" in res:
        out = {"exact vs gt": res["reference_accuracy"], **out, "approx vs exact": res["fidelity"]}
    return out


def _frames(res: dict[str, Any]) -> str:
    """"N frames", and how many of them had valid ground truth when not all did."""
    text = f"{res['frames']} frames"
    if res.get("frames_without_gt"):
        text += f" ({res['frames'] - res['frames_without_gt']} with valid ground truth)"
    return text


def write_outputs(res: dict[str, Any], out: str | Path) -> list[Path]:
    """metrics.json, metrics.png and example.png in ``out`` (each written atomically)."""
    from .. import viz
    from ..io.atomic import write_json
    o = Path(out)
    ex = res.get("examples", [])
    data = {k: v for k, v in res.items() if k not in ("examples", "checks")}
    data["checks"] = {k: {"problems": list(c.problems), "pixels": c.pixels, "non_finite": c.non_finite,
                          "min": c.lo, "max": c.hi} for k, c in res.get("checks", {}).items()}
    vmax = float(res.get("depth_range", (0.1, 10.0))[1])       # colour scale: the model's depth range
    files = [write_json(o / "metrics.json", data),
             viz.metrics_bars(rows(res), o / "metrics.png",
                              title=f"{res['config']['data']} ({_frames(res)})")]
    if ex:
        rgb, gt, pred, ref = ex[0]
        if ref is not None:
            files.append(viz.comparison(rgb, ref, pred, o / "example.png", vmax=vmax))
        else:
            files.append(viz.comparison(rgb, gt, pred, o / "example.png",
                                        titles=("input", "ground truth", "prediction", "|difference|"), vmax=vmax))
    return files


def _main(args: argparse.Namespace, done: common.Done) -> int:
    done.what, done.total = "evaluations", 1
    done.note = "nothing written (--out gets results only from a complete evaluation)" if args.out else ""
    res = run(args)
    done.add(args.data)
    warnings = check_result(res)
    compensated = " (approximate model error-compensated)" if res["config"].get("compensate") else ""
    print(f"{_frames(res)} in {res['seconds']:.1f} s on {res['config']['devices']} device(s){compensated}")
    print(M.format_table(rows(res)), flush=True)
    for w in warnings:
        print(w, file=sys.stderr)
    if args.out:
        files = write_outputs(res, args.out)
        print("\nwrote " + ", ".join(str(f) for f in files))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.run(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
