"""Ratio to exact float from paired runs: the float convolution and each LUT call alternate, and the
ratio is the median over rounds of (float time / LUT time) within a round. On a shared host whose speed
drifts between rows of `compare.py`, this is the robust form of its "vs float" column.

    python bench/paired.py                                   # conv2 and up1.convA, mul8u_197B and mul8u_2AC
    python bench/paired.py --layers dw3x3_s2 --tables mul8u_2AC exact_s8 --rounds 20
    python bench/paired.py --tables mul8u_197B random16      # random16: a random full-range 16-bit table
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import LAYERS, codes, float_call, lut_call  # noqa: E402

from jaxdepth import multipliers  # noqa: E402


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
    args = ap.parse_args(argv)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"{now}, host load (1/5/15 min) {'/'.join(f'{v:.1f}' for v in os.getloadavg())}, "
          f"{args.rounds} rounds", flush=True)
    for key in args.layers:
        for name, r in paired(key, args.tables, args.rounds).items():
            print(f"{key:>10} {name:>12}  {r['seconds'] * 1e3:8.2f} ms  {r['gmac_s']:6.2f} GMAC/s  "
                  f"{r['ratio']:.3f}x float (paired)", flush=True)
    print(f"host load after: {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
