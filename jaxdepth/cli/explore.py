"""Design-space exploration of approximate multipliers: uniform sweeps, layer sensitivity, error propagation,
per-layer assignment search; every result stored as it finishes, so an interrupted run resumes.

    jaxdepth-explore sweep --multipliers 'mul8u_*' 'power < 0.3' --layers '*' --out outputs/explore
    jaxdepth-explore report --out outputs/explore

Multiplier terms: names, globs ('mul8s_*'), families (evoapprox, signed, unsigned, trunc, bam, drum, mitchell,
roba), table files (.npy/.npz/.csv/.txt, with --signed/--unsigned unless stored), and filters on the
published figures ('MAE% < 0.5', 'power < 0.3', 'area<=400', 'EP% > 50'; all must hold).
Outputs in --out: results.sqlite (the store; rerun the same command to resume), <command>.csv / .json,
pareto.png, report.md. Exit codes: 0 done; 2 bad input (checked before any evaluation); 130 interrupted
(finished configurations are stored).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from . import common
from .common import CliError


def _data_options(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("data and protocol (as jaxdepth-evaluate)")
    g.add_argument("--data", default="synthetic:32:1000", help="dataset path or synthetic:N[:SEED[:HxW]]")
    g.add_argument("--format", default="auto", help="force a data format")
    g.add_argument("--limit", type=common.positive_int, help="only the first N frames")
    g.add_argument("--batch-size", type=common.positive_int, default=8)
    g.add_argument("--no-flip", action="store_true", help="skip flip averaging")
    g.add_argument("--mean", choices=("pixels", "images"), default="pixels")
    g.add_argument("--calib-frames", type=common.positive_int, default=8,
                   help="frames used to calibrate quantization when the checkpoint's calibration does not apply")
    g.add_argument("--compensate", action="store_true",
                   help="error compensation: each approximate layer's mean table error, measured on the "
                        "calibration frames, is subtracted (one integer per output channel; a separate store key)")
    g.add_argument("--store", help="results database (default: OUT/results.sqlite)")
    g.add_argument("--ray", metavar="ADDRESS", help="evaluate on Ray workers: 'auto' (the running cluster, "
                                                    "ray start --head), 'local' (start one here), or host:port")
    g.add_argument("--ray-workers", type=common.positive_int, help="Ray actors (default: one per cluster CPU)")
    g.add_argument("--metric", default="delta1", help="metric of the front and the ranking: delta1, abs_rel, "
                                                     "rmse, ... (vs ground truth) or psnr, depth_rel_rms, "
                                                     "decoder_rel_rms (vs the exact model)")


def _mult_options(ap: argparse.ArgumentParser, nargs: str = "+", default: Sequence[str] = ("evoapprox",),
                  default_help: str = "the 66 EvoApprox circuits") -> None:
    ap.add_argument("--multipliers", nargs=nargs, default=list(default), metavar="TERM",
                    help=f"multiplier selection: names, globs, families, table files, filters (default: "
                         f"{default_help})")
    _sign_options(ap, "table files among the terms are")


def _sign_options(ap: argparse.ArgumentParser, what: str) -> None:
    """--signed / --unsigned, one or the other."""
    sign = ap.add_mutually_exclusive_group()
    sign.add_argument("--signed", dest="signed", action="store_const", const=True, default=None,
                      help=f"{what} signed")
    sign.add_argument("--unsigned", dest="signed", action="store_const", const=False, help=f"{what} unsigned")


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(prog="jaxdepth-explore", formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 1)[1])
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parent = common.parent_parser("model", "out", "progress", "compile_cache", out_default="outputs/explore")

    sp = sub.add_parser("sweep", parents=[parent], help="every selected multiplier on the selected layers",
                        description="Every selected multiplier on the --layers (the rest float), with float / "
                                    "int8 / uint8 reference rows.")
    _mult_options(sp)
    sp.add_argument("--layers", nargs="+", default=["*"], metavar="PATTERN", help="layer-name globs (default *)")
    _data_options(sp)

    sn = sub.add_parser("sensitivity", parents=[parent], help="one layer / group at a time through a multiplier",
                        description="One layer (or block, or encoder / decoder) at a time through --multiplier, "
                                    "the rest through the exact table of its signedness (--base exact) or float; "
                                    "groups ranked by the metric drop, with a bar chart.")
    sn.add_argument("--multiplier", required=True, help="the circuit under test (name or table file)")
    _sign_options(sn, "a --multiplier table file is")
    sn.add_argument("--granularity", choices=("layers", "blocks", "parts"), default="layers")
    sn.add_argument("--layers", nargs="+", default=["*"], metavar="PATTERN",
                    help="only groups of these layers (default *)")
    sn.add_argument("--base", choices=("exact", "float"), default="exact",
                    help="arithmetic of the other layers (exact: one compilation for the whole run)")
    _data_options(sn)

    pp = sub.add_parser("propagate", parents=[parent], help="per-layer error of one configuration vs the exact "
                                                            "model",
                        description="The relative error of every layer's output against the exact model's for "
                                    "--multiplier on --layers: where the error enters, blows up, collapses.")
    pp.add_argument("--multiplier", required=True)
    _sign_options(pp, "a --multiplier table file is")
    pp.add_argument("--layers", nargs="+", default=["*"], metavar="PATTERN")
    pp.add_argument("--frames", type=common.positive_int, default=4, help="frames compared (default 4)")
    _data_options(pp)

    se = sub.add_parser("search", parents=[parent], help="per-layer / per-group assignment search (NSGA-II)",
                        description="NSGA-II (optuna) over which candidate circuit each group uses, objectives "
                                    "--metric and relative power, seeded from a sensitivity ranking (--ranking "
                                    "FILE from 'sensitivity', else computed first with the cheapest candidate); "
                                    "rerun the same command to resume.")
    _mult_options(se, default=("unsigned", "MAE% < 1"),
                  default_help="unsigned 'MAE%% < 1', the unsigned EvoApprox circuits with MAE below 1 %%")
    se.add_argument("--granularity", choices=("layers", "blocks", "parts"), default="blocks")
    se.add_argument("--layers", nargs="+", default=["*"], metavar="PATTERN",
                    help="only these layers are searched (the others stay float)")
    se.add_argument("--trials", type=common.positive_int, default=200, help="evaluations in total (default 200)")
    se.add_argument("--population", type=common.positive_int, default=20, help="NSGA-II population size")
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--ranking", help="groups, most sensitive first, one a line (sensitivity.txt)")
    _data_options(se)

    rp = sub.add_parser("report", parents=[parent], help="export a store's results again (CSV, JSON, plot, "
                                                         "Markdown)")
    rp.add_argument("--store", help="results database (default: OUT/results.sqlite)")
    rp.add_argument("--metric", default="delta1")
    rp.add_argument("--kinds", nargs="+", default=None, help="record kinds to include (reference, sweep, "
                                                             "sensitivity, search)")
    return ap


# ----------------------------------------------------------------------------------------------- helpers
def _check_metric(metric: str) -> None:
    from ..explore.report import ACCURACY, FIDELITY
    if metric not in (*ACCURACY, *FIDELITY):
        raise CliError(f"--metric {metric!r}: use one of {', '.join((*ACCURACY, *FIDELITY))}")


def _store_path(args: argparse.Namespace) -> Path:
    """The results store's file: --store, else OUT/results.sqlite."""
    return Path(args.store) if args.store else Path(args.out) / "results.sqlite"


def _check_store(args: argparse.Namespace) -> Path:
    """The results store (`_store_path`), checked without creating or changing anything."""
    from ..explore.store import StoreError, check_path
    try:
        return check_path(_store_path(args))
    except StoreError as e:
        raise CliError(f"--store {e}" if args.store else str(e)) from None


def _check_ray(args: argparse.Namespace) -> None:
    """The --ray address's form (and that Ray is installed), and that a HOST:PORT head answers, before
    anything is loaded."""
    if getattr(args, "ray", None):
        from ..explore.ray_backend import check_address, check_reachable
        try:
            check_address(args.ray)
            check_reachable(args.ray)
        except (ValueError, ConnectionError) as e:
            raise CliError(f"--ray {args.ray}: {e}") from None


def _prepare(args: argparse.Namespace):
    """(spec, store path) after the checks that need nothing loaded: --out, --store, --ray, --model."""
    common.check_out_dir(args.out, create=False)
    store_path = _check_store(args)
    _check_ray(args)
    return _spec(args), store_path


def _load_model(spec) -> tuple[tuple, list[str]]:
    """The checkpoint and its layer names, loaded before the frames, so layer patterns and group names are
    checked in seconds."""
    from ..explore.evaluator import model_layer_names
    loaded = spec.load_model()
    return loaded, model_layer_names(loaded[0], loaded[2])


def _open_store(args: argparse.Namespace, store_path: Path):
    """(out, store), created only once every input is checked (a bad input leaves nothing behind)."""
    from ..explore import ResultStore
    return common.check_out_dir(args.out), ResultStore(store_path)


def _read_ranking(path: str) -> list[str]:
    """The groups of a ranking file (sensitivity.txt: most sensitive first, one a line)."""
    what = "group names, one a line (the sensitivity.txt of 'explore sensitivity')"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CliError(f"--ranking {path}: not a text file; expected {what}") from None
    except OSError as e:
        raise CliError(f"--ranking {path}: {e.strerror or e}") from None
    ranking = [line.strip() for line in text.splitlines() if line.strip()]
    if not ranking:
        raise CliError(f"--ranking {path}: the file is empty; expected {what}")
    return ranking


def _spec(args: argparse.Namespace):
    from ..explore import EvalSpec, Protocol
    if args.model and not Path(args.model).exists():
        raise CliError(f"--model {args.model}: exploration needs a checkpoint folder (not found)")
    return EvalSpec(model=args.model, data=args.data, format=args.format, limit=args.limit,
                    protocol=Protocol(flip=not args.no_flip, mean=args.mean, batch_size=args.batch_size,
                                      calib_frames=args.calib_frames, compensate=args.compensate))


def _write_outputs(rows: list[dict], out: Path, stem: str, metric: str, title: str) -> list[Path]:
    from ..explore import markdown, pareto_plot, write_tables
    from ..io.atomic import write_text
    files = write_tables(rows, out, stem)
    files.append(pareto_plot(rows, out / "pareto.png", metric, "power", title))
    files.append(write_text(out / "report.md", markdown(rows, metric, "power", title=title)))
    return files


def _print_rows(rows: list[dict], metric: str) -> None:
    from ..explore.report import _fmt
    print(f"{'configuration':<28}{metric:>10}{'psnr':>9}{'rel rms':>9}{'power':>8}{'area':>8}  warning")
    for r in rows:
        print(f"{r['label'][:27]:<28}{_fmt(r.get(metric), 4):>10}{_fmt(r.get('psnr'), 2):>9}"
              f"{_fmt(r.get('depth_rel_rms'), 4):>9}{_fmt(r.get('power')):>8}{_fmt(r.get('area')):>8}  "
              f"{r.get('warning') or ''}")


def _executor(args: argparse.Namespace, ev):
    """None (in process) or the Ray executor --ray asks for (built once per command)."""
    if not getattr(args, "ray", None):
        return None
    if getattr(args, "_executor", None) is None:
        from ..explore.ray_backend import RayExecutor
        try:
            args._executor = RayExecutor(_spec(args), args.ray, workers=args.ray_workers,
                                         expected_context=ev.context)
        except (ConnectionError, ValueError, RuntimeError) as e:  # no cluster there, or workers that see other files
            raise CliError(f"--ray {args.ray}: {common.error_line(e)}") from None
        print(f"Ray: {len(args._executor.actors)} worker(s)", flush=True)
    return args._executor


def _run(ev, store, configs, args, done) -> list[dict]:
    from ..explore import run_configs
    done.what, done.total, done.where = "configurations", len(configs), store.path
    counts = {"new": 0, "stored": 0}

    def on_record(rec, new):
        counts["new" if new else "stored"] += 1
        done.add(rec["label"])

    records = run_configs(ev, store, configs, executor=_executor(args, ev), progress=not args.no_progress,
                          on_record=on_record)
    print(f"{counts['new']} configuration(s) evaluated, {counts['stored']} read from {store.path}; "
          f"compile {ev.compile_seconds:.1f} s", flush=True)
    return records


# ----------------------------------------------------------------------------------------------- commands
def _sweep(args: argparse.Namespace, done: common.Done) -> int:
    from ..explore import flatten, select_layers, select_multipliers, sweep_configs
    _check_metric(args.metric)
    mults = select_multipliers(args.multipliers, args.signed)
    spec, store_path = _prepare(args)
    loaded, names = _load_model(spec)
    select_layers(args.layers, names)
    ev = spec.build(loaded)
    _executor(args, ev)                      # a Ray cluster that cannot be reached: before the store exists
    out, store = _open_store(args, store_path)
    with store:
        configs = sweep_configs(mults, args.layers)
        rows = [flatten(r) for r in _run(ev, store, configs, args, done)]
    _print_rows(rows, args.metric)
    title = f"sweep of {len(mults)} multipliers on {' '.join(args.layers)} ({ev.frames} frames of {args.data})"
    files = _write_outputs(rows, out, "sweep", args.metric, title)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _one_multiplier(args: argparse.Namespace):
    from ..explore import select_multipliers
    mults = select_multipliers([args.multiplier], args.signed)
    if len(mults) != 1:
        raise CliError(f"--multiplier {args.multiplier!r} selects {len(mults)} circuits; name one")
    return mults[0]


def _sensitivity(args: argparse.Namespace, done: common.Done) -> int:
    from ..explore import layer_groups, select_layers
    from ..explore.report import _fmt
    from ..explore.sensitivity import rank, sensitivity_configs, sensitivity_plot
    from ..io.atomic import write_text
    from ..explore.report import write_tables
    _check_metric(args.metric)
    m = _one_multiplier(args)
    spec, store_path = _prepare(args)
    loaded, names = _load_model(spec)
    groups = layer_groups(select_layers(args.layers, names), args.granularity)
    ev = spec.build(loaded)
    _executor(args, ev)                      # a Ray cluster that cannot be reached: before the store exists
    out, store = _open_store(args, store_path)
    with store:
        configs = sensitivity_configs(m, groups, args.base)
        ranking = rank(_run(ev, store, configs, args, done), args.metric)
    print(f"{'group':<44}{'drop':>9}{args.metric:>10}{'psnr':>8}{'power':>8}")
    for r in ranking:
        print(f"{r['group'][:43]:<44}{_fmt(r['drop'], 4):>9}{_fmt(r.get(args.metric), 4):>10}"
              f"{_fmt(r.get('psnr'), 2):>8}{_fmt(r.get('power')):>8}")
    title = f"sensitivity to {m.name} ({args.granularity}, rest {args.base}; {ev.frames} frames)"
    files = write_tables(ranking, out, "sensitivity")
    files.append(sensitivity_plot(ranking, out / "sensitivity.png", args.metric, title))
    files.append(write_text(out / "sensitivity.txt", "\n".join(r["group"] for r in ranking) + "\n"))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _propagate(args: argparse.Namespace) -> int:
    from ..explore import Config, select_layers
    from ..explore.report import _fmt
    from ..explore.sensitivity import propagation, propagation_plot, saturation
    from ..io.atomic import write_json, write_text
    from ..explore.report import to_csv
    m = _one_multiplier(args)
    unused = [flag for flag, value in (("--store", args.store), ("--ray", args.ray)) if value]
    if unused:
        raise CliError(f"propagate does not use {' / '.join(unused)}: it runs one configuration here and "
                       "stores nothing")
    common.check_out_dir(args.out, create=False)
    spec = _spec(args)
    loaded, names = _load_model(spec)
    select_layers(args.layers, names)
    ev = spec.build(loaded)
    out = common.check_out_dir(args.out)
    config = Config(f"{m.name} @ {' '.join(args.layers)}", tuple((p, m) for p in args.layers))
    rows = propagation(ev, config, args.frames)
    sat = saturation(rows)
    print(f"{'layer':<48}{'multiplier':>12}{'rel error':>11}{'std ratio':>11}")
    for r in rows:
        print(f"{r['layer'][:47]:<48}{(r['multiplier'] or 'float'):>12}{_fmt(r['rel_error'], 4):>11}"
              f"{_fmt(r['std_ratio'], 3):>11}")
    print(f"error enters at {sat['enters'] or '-'} (> 5 %), blows up at {sat['blows_up'] or '-'} (> 50 %), "
          f"output collapses at {sat['collapses'] or '-'} (spread < 5 % of exact)")
    cols = ("layer", "multiplier", "macs", "rel_error", "std_ratio", "mean", "exact_mean")
    files = [write_text(out / "propagation.csv", to_csv(rows, cols)),
             write_json(out / "propagation.json", {"config": config.label, "saturation": sat, "layers": rows}),
             propagation_plot(rows, out / "propagation.png", f"{config.label}: error of every layer's output")]
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _search(args: argparse.Namespace, done: common.Done) -> int:
    from ..explore import flatten, layer_groups, select_layers, select_multipliers
    from ..explore.runner import reference_configs
    from ..explore.search import candidates_with_exact, front, search
    from ..explore.sensitivity import rank, sensitivity_configs
    from ..explore.cost import figures
    _check_metric(args.metric)
    try:
        cands = candidates_with_exact(select_multipliers(args.multipliers, args.signed))
    except ValueError as e:
        raise CliError(str(e)) from None
    if len(cands) < 2:
        raise CliError(f"--multipliers {' '.join(args.multipliers)} selects only the exact table "
                       f"{cands[0].name}: the search needs at least one approximate candidate")
    if args.population < 2:
        raise CliError(f"--population {args.population}: NSGA-II needs a population of at least 2")
    ranking = _read_ranking(args.ranking) if args.ranking else None
    spec, store_path = _prepare(args)
    loaded, names = _load_model(spec)
    groups = layer_groups(select_layers(args.layers, names), args.granularity)
    unknown = [g for g in ranking or () if g not in groups]
    if unknown:
        raise CliError(f"--ranking {args.ranking}: unknown groups {unknown[:5]} for --granularity "
                       f"{args.granularity} (its groups: {', '.join(list(groups)[:8])}"
                       f"{' ...' if len(groups) > 8 else ''})")
    ev = spec.build(loaded)
    _executor(args, ev)                      # a Ray cluster that cannot be reached: before the store exists
    out, store = _open_store(args, store_path)
    with store:
        refs = _run(ev, store, reference_configs({cands[0].signed}, args.layers), args, done)
        if ranking is None:
            cheapest = min(cands[1:], key=lambda m: figures(m)["power"])
            print(f"ranking the {len(groups)} groups by their sensitivity to {cheapest.name} (stored; "
                  f"--ranking FILE skips this)", flush=True)
            ranking = [r["group"] for r in rank(_run(ev, store, sensitivity_configs(cheapest, groups), args, done),
                                                args.metric)]
        done.what, done.total = "search trials", args.trials
        executor = _executor(args, ev)
        records = search(ev, store, cands[1:], groups, n_trials=args.trials, metric=args.metric, ranking=ranking,
                         seed=args.seed, population=args.population, progress=not args.no_progress,
                         executor=executor, batch=len(executor.actors) if executor else 1,
                         on_record=lambda rec, new: done.add(rec["label"]))
    rows = [flatten(r) for r in refs] + [flatten(r) for r in records]
    best = front(records, args.metric)
    print(f"{len(records)} trials; Pareto front of {len(best)}:")
    _print_rows(best, args.metric)
    for r in best:
        print(f"  {r['label']}: {r['layers']}")
    title = (f"NSGA-II over {len(groups)} {args.granularity}, {len(cands)} candidates, {len(records)} trials "
             f"({ev.frames} frames)")
    files = _write_outputs(rows, out, "search", args.metric, title)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..explore import ResultStore, flatten
    if args.model:
        raise CliError("report reads the stored results; it does not use --model")
    _check_metric(args.metric)
    common.check_out_dir(args.out, create=False)
    path = _store_path(args)
    if not path.exists():
        raise CliError(f"no results store at {path} (run sweep, sensitivity or search with this --out, or "
                       f"give --store)")
    with ResultStore(_check_store(args)) as store:
        rows = [flatten(r) for r in store.records(kinds=args.kinds)]
    if not rows:
        raise CliError(f"{path} holds no results" + (f" of kinds {args.kinds}" if args.kinds else ""))
    out = common.check_out_dir(args.out)
    _print_rows(rows, args.metric)
    files = _write_outputs(rows, out, "results", args.metric, f"{len(rows)} stored configurations")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _main(args: argparse.Namespace, done: common.Done) -> int:
    if args.command == "sweep":
        return _sweep(args, done)
    if args.command == "sensitivity":
        return _sensitivity(args, done)
    if args.command == "propagate":
        return _propagate(args)
    if args.command == "search":
        return _search(args, done)
    return _report(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.run(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
