"""Training steps per second: float vs int8 vs LUT plans, and what a LUT step costs beyond its forward.

For each plan the bundled model (or ``--model``) gets one jitted forward and one jitted training step
(`jaxdepth.training.make_train_step`: LUT forward, straight-through float backward, Adam, frozen BatchNorm
statistics, every weight trained). The calls alternate plan by plan in every round (a shared host drifts),
and the figures are medians over rounds, ratios taken within a round. The check the issue asks for:
``step(LUT) ~= forward(LUT) + (step(float) - forward(float))`` (the backward is the float one).

    python bench/train_steps.py                                 # float, int8, mul8u_NLX, mul8s_1L2J
    python bench/train_steps.py --plans float mul8u_197B --rounds 8 --batch-size 4
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdepth import models, training
from jaxdepth.io import atomic, checkpoint

DEFAULT = Path(__file__).resolve().parents[1] / "jaxdepth" / "assets" / "default_model" / "checkpoint"


def calls(model_path: str, plan_name: str, x: np.ndarray, y: np.ndarray) -> dict:
    """{"forward": fn, "step": fn, "compile_s": seconds to compile both}; every fn blocks until done."""
    model, variables, _ = checkpoint.load(model_path, plan=models.FLOAT_PLAN)
    if plan_name != "float":
        model, variables = training.prepare_student(model, variables, {"*": plan_name}, x, "calibrate")
    keys = training.select_trainable(variables["params"], "all")
    state, frozen = training.split_variables(variables, keys, False)
    tx = training.make_optimizer(1e-5, 1000)
    opt = tx.init(state)
    step = training.make_train_step(model, tx, update_bn_stats=False)
    fwd = jax.jit(lambda v, x: model.apply(v, x))
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    t0 = time.perf_counter()
    jax.block_until_ready(fwd(variables, xj))
    jax.block_until_ready(step(state, frozen, opt, xj, yj, None))
    compile_s = time.perf_counter() - t0
    return {"forward": lambda: jax.block_until_ready(fwd(variables, xj)),
            "step": lambda: jax.block_until_ready(step(state, frozen, opt, xj, yj, None)[3]),
            "compile_s": compile_s}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT))
    ap.add_argument("--plans", nargs="+", default=["float", "int8", "mul8u_NLX", "mul8s_1L2J"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, nargs=2, default=(120, 160))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "train_steps.json"))
    a = ap.parse_args(argv)
    from jaxdepth.data import synthetic
    images, depths = synthetic.generate(a.batch_size, 21, *a.size)
    x = images.astype(np.float32) / 255
    y = training.depth_to_target(depths, (a.size[0] // 2, a.size[1] // 2))
    fns = {}
    for p in a.plans:
        fns[p] = calls(a.model, p, x, y)
        print(f"{p}: compiled forward + step in {fns[p]['compile_s']:.1f} s", flush=True)
    times = {p: {"forward": [], "step": []} for p in a.plans}
    for r in range(a.rounds):
        for p in a.plans:
            for kind in ("forward", "step"):
                t0 = time.perf_counter()
                fns[p][kind]()
                times[p][kind].append(time.perf_counter() - t0)
    base = a.plans[0]
    rows = {}
    for p in a.plans:
        f, s = times[p]["forward"], times[p]["step"]
        fb, sb = times[base]["forward"], times[base]["step"]
        predicted = [fi + (sbi - fbi) for fi, sbi, fbi in zip(f, sb, fb)]   # LUT forward + float backward
        rows[p] = {"forward_s": statistics.median(f), "step_s": statistics.median(s),
                   "steps_per_s": 1.0 / statistics.median(s),
                   f"step_vs_{base}": statistics.median([si / b for si, b in zip(s, sb)]),
                   "step_vs_forward_plus_float_backward": statistics.median([si / q for si, q in zip(s, predicted)]),
                   "compile_s": fns[p]["compile_s"]}
    load = os.getloadavg()
    result = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "loadavg": load,
              "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
              "model": a.model, "batch_size": a.batch_size, "size": list(a.size), "rounds": a.rounds,
              "plans": rows}
    print(f"{'plan':<12} {'fwd s':>8} {'step s':>8} {'steps/s':>8} {'vs ' + base:>9} {'step/(fwd+float bwd)':>21}")
    for p, r in rows.items():
        print(f"{p:<12} {r['forward_s']:8.3f} {r['step_s']:8.3f} {r['steps_per_s']:8.2f} {r[f'step_vs_{base}']:9.2f} "
              f"{r['step_vs_forward_plus_float_backward']:21.2f}")
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; wrote {a.out}")
    atomic.write_json(a.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
