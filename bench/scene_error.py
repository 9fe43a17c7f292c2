"""Why a circuit's error depends on the scene: each selected layer's own error on the codes it really sees.

For each data set, the bundled model (or ``--model``) is calibrated on the first ``--calib`` frames (as
`python -m jaxdepth.evaluate` does) and `jaxdepth.export.capture` gives the selected layers' integer inputs on a
few frames. Each layer is then run alone on those codes through the circuit and through the exact table
(`lutconv.conv2d`, bit-exact), so the difference is the layer's own table error, not error carried from earlier
layers. Reported per layer and frame, relative to the rms of the layer's exact zero-point-corrected sum
``sum (w - zw)(x - zx)``: the error's mean over outputs (an offset: the table's per-product errors do not
cancel over a window when their mean is not zero on these codes) and its spread; plus the input codes'
statistics and the table's mean error per product on them.

    python bench/scene_error.py                                   # mul8u_NLX, synthetic sequences 1 and 1000
    python bench/scene_error.py --multiplier mul8u_197B --out bench/results
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import _write_atomic  # noqa: E402

from jaxdepth import data, export, lutconv, multipliers  # noqa: E402
from jaxdepth.inference import model_input_size, resize_batch  # noqa: E402
from jaxdepth.io import checkpoint  # noqa: E402
from jaxdepth.models import Plan  # noqa: E402

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "jaxdepth" / "assets" / "default_model" / "checkpoint"


def centred_sum(lc) -> np.ndarray:
    """The layer's exact zero-point-corrected sum ``sum (w - zw)(x - zx)`` (float32 convolution of integers
    below 2^24 in magnitude: exact)."""
    info = lc.info
    xs = lc.x_codes[None].astype(np.float32) - lc.x_zero_point
    ws = lc.w_codes.astype(np.float32) - np.asarray(lc.w_zero_point, np.float32)
    return np.asarray(jax.lax.conv_general_dilated(
        jnp.asarray(xs), jnp.asarray(ws), (info.stride,) * 2, [(info.padding,) * 2] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=info.groups), np.float64)


def layer_error(lc, circuit, impl: str = "auto") -> dict:
    """The layer's own table error on its captured codes, relative to the rms of its exact centred sum
    (``impl``: the `lutconv` kernel; every kernel gives the same bits)."""
    info = lc.info
    x, w = lc.x_codes[None].astype(np.uint8), lc.w_codes.astype(np.uint8)
    kw = dict(stride=info.stride, padding=info.padding, groups=info.groups, pad_code=int(lc.x_zero_point),
              impl=impl)
    err = (np.asarray(lutconv.conv2d(x, w, circuit, **kw), np.float64)
           - np.asarray(lutconv.conv2d(x, w, multipliers.get("exact_u8" if not circuit.signed else "exact_s8"),
                                       **kw), np.float64))
    rms = float(np.sqrt(np.mean(centred_sum(lc) ** 2)))
    xc = lc.x_codes.astype(np.int64)
    table_err = circuit.table.astype(np.int64) - np.outer(np.arange(256), np.arange(256)) if not circuit.signed \
        else None
    per_product = None
    if table_err is not None:  # the table's mean error per product under the codes' marginals
        hx = np.bincount(xc.ravel(), minlength=256) / xc.size
        hw = np.bincount(lc.w_codes.astype(np.int64).ravel(), minlength=256) / lc.w_codes.size
        per_product = float(hw @ table_err @ hx)
    return {"rel_error": float(np.sqrt(np.mean(err ** 2)) / rms), "offset": float(err.mean() / rms),
            "spread": float(err.std() / rms), "x_scale": float(lc.x_scale), "x_zero_point": int(lc.x_zero_point),
            "x_p50": float(np.median(xc)), "x_p99": float(np.percentile(xc, 99)), "error_per_product": per_product}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint (default: the bundled model)")
    ap.add_argument("--multiplier", default="mul8u_NLX")
    ap.add_argument("--data", nargs="*", default=["synthetic:32:1:120x160", "synthetic:32:1000:120x160"])
    ap.add_argument("--layers", nargs="*", default=["decoder.up2.convA", "decoder.up5.convA", "decoder.up5.convB",
                                                     "decoder.conv3"])
    ap.add_argument("--frames", type=int, nargs="*", default=[0, 3], help="frames whose codes are captured")
    ap.add_argument("--calib", type=int, default=8, help="calibration frames (the first of each data set)")
    ap.add_argument("--out", default=None, help="directory for scene_error_<multiplier>.md (default: print only)")
    args = ap.parse_args(argv)
    try:
        circuit = multipliers.get(args.multiplier)
    except KeyError as e:
        ap.error(f"--multiplier: {e.args[0]}")
    if args.calib < 1 or any(f < 0 for f in args.frames):
        ap.error("--calib must be >= 1 and --frames >= 0")
    if args.out and not os.access(Path(args.out), os.W_OK):
        ap.error(f"--out {args.out}: not a writable folder")
    model, variables, info = checkpoint.load(args.model)
    qmodel = model.clone(plan=Plan.make({"*": circuit}))
    size = tuple(model_input_size(qmodel, info))
    selected = export.select_layers(export.layer_infos(qmodel, size), args.layers)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# {circuit.name}: each layer's own error on the codes it sees ({now})", "",
             f"`python bench/scene_error.py --multiplier {circuit.name} --data {' '.join(args.data)}` (model "
             f"{Path(args.model).name}, calibration on the first {args.calib} frames of each data set, frames "
             f"{args.frames}). Error relative to the rms of the layer's exact centred sum: rms, mean over outputs "
             "(offset) and standard deviation (spread); input codes: zero point, median, 99th percentile; the "
             "table's mean error per product on these codes.", "",
             "| data | frame | layer | rel. error | offset | spread | x zero point | x p50 | x p99 | error / product |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for spec in args.data:
        ds = data.load(spec)
        frames = resize_batch(np.concatenate([b[0] for b in ds.batches(8)]), size).astype(np.float32) / 255.0
        if max(args.frames) >= len(frames):
            ap.error(f"{spec} has {len(frames)} frames; --frames {max(args.frames)} is past the end")
        for f in args.frames:
            codes = export.capture(qmodel, variables, frames[f], selected, calib_images=frames[:args.calib])
            for layer in selected:
                r = layer_error(codes[layer.name], circuit)
                per = "" if r["error_per_product"] is None else f"{r['error_per_product']:+.1f}"
                lines.append(f"| {spec} | {f} | {layer.name} | {r['rel_error']:.3f} | {r['offset']:+.3f} | "
                             f"{r['spread']:.3f} | {r['x_zero_point']} | {r['x_p50']:.0f} | {r['x_p99']:.0f} | {per} |")
                print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        path = Path(args.out) / f"scene_error_{circuit.name}.md"
        _write_atomic(path, text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
