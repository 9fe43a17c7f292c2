"""Side-by-side LUT convolution benchmark: the seed's v1/v2, pure XLA gather, the fast kernels, exact float.

Layers (batch 1 unless --batch): the seed's DenseNet-161 decoder ``conv2`` (1x15x20x2208, 1104 1x1 filters)
and ``up1.convA`` (1x30x40x1488, 552 3x3 filters, padding 1), MobileNetV2 depthwise 3x3 layers
(1x120x160x144, groups 144, stride 1 and 2), then whole networks at 480x640 as the sum over their layer
shapes (bench/layer_shapes.py) with impl="auto", and the real Flax models (jaxdepth.models, random init +
calibration on a random image) end to end under jax.jit at 480x640, every conv/dense through ``--table``
(plan {"*": table}), each model in its own process so its peak resident memory is its own, against the
float model compiled in the same process.

Per implementation: seconds per layer (median of --repeats; the best run is reported too, since the
machine may be shared), time per output value (the seed's unit),
GMAC/s, speed-up over the seed's figures (v2: 83 ms per conv2 output value, ~327 s per up1.convA output
channel; other layers at the v2 rate of 26,600 multiplications/s) and the ratio to the exact float32 XLA
convolution measured in the same run. ``loop``, ``vectorized``, their XLA versions ``xla_loop`` / ``xla_vmap`` (and ``gather`` on big layers) run on
a slice of output channels and are extrapolated: marked "extrapolated".

Tables: ``--table`` (default mul8u_2AC, an EvoApprox circuit: non-commutative, integer rank 11, an exact
plan of 10 int8 terms) through every implementation, in the network sums and the real models;
``--lowrank-tables`` (exact and few-term tables) through lowrank and auto; ``--fullrank-tables`` (default
mul8u_197B, one of the 17 EvoApprox circuits with no int8 plan: the worst case, run on wstat / dwrows /
direct) through auto, and in the network sums.

    python bench/compare.py --quick          # a short run, results in bench/quick/ (not committed)
    python bench/compare.py                   # everything, results in bench/results/
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layer_shapes import NETWORKS, Layer  # noqa: E402

from jaxdepth import lutconv, multipliers  # noqa: E402
from jaxdepth.lutconv import lowrank  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"        # the committed figures (full runs)
QUICK_RESULTS = Path(__file__).resolve().parent / "quick"    # --quick runs (git-ignored)
SEED_V2_PER_MAC = 0.083 / 2208            # seconds per multiplication of the seed's v2 (conv2 figure)
SEED_PER_OUTPUT = {"conv2": 0.083,         # measured by the seed, seconds per output value
                   "up1.convA": 327.0 / 1200}

LAYERS = {
    "conv2": Layer("conv2", (1, 15, 20, 2208), (1, 1, 2208, 1104)),
    "up1.convA": Layer("up1.convA", (1, 30, 40, 1488), (3, 3, 1488, 552), padding=1),
    "dw3x3_s1": Layer("dw3x3_s1", (1, 120, 160, 144), (3, 3, 1, 144), padding=1, groups=144),
    "dw3x3_s2": Layer("dw3x3_s2", (1, 120, 160, 144), (3, 3, 1, 144), stride=2, padding=1, groups=144),
}
SLICED = {"loop": 2, "vectorized": 16, "xla_loop": 2, "xla_vmap": 16}  # output channels run by the slow ones
GATHER_FULL_LIMIT = 2e9                     # gather runs on a slice above this many MACs


def codes(layer: Layer, signed: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lo, hi = (-128, 128) if signed else (0, 256)
    return (rng.integers(lo, hi, layer.x_shape).astype(np.int8 if signed else np.uint8),
            rng.integers(lo, hi, layer.w_shape).astype(np.int8 if signed else np.uint8))


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median, best) seconds of ``repeats`` runs after a warm-up run (the best run shows what the
    kernel does when the shared machine's other load leaves it alone)."""
    return alternating([fn], repeats)[0]


def paired(fa, fb, repeats: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """`timed` for two functions in alternating runs (a, b, a, b, ...), so a change in the shared host's
    load falls on both: ((median, best) of a, (median, best) of b)."""
    a, b = alternating([fa, fb], repeats)
    return a, b


def alternating(fns, repeats: int) -> list[tuple[float, float]]:
    """(median, best) seconds of each function over ``repeats`` rounds that run them in turn, after one
    warm-up call of each."""
    for fn in fns:
        jax.block_until_ready(fn())  # compile / warm up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            out.append(time.perf_counter() - t0)
    return [(statistics.median(t), min(t)) for t in times]


def lut_call(layer: Layer, impl: str, table, signed: bool, x, w):
    kw = dict(stride=layer.stride, padding=layer.padding, groups=layer.groups, signed=signed, impl=impl)
    if impl in ("loop", "vectorized"):
        return lambda: lutconv.conv2d(x, w, table, **kw)
    f = jax.jit(lambda a, b: lutconv.conv2d(a, b, table, **kw))
    xa, wa = jnp.asarray(x), jnp.asarray(w)
    return lambda: f(xa, wa)


def float_call(layer: Layer, x, w):
    f = jax.jit(lambda a, b: jax.lax.conv_general_dilated(
        a, b, (layer.stride,) * 2, [(layer.padding,) * 2] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=layer.groups))
    xa, wa = jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
    return lambda: f(xa, wa)


def bench_layer(key: str, layer: Layer, table_name: str, impls: list[str], repeats: int) -> list[dict]:
    mult = multipliers.get(table_name)
    x, w = codes(layer, mult.signed)
    t_float = timed(float_call(layer, x, w), repeats)
    rows = [_row(key, layer, "exact float32 (XLA)", "-", t_float, t_float, 1.0)]
    for impl in impls:
        if impl not in ("auto", "loop", "vectorized") and _why_not(impl, layer, mult.table):
            continue
        o = layer.w_shape[3]
        sliced = SLICED.get(impl) or (o if impl != "gather" or layer.macs < GATHER_FULL_LIMIT else 32)
        sliced = max(layer.groups, min(o, sliced - sliced % layer.groups)) if layer.groups > 1 else min(o, sliced)
        sub = Layer(layer.name, layer.x_shape, layer.w_shape[:3] + (sliced,), layer.stride, layer.padding,
                    layer.groups if layer.groups == 1 else layer.groups)
        if layer.groups > 1 and sliced < o:  # depthwise slices: fewer channels in and out
            sub = Layer(layer.name, layer.x_shape[:3] + (sliced,), layer.w_shape[:3] + (sliced,),
                        layer.stride, layer.padding, sliced)
        xs, ws = x[..., :sub.x_shape[3]], w[..., :sliced]
        reps = 1 if impl in ("loop", "vectorized", "xla_loop") else repeats
        if impl in ("loop", "xla_loop"):  # a few output positions too
            xs = xs[:, :layer.w_shape[0] + 1, :layer.w_shape[1] + 1]
            sub = Layer(sub.name, xs.shape, sub.w_shape, sub.stride, sub.padding, sub.groups)
        t = timed(lut_call(sub, impl, mult, mult.signed, xs, ws), reps)
        rows.append(_row(key, layer, impl, table_name, t, t_float, layer.macs / sub.macs))
    choice = lutconv.explain(layer.x_shape, layer.w_shape, mult, stride=layer.stride, padding=layer.padding,
                             groups=layer.groups).kernel
    for r in rows:
        r["auto_choice"] = choice
    return rows


def _why_not(impl: str, layer: Layer, table) -> str | None:
    n, h, w, c = layer.x_shape
    p = 2 * layer.padding
    spec = lutconv.ConvSpec((layer.stride,) * 2, (1, 1), layer.groups)
    problem = lutconv.Problem((n, h + p, w + p, c), layer.w_shape, spec, table, True)
    return lutconv.registry.get_kernel(impl).supports(problem)


def _row(key, layer, impl, table, t, t_float, scale) -> dict:
    """One result row; ``t``/``t_float`` are (median, best) and ``scale`` extrapolates a slice."""
    outputs = layer.x_shape[0] * layer.out_hw[0] * layer.out_hw[1] * layer.w_shape[3]
    seed = SEED_PER_OUTPUT.get(key, layer.macs * SEED_V2_PER_MAC / outputs) * outputs
    seconds, best = t[0] * scale, t[1] * scale
    return {"layer": key, "impl": impl, "table": table, "seconds": seconds, "best_seconds": best,
            "per_output_us": seconds / outputs * 1e6, "gmac_s": layer.macs / seconds / 1e9,
            "best_gmac_s": layer.macs / best / 1e9, "speedup_vs_seed_v2": seed / seconds,
            "ratio_to_float": t_float[0] / seconds, "best_ratio_to_float": t_float[1] / best,
            "extrapolated": scale != 1, "macs": layer.macs}


def bench_network(net: str, table_name: str, batch: int, repeats: int) -> dict:
    mult = multipliers.get(table_name)
    layers = [layer.batched(batch) for layer in NETWORKS[net]()]
    total, t_float, best, best_float, per_kernel, per_layer = 0.0, 0.0, 0.0, 0.0, {}, []
    for layer in layers:
        x, w = codes(layer, mult.signed, seed=1)
        choice = lutconv.explain(layer.x_shape, layer.w_shape, mult, stride=layer.stride,
                                 padding=layer.padding, groups=layer.groups).kernel
        (t, tb), (tf, tfb) = timed(lut_call(layer, "auto", mult, mult.signed, x, w), repeats), \
            timed(float_call(layer, x, w), repeats)
        total, best, t_float, best_float = total + t, best + tb, t_float + tf, best_float + tfb
        per_layer.append({"name": layer.name, "x_shape": layer.x_shape, "w_shape": layer.w_shape,
                          "stride": layer.stride, "groups": layer.groups, "kernel": choice, "seconds": t,
                          "gmac_s": layer.macs / t / 1e9, "float_seconds": tf})
        per_kernel[choice] = per_kernel.get(choice, 0.0) + t
    macs = sum(layer.macs for layer in layers)
    return {"network": net, "table": table_name, "batch": batch, "layers": len(layers), "gmac": macs / 1e9,
            "seconds": total, "seconds_per_image": total / batch, "gmac_s": macs / total / 1e9,
            "best_seconds_per_image": best / batch, "float_seconds": t_float,
            "ratio_to_float": t_float / total, "best_ratio_to_float": best_float / best,
            "seconds_by_kernel": per_kernel, "per_layer": per_layer}


def bench_model(preset: str, table_name: str, repeats: int, size: tuple[int, int] = (480, 640)) -> dict:
    """The real DenseDepth model, end to end under jax.jit: float vs every conv/dense through the table,
    timed in alternating runs. Run in a fresh process (`model_in_subprocess`) for a per-model peak RSS."""
    from jaxdepth import models

    x = np.random.default_rng(0).random((1,) + size + (3,), dtype=np.float32)
    float_model = models.build(preset)
    variables = models.init_variables(float_model, 0)
    t0 = time.perf_counter()
    f_float = models.compile_apply(float_model, variables, x.shape)
    compile_float = time.perf_counter() - t0
    model = models.build(preset, plan={"*": table_name})
    t0 = time.perf_counter()
    calibrated = models.calibrate(model, variables, x)
    calibrate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    f_lut = models.compile_apply(model, calibrated, x.shape)
    compile_lut = time.perf_counter() - t0
    t_float, t = paired(lambda: f_float(variables, x), lambda: f_lut(calibrated, x), repeats)  # interleaved
    macs = sum(layer.macs for layer in NETWORKS[preset](*size))
    return {"model": preset, "table": table_name, "batch": 1, "size": list(size), "gmac": macs / 1e9,
            "seconds_per_image": t[0], "best_seconds_per_image": t[1], "float_seconds": t_float[0],
            "best_float_seconds": t_float[1], "ratio_to_float": t_float[0] / t[0], "gmac_s": macs / t[0] / 1e9,
            "compile_seconds": compile_lut, "float_compile_seconds": compile_float,
            "calibrate_seconds": calibrate_s, "repeats": repeats,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def model_in_subprocess(preset: str, table_name: str, repeats: int) -> dict:
    """`bench_model` in a fresh interpreter (its own peak RSS); the result is the last stdout line."""
    cmd = [sys.executable, __file__, "--model-only", preset, "--table", table_name, "--repeats", str(repeats)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_batches(key: str, table_name: str, batches: list[int], repeats: int) -> list[dict]:
    """impl="auto" at several batch sizes: per-image seconds (batch > 1 runs the images in parallel)."""
    mult = multipliers.get(table_name)
    out = []
    for b in batches:
        layer = LAYERS[key].batched(b)
        x, w = codes(layer, mult.signed, seed=2)
        t, tb = timed(lut_call(layer, "auto", mult, mult.signed, x, w), repeats)
        out.append({"layer": key, "table": table_name, "batch": b, "seconds": t, "seconds_per_image": t / b,
                    "gmac_s": layer.macs / t / 1e9, "best_seconds_per_image": tb / b})
    return out


def _load(avg) -> str:
    return "/".join(f"{v:.1f}" for v in avg)


def markdown(rows: list[dict], nets: list[dict], meta: dict, batches: list[dict] = (),
             model_rows: list[dict] = ()) -> str:
    out = [f"# LUT convolution benchmark ({meta['date']})", "",
           f"Machine: {meta['machine']}, {meta['threads']} numba threads, jax {meta['jax']}. Medians of "
           f"{meta['repeats']} runs. Seed v2 = 83 ms per conv2 output value."
           + (f" Host load (1/5/15 min) {_load(meta['load_before'])} before, {_load(meta['load_after'])} after "
              "(a shared host: ratios to float from the same run are the robust figures)."
              if "load_before" in meta else ""), "",
           "| layer | impl | table | s/layer | us/output | GMAC/s | GMAC/s (best) | vs seed v2 | vs float "
           "| vs float (best) | auto |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ex = " (extrapolated)" if r["extrapolated"] else ""
        out.append(f"| {r['layer']} | {r['impl']}{ex} | {r['table']} | {r['seconds']:.4g} | "
                   f"{r['per_output_us']:.4g} | {r['gmac_s']:.3g} | {r['best_gmac_s']:.3g} | "
                   f"{r['speedup_vs_seed_v2']:.3g}x | {r['ratio_to_float']:.3g}x | "
                   f"{r['best_ratio_to_float']:.3g}x | {r['auto_choice']} |")
    if nets:
        out += ["", "| network (480x640) | table | batch | GMAC | s/image | s/image (best) | GMAC/s | vs float "
                "| s by kernel |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for n in nets:
            by = ", ".join(f"{k} {v:.2f}" for k, v in n["seconds_by_kernel"].items())
            out.append(f"| {n['network']} | {n['table']} | {n['batch']} | {n['gmac']:.1f} | "
                       f"{n['seconds_per_image']:.2f} | {n['best_seconds_per_image']:.2f} | {n['gmac_s']:.2f} | "
                       f"{n['ratio_to_float']:.3g}x | {by} |")
    if batches:
        out += ["", "| layer | table | batch | s/batch | s/image | s/image (best) | GMAC/s |",
                "| --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {b['layer']} | {b['table']} | {b['batch']} | {b['seconds']:.4g} | {b['seconds_per_image']:.4g} "
                f"| {b['best_seconds_per_image']:.4g} | {b['gmac_s']:.3g} |" for b in batches]
    if model_rows:
        out += ["", "Real Flax models end to end (jax.jit, batch 1, random init + calibration, every conv/dense "
                "through the table; float = the same model in float32 XLA, same process):", "",
                "| model (480x640) | table | GMAC | s/image | s/image (best) | GMAC/s | float s/image | vs float "
                "| compile s | peak RSS GiB |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {m['model']} | {m['table']} | {m['gmac']:.1f} | {m['seconds_per_image']:.2f} | "
                f"{m['best_seconds_per_image']:.2f} | {m['gmac_s']:.2f} | {m['float_seconds']:.3f} | "
                f"{m['ratio_to_float']:.3g}x | {m['compile_seconds']:.0f} | {m['peak_rss_gib']:.2f} |"
                for m in model_rows]
    out += ["", f"Peak resident memory of the run: {meta['peak_rss_gib']:.2f} GiB"]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run: 2 repeats, conv2 and depthwise only, "
                    "no whole networks")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    ap.add_argument("--layers", nargs="*", default=list(LAYERS), choices=list(LAYERS))
    ap.add_argument("--impls", nargs="*", default=None, help="implementations (default: all)")
    ap.add_argument("--table", default="mul8u_2AC", help="arbitrary-table benchmark multiplier")
    ap.add_argument("--lowrank-tables", nargs="*", default=["exact_s8", "exact_u8", "mul8s_1KV8", "mul8s_1KVA", "trunc_u8_k4"],
                    help="tables benchmarked through the lowrank kernel as well")
    ap.add_argument("--fullrank-tables", nargs="*", default=["mul8u_197B"],
                    help="tables with no exact int8 plan (auto runs them on wstat / dwrows / direct)")
    ap.add_argument("--networks", nargs="*", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--batch", type=int, nargs="*", default=[1], help="network batch sizes")
    ap.add_argument("--models", nargs="*", default=list(NETWORKS), choices=list(NETWORKS),
                    help="real Flax models run end to end (one process each)")
    ap.add_argument("--model-repeats", type=int, default=3, help="timed runs per real model (median)")
    ap.add_argument("--model-only", choices=list(NETWORKS), help=argparse.SUPPRESS)  # internal: one model
    ap.add_argument("--out", default=None, help="directory for JSON and markdown results (default: "
                    "bench/results, or bench/quick with --quick so a short run never replaces the committed "
                    "figures)")
    ap.add_argument("--name", default="compare", help="result file stem")
    args = ap.parse_args(argv)
    if args.model_only:
        print(json.dumps(bench_model(args.model_only, args.table, args.repeats)))
        return 0
    load_before = os.getloadavg()  # the host is shared: the load goes with the figures
    if args.quick:
        args.repeats, args.layers, args.networks, args.models = 2, ["conv2", "dw3x3_s1", "dw3x3_s2"], [], []
    impls = args.impls or [i for i in ["loop", "xla_loop", "vectorized", "xla_vmap", "gather", "direct", "wstat",
                                       "lowrank", "auto"]
                           if i in lutconv.implementations() + ["auto"]]
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    rows = []
    for key in args.layers:
        dense = LAYERS[key].groups == 1  # XLA has no fast grouped int8 convolution: no lowrank rows there
        layer_impls = [i for i in impls if i != "lowrank"
                       or (dense and lowrank.supports(multipliers.get(args.table).table) is None)]
        rows += bench_layer(key, LAYERS[key], args.table, layer_impls, args.repeats)
        for t in args.lowrank_tables:
            rows += [r for r in bench_layer(key, LAYERS[key], t, ["lowrank", "auto"] if dense else ["auto"],
                                            args.repeats)
                     if r["impl"] != "exact float32 (XLA)"]
        for t in args.fullrank_tables:
            rows += [r for r in bench_layer(key, LAYERS[key], t, ["auto"], args.repeats)
                     if r["impl"] != "exact float32 (XLA)"]
        print("\n".join(f"{r['layer']:>10} {r['impl']:>22} {r['table']:>10} {r['seconds']:10.4g}s "
                        f"{r['gmac_s']:8.3g} GMAC/s {r['ratio_to_float']:7.3g}x float"
                        for r in rows if r["layer"] == key), flush=True)
    batches = []
    for key in [k for k in ("conv2", "up1.convA") if k in args.layers and not args.quick]:
        batches += bench_batches(key, args.table, [1, 2, 4], args.repeats)
        print(batches[-3:], flush=True)
    nets = []
    for net in args.networks:
        for b in args.batch:
            nets.append(bench_network(net, args.table, b, max(1, args.repeats // 3)))
            print(nets[-1], flush=True)
        for t in args.fullrank_tables:
            nets.append(bench_network(net, t, 1, max(1, args.repeats // 3)))
            print(nets[-1], flush=True)
    model_rows = []
    for preset in args.models:
        model_rows.append(model_in_subprocess(preset, args.table, args.model_repeats))
        print(model_rows[-1], flush=True)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "threads": numba.get_num_threads(), "jax": jax.__version__, "repeats": args.repeats,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "argv": sys.argv[1:],
            "load_before": load_before, "load_after": os.getloadavg()}
    out = results_dir(args.out, args.quick)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / f"{args.name}.json", json.dumps({"meta": meta, "layers": rows, "batches": batches,
                                                          "networks": nets, "models": model_rows}, indent=1))
    _write_atomic(out / f"{args.name}.md", markdown(rows, nets, meta, batches, model_rows))
    print(markdown(rows, nets, meta, batches, model_rows))
    print(f"wrote {out / args.name}.json and .md")
    return 0


def results_dir(out: str | None, quick: bool) -> Path:
    """Where results go: ``--out``, else bench/quick for --quick runs, else bench/results (committed)."""
    return Path(out) if out else (QUICK_RESULTS if quick else RESULTS)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary name beside ``path``, then rename: an interrupted run leaves the
    previous file intact."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    raise SystemExit(main())
