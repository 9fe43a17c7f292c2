"""How good `auto`'s cost model is: estimated vs measured seconds per kernel on every distinct layer shape of
the two DenseDepth networks at 480x640 (bench/layer_shapes.py), and what `auto`'s misses cost.

Per layer and table, `lutconv.explain` gives each candidate kernel's estimate; the kernels whose estimate is
within ``--within`` of the best one (the only ones `auto` could plausibly pick) and `auto`'s choice are run
under `jax.jit` in alternating rounds (median of ``--repeats``). Reported: estimate / measured per kernel
(median and spread, share within 1.5x and 2x), how often `auto`'s choice is the fastest measured, and the
time its misses add to a whole network (layers counted as often as the network has them).

    python bench/cost_model.py --networks mobilenetv2 --tables mul8u_197B      # a few minutes
    python bench/cost_model.py --out bench/results                             # both networks, two tables
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import NETWORKS, _write_atomic, alternating, codes, lut_call  # noqa: E402

from jaxdepth import lutconv, multipliers  # noqa: E402


def distinct_layers(net: str) -> list[tuple[object, int]]:
    """[(layer, how many times the network has its shape)] in network order."""
    seen: dict[tuple, list] = {}
    for layer in NETWORKS[net]():
        key = (layer.x_shape, layer.w_shape, layer.stride, layer.padding, layer.groups)
        if key in seen:
            seen[key][1] += 1
        else:
            seen[key] = [layer, 1]
    return [(layer, count) for layer, count in seen.values()]


def measure(layer, table_name: str, within: float, repeats: int) -> dict:
    mult = multipliers.get(table_name)
    choice = lutconv.explain(layer.x_shape, layer.w_shape, mult, stride=layer.stride, padding=layer.padding,
                             groups=layer.groups)
    estimates = dict(choice.estimates)
    best_estimate = min(estimates.values())
    run = sorted({k for k, e in estimates.items() if e <= within * best_estimate} | {choice.kernel})
    x, w = codes(layer, mult.signed, seed=1)
    timed = alternating([lut_call(layer, k, mult, mult.signed, x, w) for k in run], repeats)
    measured = {k: t[0] for k, t in zip(run, timed)}
    fastest = min(measured, key=measured.get)
    return {"layer": layer.name, "x_shape": layer.x_shape, "w_shape": layer.w_shape, "stride": layer.stride,
            "groups": layer.groups, "table": table_name, "auto": choice.kernel, "fastest": fastest,
            "estimated": {k: estimates[k] for k in run}, "measured": measured,
            "auto_loss_s": measured[choice.kernel] - measured[fastest]}


def summarize(rows: list[dict]) -> dict:
    ratios: dict[str, list[float]] = {}
    for r in rows:
        for k, t in r["measured"].items():
            ratios.setdefault(k, []).append(r["estimated"][k] / t)
    per_kernel = {}
    for k, rs in sorted(ratios.items()):
        off = [max(q, 1 / q) for q in rs]
        per_kernel[k] = {"layers": len(rs), "median_est_over_measured": statistics.median(rs),
                         "min": min(rs), "max": max(rs),
                         "within_1.5x": sum(o <= 1.5 for o in off) / len(off),
                         "within_2x": sum(o <= 2.0 for o in off) / len(off)}
    out = {"per_kernel": per_kernel, "networks": {}}
    for net in sorted({r["network"] for r in rows}):
        for table in sorted({r["table"] for r in rows}):
            sel = [r for r in rows if r["network"] == net and r["table"] == table]
            if not sel:
                continue
            total = sum(r["count"] * r["measured"][r["auto"]] for r in sel)
            lost = sum(r["count"] * r["auto_loss_s"] for r in sel)
            out["networks"][f"{net} / {table}"] = {
                "distinct_layers": len(sel), "auto_fastest_share": sum(r["auto"] == r["fastest"] for r in sel) / len(sel),
                "network_seconds_auto": total, "seconds_lost_to_misses": lost,
                "worst_miss": max(sel, key=lambda r: r["count"] * r["auto_loss_s"])["layer"]}
    return out


def markdown(rows: list[dict], summary: dict, meta: dict) -> str:
    lines = [f"# Cost model vs measurement ({meta['time']})", "",
             f"Machine: {meta['machine']}, host load {meta['load']}. Distinct layer shapes of the networks at "
             f"480x640, random codes, batch 1, median of {meta['repeats']} alternating rounds; kernels run: those "
             f"estimated within {meta['within']}x of the best estimate, and `auto`'s choice.", "",
             "## Estimate / measured, per kernel", "",
             "| kernel | layers | median | min | max | within 1.5x | within 2x |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for k, s in summary["per_kernel"].items():
        lines.append(f"| {k} | {s['layers']} | {s['median_est_over_measured']:.2f} | {s['min']:.2f} | {s['max']:.2f} | "
                     f"{s['within_1.5x']:.0%} | {s['within_2x']:.0%} |")
    lines += ["", "## `auto`'s choice", "", "| network / table | distinct layers | auto fastest | network s (auto) | "
              "s lost to misses | largest loss |", "| --- | --- | --- | --- | --- | --- |"]
    for key, s in summary["networks"].items():
        lines.append(f"| {key} | {s['distinct_layers']} | {s['auto_fastest_share']:.0%} | {s['network_seconds_auto']:.2f} | "
                     f"{s['seconds_lost_to_misses']:.3f} | {s['worst_miss']} |")
    lines += ["", "## Layers where `auto` missed the fastest kernel by more than 10%", "",
              "| network | layer | table | auto | fastest | auto s | fastest s | estimates (ms) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        t_auto, t_best = r["measured"][r["auto"]], r["measured"][r["fastest"]]
        if t_auto > 1.1 * t_best:
            est = ", ".join(f"{k} {v * 1e3:.3g}" for k, v in r["estimated"].items())
            lines.append(f"| {r['network']} | {r['layer']} | {r['table']} | {r['auto']} | {r['fastest']} | "
                         f"{t_auto:.4f} | {t_best:.4f} | {est} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="*", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--tables", nargs="*", default=["mul8u_197B", "mul8u_2AC"])
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds per layer (median)")
    ap.add_argument("--within", type=float, default=3.0, help="also run kernels estimated within this factor "
                                                                "of the best estimate")
    ap.add_argument("--out", default=None, help="directory for cost_model.json / .md (default: print only)")
    args = ap.parse_args(argv)
    if args.repeats < 1 or not args.within >= 1:
        ap.error("--repeats must be >= 1 and --within >= 1")
    for name in args.tables:
        try:
            multipliers.get(name)  # unknown names fail now, not after the first network
        except KeyError as e:
            ap.error(f"--tables: {e.args[0]}")
    out = Path(args.out) if args.out else None
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            ap.error(f"--out {out}: {e.strerror}")
        if not os.access(out, os.W_OK):
            ap.error(f"--out {out}: not writable")
    meta = {"time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "repeats": args.repeats,
            "within": args.within, "load": "/".join(f"{v:.1f}" for v in os.getloadavg())}
    rows = []
    for net in args.networks:
        for table in args.tables:
            for layer, count in distinct_layers(net):
                r = {"network": net, "count": count, **measure(layer, table, args.within, args.repeats)}
                rows.append(r)
                ests = "  ".join(f"{k} {r['estimated'][k] * 1e3:.3g}/{t * 1e3:.3g}" for k, t in r["measured"].items())
                print(f"{net:12s} {table:11s} {layer.name:34s} x{count:<2d} auto {r['auto']:8s} fastest "
                      f"{r['fastest']:8s} est/meas ms: {ests}", flush=True)
    summary = summarize(rows)
    meta["load_after"] = "/".join(f"{v:.1f}" for v in os.getloadavg())
    text = markdown(rows, summary, meta)
    print(text)
    if out is not None:
        _write_atomic(out / "cost_model.json", json.dumps({"meta": meta, "summary": summary, "rows": rows},
                                                          indent=1, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))
        _write_atomic(out / "cost_model.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
