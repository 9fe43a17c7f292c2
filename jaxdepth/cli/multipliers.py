"""List, plot and inspect the multipliers jaxdepth knows (``jaxdepth-multipliers``, ``python -m jaxdepth.multipliers``).

    jaxdepth-multipliers                                  # table of all circuits + family members
    jaxdepth-multipliers --signed --sort power_mW
    jaxdepth-multipliers --plot pareto.png --metric MRE%
    jaxdepth-multipliers --show mul8s_1L2J --heatmap err.png
    jaxdepth-multipliers --show my_table.npy --unsigned   # a user table (multipliers.load formats)
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from . import common

#: File name endings matplotlib writes that --plot / --heatmap accept.
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def build_parser() -> argparse.ArgumentParser:
    from ..multipliers.report import SORT_KEYS
    p = argparse.ArgumentParser(
        prog="jaxdepth-multipliers", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="List the approximate 8x8 multipliers jaxdepth knows (EvoApprox circuits and "
                    "generated families) with their error metrics (recomputed from the tables) and "
                    "published power/area/delay; plot error vs power; inspect one multiplier.",
        epilog=(__doc__ or "").split("\n\n", 1)[1])
    sign = p.add_mutually_exclusive_group()
    sign.add_argument("--signed", dest="signed", action="store_const", const=True, default=None,
                      help="only signed multipliers (with --show FILE: the table is signed)")
    sign.add_argument("--unsigned", dest="signed", action="store_const", const=False,
                      help="only unsigned multipliers (with --show FILE: the table is unsigned)")
    p.add_argument("--no-families", action="store_true", help="only the EvoApprox circuits")
    p.add_argument("--add", action="append", default=[], metavar="NAME",
                   help="also list this multiplier name, e.g. trunc_s8_k5 (repeatable)")
    p.add_argument("--sort", default=None, choices=SORT_KEYS, help="sort the table by this column")
    p.add_argument("--metric", default="MAE%", choices=("MAE%", "MRE%", "WCE%", "EP%"),
                   help="error metric of --plot (default MAE%%)")
    p.add_argument("--plot", metavar="FILE.png", help="write a scatter of --metric vs power")
    p.add_argument("--show", metavar="NAME", help="print one multiplier's metrics (a name or a table file; "
                   "a file needs --signed or --unsigned unless it stores its signedness)")
    p.add_argument("--heatmap", metavar="FILE.png", help="with --show: write its error heat map")
    p.add_argument("--text-heatmap", action="store_true",
                   help="with --show: print a coarse text heat map of |error|")
    return p


def _main(args: argparse.Namespace) -> int:
    from ..multipliers import catalogue
    from ..multipliers.metrics import CATALOGUE_KEYS
    from ..multipliers.report import sort_value, format_table, plot_catalogue, show
    if (args.heatmap or args.text_heatmap) and not args.show:
        raise common.CliError("--heatmap / --text-heatmap need --show NAME")
    for option, path in (("--plot", args.plot), ("--heatmap", args.heatmap)):
        if path:
            if Path(path).suffix.lower() not in FIGURE_SUFFIXES:
                raise common.CliError(f"{option} {path}: name a figure file ({', '.join(FIGURE_SUFFIXES)})")
            common.check_out_file(path, option)
    if args.show:
        signed = args.signed if common.is_table_file(args.show) else None
        print(show(common.resolve_multiplier(args.show, signed), heatmap=args.heatmap,
                   text_heatmap=args.text_heatmap))
        return 0
    rows = catalogue(families=not args.no_families, extra=args.add)
    if args.signed is not None:
        rows = [r for r in rows if r["signed"] == args.signed]
    if args.sort:
        rows = sorted(rows, key=lambda r: sort_value(r, args.sort))
    print(format_table(rows, CATALOGUE_KEYS), flush=True)
    if args.plot:
        plot_catalogue(rows, args.plot, args.metric)
        print(f"wrote {args.plot}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.run(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
