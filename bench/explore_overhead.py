"""Per-configuration overhead of `jaxdepth.explore` beyond the evaluation itself, and configurations per hour.

For a model (default: the bundled one) and N frames, alternating rounds of
  (a) the compiled model alone on every batch (the evaluation's unavoidable work), and
  (b) `Evaluator.evaluate` of a configuration with a different table each round (tables as runtime operands:
      no compilation after the first round), which adds plan resolution, variables, metrics, cost,
the overhead is the median of (b) - (a). Configurations per hour = 3600 / median (b).

    python bench/explore_overhead.py [--model CKPT] [--data synthetic:32:1000] [--rounds 5]
Writes bench/results/explore_overhead.json (with the date and `uptime` load).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default="synthetic:32:1000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "explore_overhead.json"))
    args = ap.parse_args()
    import numpy as np
    from jaxdepth import multipliers
    from jaxdepth.explore import Config, EvalSpec
    ev = EvalSpec(model=args.model, data=args.data).build()
    names = ["mul8u_2AC", "mul8u_NLX", "mul8u_ZDF", "mul8u_DG8", "mul8u_14VP", "mul8u_197B", "mul8u_L93"]
    tables = [multipliers.get(n) for n in names]
    t0 = time.time()
    ev.evaluate(Config("warm-up", (("*", tables[0]),)))              # compiles float + the unsigned structure
    first = time.time() - t0
    plain, full = [], []
    for r in range(args.rounds):
        m = tables[(r + 1) % len(tables)]
        config = Config(m.name, (("*", m),))
        a = ev.assignment(config)
        fn, v = ev._function(ev.structure(a)), ev.variables_for(a)
        t0 = time.time()
        for b in ev.batches:
            np.asarray(fn(v, ev._x[id(b[0])])[0])
        plain.append(time.time() - t0)
        t0 = time.time()
        ev.evaluate(config)
        full.append(time.time() - t0)
    over = [f - p for f, p in zip(full, plain)]
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
           "model": args.model or "bundled", "data": args.data, "frames": ev.frames, "rounds": args.rounds,
           "first_config_s_incl_compile": first, "compile_s": ev.compile_seconds,
           "model_only_s": plain, "evaluate_s": full, "overhead_s": over,
           "overhead_median_s": statistics.median(over), "configs_per_hour": 3600 / statistics.median(full)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if not isinstance(v, list)}, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "jax")
    main()
