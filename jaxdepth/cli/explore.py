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
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

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
    g.add_argument("--store", help="results database (default: OUT/results.sqlite)")
    g.add_argument("--metric", default="delta1", help="metric of the front and the ranking: delta1, abs_rel, "
                                                     "rmse, ... (vs ground truth) or psnr, depth_rel_rms, "
                                                     "decoder_rel_rms (vs the exact model)")


def _mult_options(ap: argparse.ArgumentParser, nargs: str = "+") -> None:
    ap.add_argument("--multipliers", nargs=nargs, default=["evoapprox"], metavar="TERM",
                    help="multiplier selection: names, globs, families, table files, filters (default: the 66 "
                         "EvoApprox circuits)")
    sign = ap.add_mutually_exclusive_group()
    sign.add_argument("--signed", dest="signed", action="store_const", const=True, default=None,
                      help="table files among the terms are signed")
    sign.add_argument("--unsigned", dest="signed", action="store_const", const=False,
                      help="table files among the terms are unsigned")


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


def _open_store(args: argparse.Namespace):
    from ..explore import ResultStore
    out = common.check_out_dir(args.out)
    return out, ResultStore(Path(args.store) if args.store else out / "results.sqlite")


def _spec(args: argparse.Namespace):
    from ..explore import EvalSpec, Protocol
    if args.model and not Path(args.model).exists():
        raise CliError(f"--model {args.model}: exploration needs a checkpoint folder (not found)")
    return EvalSpec(model=args.model, data=args.data, format=args.format, limit=args.limit,
                    protocol=Protocol(flip=not args.no_flip, mean=args.mean, batch_size=args.batch_size,
                                      calib_frames=args.calib_frames))


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


def _run(ev, store, configs, args, done) -> list[dict]:
    from ..explore import run_configs
    done.what, done.total, done.where = "configurations", len(configs), store.path
    counts = {"new": 0, "stored": 0}

    def on_record(rec, new):
        counts["new" if new else "stored"] += 1
        done.add(rec["label"])

    records = run_configs(ev, store, configs, progress=not args.no_progress, on_record=on_record)
    print(f"{counts['new']} configuration(s) evaluated, {counts['stored']} read from {store.path}; "
          f"compile {ev.compile_seconds:.1f} s", flush=True)
    return records


# ----------------------------------------------------------------------------------------------- commands
def _sweep(args: argparse.Namespace, done: common.Done) -> int:
    from ..explore import flatten, select_layers, select_multipliers, sweep_configs
    _check_metric(args.metric)
    mults = select_multipliers(args.multipliers, args.signed)
    out, store = _open_store(args)
    with store:
        ev = _spec(args).build()
        select_layers(args.layers, ev.layer_names)
        configs = sweep_configs(mults, args.layers)
        rows = [flatten(r) for r in _run(ev, store, configs, args, done)]
    _print_rows(rows, args.metric)
    title = f"sweep of {len(mults)} multipliers on {' '.join(args.layers)} ({ev.frames} frames of {args.data})"
    files = _write_outputs(rows, out, "sweep", args.metric, title)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..explore import ResultStore, flatten
    _check_metric(args.metric)
    out = common.check_out_dir(args.out)
    path = Path(args.store) if args.store else out / "results.sqlite"
    if not path.exists():
        raise CliError(f"no results store at {path}")
    with ResultStore(path) as store:
        rows = [flatten(r) for r in store.records(kinds=args.kinds)]
    if not rows:
        raise CliError(f"{path} holds no results" + (f" of kinds {args.kinds}" if args.kinds else ""))
    _print_rows(rows, args.metric)
    files = _write_outputs(rows, out, "results", args.metric, f"{len(rows)} stored configurations")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _main(args: argparse.Namespace, done: common.Done) -> int:
    if args.command == "sweep":
        return _sweep(args, done)
    return _report(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.run(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
