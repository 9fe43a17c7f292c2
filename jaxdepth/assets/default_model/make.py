"""Package a trained run as the bundled default model: int8 calibration, held-out metrics, figures.

    python jaxdepth/assets/default_model/make.py RUN_DIR TRAIN_DATA HELDOUT_DATA [NYU_NPZ]

RUN_DIR is a `python -m jaxdepth.train` output folder. Writes, next to this file: ``checkpoint/`` (float
weights + a "quant" collection calibrated for every layer, for signed int8 and unsigned uint8 tables, on 32
training frames, so ``--multiplier int8`` or any other table needs no calibration), ``log.json`` / ``loss.png`` (training),
``metrics.json`` (held-out synthetic exact + int8, and the two real NYU frames when given) and figures
(example comparisons only for synthetic frames: NYU images are not redistributed in the package).
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from jaxdepth import viz
from jaxdepth.data import load
from jaxdepth.evaluation import evaluate
from jaxdepth.inference import make_predictor, resize_batch
from jaxdepth.io import checkpoint
from jaxdepth.models import Plan, calibrate

HERE = Path(__file__).resolve().parent


def main(run: str, train_data: str, heldout: str, nyu: str = "") -> None:
    model, variables, info = checkpoint.load(Path(run) / "checkpoint")
    size = tuple(model.preset.input_size)
    frames = load(train_data).arrays()[0]
    calib = [resize_batch(np.asarray(frames[s:s + 8]), size).astype(np.float32) / 255 for s in range(0, 32, 8)]
    int8 = model.clone(plan=Plan.make({"*": "int8"}))
    qvars = calibrate(int8, variables, calib, layers="all")
    extra = dict(info.get("extra", {}))
    extra["calibration"] = "minmax, all layers, signed int8 and unsigned uint8, 32 training frames"
    checkpoint.save(HERE / "checkpoint", model.preset, qvars, extra=extra)
    for f in ("log.json", "loss.png"):
        shutil.copy(Path(run) / f, HERE / f)

    exact = make_predictor(model, qvars, input_size=size)
    approx = make_predictor(int8, qvars, input_size=size)
    results = {"model": {"preset": model.preset.name, "input_size": size,
                         "train_steps": extra.get("steps"), "train_config": extra.get("config")}}
    sets = {"synthetic_heldout": heldout} | ({"nyu_two_frames": nyu} if nyu else {})
    for name, spec in sets.items():
        r = evaluate(approx, load(spec), reference=exact, batch_size=8, keep=2)
        ex = r.pop("examples")
        results[name] = {"data": spec, "frames": r["frames"], "exact": r["reference_accuracy"],
                         "int8": r["accuracy"], "int8_vs_exact": r["fidelity"]}
        for i, (rgb, gt, pred, ref) in enumerate(ex if name.startswith("synthetic") else []):  # no NYU pixels shipped
            viz.comparison(rgb, gt, ref, HERE / f"{name}_{i}.png",
                           titles=("input", "ground truth", "exact model", "|exact - gt| (m)"))
        viz.metrics_bars({"exact vs gt": r["reference_accuracy"], "int8 vs gt": r["accuracy"]},
                         HERE / f"{name}_metrics.png", title=f"{name} ({r['frames']} frames)")
        print(name, json.dumps({k: round(v, 4) for k, v in r["reference_accuracy"].items()}),
              "int8 delta1", round(r["accuracy"]["delta1"], 4))
    (HERE / "metrics.json").write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
