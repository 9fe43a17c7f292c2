"""Ratio to exact float from paired runs: the float convolution and each LUT call alternate, and the
ratio is the median over rounds of (float time / LUT time) within a round. On a shared host whose speed
drifts between rows of `compare.py`, this is the robust form of its "vs float" column.

    python bench/paired.py                                   # conv2 and up1.convA, mul8u_197B and mul8u_2AC
    python bench/paired.py --layers dw3x3_s2 --tables mul8u_2AC exact_s8 --rounds 20
    python bench/paired.py --tables mul8u_197B random16      # random16: a random full-range 16-bit table
    python bench/paired.py --out bench/results --note "..."  # also append the run to paired.json / .md there
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import LAYERS, _write_atomic, codes, float_call, lut_call  # noqa: E402

from jaxdepth import lutconv, multipliers  # noqa: E402


def table_named(name: str):
    """(table, signed): a multiplier by name, or ``random16``: uniform random unsigned 16-bit entries (full
    range, no structure: the generic kernels' worst case)."""
    if name == "random16":
        return np.random.default_rng(16).integers(0, 1 << 16, (256, 256)).astype(np.int32), False
    mult = multipliers.get(name)
    return mult, mult.signed


def paired(layer_key: str, tables: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """{table: {"ratio": median float/LUT time ratio, "seconds": median LUT seconds, "gmac_s": ...}}."""
    layer = LAYERS[layer_key]
    calls = {}
    for name in tables:
        table, signed = table_named(name)
        x, w = codes(layer, signed)
        calls[name] = lut_call(layer, "auto", table, signed, x, w)
    x, w = codes(layer, False)
    calls["float"] = float_call(layer, x, w)
    for fn in calls.values():
        jax.block_until_ready(fn())  # compile / warm up
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for key, fn in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[key].append(time.perf_counter() - t0)
    out = {}
    for name in tables:
        seconds = statistics.median(times[name])
        out[name] = {"ratio": statistics.median(f / t for f, t in zip(times["float"], times[name])),
                     "seconds": seconds, "gmac_s": layer.macs / seconds / 1e9}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", nargs="*", default=["conv2", "up1.convA"], choices=list(LAYERS))
    ap.add_argument("--tables", nargs="*", default=["mul8u_197B", "mul8u_2AC"])
    ap.add_argument("--rounds", type=int, default=12, help="alternating rounds (median)")
    ap.add_argument("--out", default=None, help="directory to append this run to (paired.json, paired.md)")
    ap.add_argument("--note", default="", help="free text stored with the run (e.g. which code)")
    args = ap.parse_args(argv)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    print(f"{now}, host load (1/5/15 min) {'/'.join(f'{v:.1f}' for v in load_before)}, "
          f"{args.rounds} rounds", flush=True)
    results = []
    for key in args.layers:
        for name, r in paired(key, args.tables, args.rounds).items():
            layer = LAYERS[key]
            table, _ = table_named(name)
            kernel = lutconv.explain(layer.x_shape, layer.w_shape, getattr(table, "table", table),
                                     stride=layer.stride, padding=layer.padding, groups=layer.groups).kernel
            results.append({"layer": key, "table": name, "kernel": kernel, **r})
            print(f"{key:>10} {name:>12}  {r['seconds'] * 1e3:8.2f} ms  {r['gmac_s']:6.2f} GMAC/s  "
                  f"{r['ratio']:.3f}x float (paired, {kernel})", flush=True)
    load_after = os.getloadavg()
    print(f"host load after: {'/'.join(f'{v:.1f}' for v in load_after)}")
    if args.out:
        _append_run(Path(args.out), {
            "when": now, "note": args.note, "rounds": args.rounds, "host": _host(),
            "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in load_after],
            "results": results})
    return 0


def _host() -> str:
    """CPU model and core count (the ratios depend on the host: e.g. AVX-512 or not)."""
    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def _append_run(out: Path, run: dict) -> None:
    """Append ``run`` to out/paired.json (a list of runs) and rewrite out/paired.md from it (atomic writes)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "paired.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    runs.append(run)
    _write_atomic(path, json.dumps(runs, indent=1) + "\n")
    lines = ["# Paired ratios to exact float (bench/paired.py)", "",
             "Float convolution and LUT call alternate; ratio = median over rounds of float time / LUT time "
             "in the same round (> 1: faster than float). Host load (1-minute average) before / after each run.",
             ""]
    for r in runs:
        lines += [f"## {r['when']}: {r['note'] or '(no note)'}", "",
                  f"{r['host']}; {r['rounds']} rounds; load {r['load_before'][0]:.1f} / {r['load_after'][0]:.1f}",
                  "", "| layer | table | kernel | ms | GMAC/s | vs float |", "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {x['layer']} | {x['table']} | {x['kernel']} | {x['seconds'] * 1e3:.1f} | {x['gmac_s']:.2f} | "
                  f"{x['ratio']:.3f}x |" for x in r["results"]]
        lines.append("")
    _write_atomic(out / "paired.md", "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
