"""``python -m jaxdepth.multipliers``: list, plot and inspect the multipliers jaxdepth knows.

    python -m jaxdepth.multipliers                         # table of all circuits + family members
    python -m jaxdepth.multipliers --signed --sort power_mW
    python -m jaxdepth.multipliers --plot pareto.png --metric MRE%
    python -m jaxdepth.multipliers --show mul8s_1L2J --heatmap err.png
    python -m jaxdepth.multipliers --show my_table.npy     # a user table (see load())
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

import numpy as np

from .core import Multiplier
from .loaders import _split_npz_key, load
from .metrics import CATALOGUE_KEYS, METRIC_KEYS, catalogue, errors, metrics, published
from .registry import get

_SORT_KEYS = tuple(k for k in CATALOGUE_KEYS if k not in ("family",))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "s8" if value else "u8"
    if isinstance(value, float):
        if value == 0:
            return "0"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> str:
    """Plain-text table of ``rows`` restricted to ``keys``."""
    header = ["sign" if k == "signed" else k for k in keys]
    cells = [[_fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for c in cells:
        lines.append("  ".join(v.rjust(w) if i > 0 else v.ljust(w)
                               for i, (v, w) in enumerate(zip(c, widths))))
    return "\n".join(lines)


def _sort_value(row: dict[str, Any], key: str) -> tuple:
    v = row.get(key)
    return (v is None, v if v is not None else 0)


def plot_catalogue(rows: Sequence[dict[str, Any]], path: str, metric: str = "MAE%") -> None:
    """Scatter of ``metric`` against power for the rows with power figures (EvoApprox circuits), and
    a side panel with the rows without power figures (generated families) grouped by family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-4  # exact circuits (0 error) drawn here on the log axis
    fig, (ax, side) = plt.subplots(1, 2, figsize=(11, 6), sharey=True,
                                   gridspec_kw={"width_ratios": [4, 1.3]})
    for signed, marker, colour in ((False, "o", "tab:blue"), (True, "s", "tab:orange")):
        pts = [r for r in rows if r["power_mW"] is not None and r["signed"] == signed]
        if pts:
            ys = [max(r[metric], floor) for r in pts]
            ax.scatter([r["power_mW"] for r in pts], ys, marker=marker, color=colour,
                       label=f"EvoApprox {'signed' if signed else 'unsigned'}")
            for r, y in zip(pts, ys):
                ax.annotate(r["name"].removeprefix("mul8"), (r["power_mW"], y), fontsize=6,
                            alpha=0.7, xytext=(2, 2), textcoords="offset points")
    others = [r for r in rows if r["power_mW"] is None]
    fams = list(dict.fromkeys(r.get("family") or r["name"] for r in others))
    for r in others:
        x = fams.index(r.get("family") or r["name"]) + (0.15 if r["signed"] else -0.15)
        y = max(r[metric], floor)
        side.scatter([x], [y], marker="s" if r["signed"] else "o",
                     color="tab:orange" if r["signed"] else "tab:blue")
        label = r["name"].split("_", 2)[2] if r["name"].count("_") >= 2 else r["name"].split("_")[1]
        side.annotate(label, (x, y), fontsize=6, xytext=(3, 0), textcoords="offset points")
    side.set_xticks(range(len(fams)), fams, rotation=45)
    side.set_xlim(-0.7, len(fams) - 0.3)
    side.set_title("generated families\n(no power figures)", fontsize=9)
    side.grid(True, which="both", axis="y", alpha=0.3)
    ax.set_yscale("log")
    ax.set_xlabel("power (mW, EvoApprox 45 nm synthesis)")
    ax.set_ylabel(f"{metric} (recomputed from the tables; exact at {floor:g})")
    ax.set_title(f"8x8 approximate multipliers: {metric} vs power")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def ascii_heatmap(m: Multiplier, block: int = 16) -> str:
    """Mean |error| over ``block`` x ``block`` operand tiles as characters (rows = weight bytes
    in value order, columns = activation bytes), darker = larger."""
    e = np.abs(errors(m)).astype(np.float64)
    if m.signed:  # order rows/columns by operand value -128..127
        order = np.r_[128:256, 0:128]
        e = e[np.ix_(order, order)]
    n = 256 // block
    tiles = e.reshape(n, block, n, block).mean(axis=(1, 3))
    shades = " .:-=+*#%@"
    top = tiles.max()
    lo = "-128" if m.signed else "0"
    lines = [f"mean |error| per {block}x{block} tile (max {top:.4g}); rows: weight {lo}.., "
             f"columns: activation {lo}.."]
    for row in tiles:
        lines.append("".join(shades[min(int(v / top * (len(shades) - 1) + 0.5), len(shades) - 1)]
                             if top > 0 else " " for v in row))
    return "\n".join(lines)


def heatmap_png(m: Multiplier, path: str) -> None:
    """Heat map of the signed error e = f(w, x) - w*x over operand values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = errors(m).astype(np.float64)
    lo, hi = (-128, 127) if m.signed else (0, 255)
    if m.signed:
        order = np.r_[128:256, 0:128]
        e = e[np.ix_(order, order)]
    lim = max(float(np.abs(e).max()), 1.0)
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(e, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim,
                   extent=(lo - 0.5, hi + 0.5, lo - 0.5, hi + 0.5))
    ax.set_xlabel("activation x (second operand)")
    ax.set_ylabel("weight w (first operand)")
    ax.set_title(f"{m.name}: error f(w, x) - w*x")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _resolve(spec: str) -> Multiplier:
    """A table file if ``spec`` names an existing file (``file.npz:key`` too), else a name."""
    if os.path.isfile(_split_npz_key(spec)[0]):
        return load(spec)
    return get(spec)


def show(spec: str, *, heatmap: str | None = None, text_heatmap: bool = False) -> str:
    m = _resolve(spec)
    mt = metrics(m)
    out = [f"{m.name}  ({'signed' if m.signed else 'unsigned'}, source: {m.source})"]
    for k in ("family", "params", "reference", "aliases", "origin"):
        if m.metadata.get(k):
            out.append(f"  {k}: {m.metadata[k]}")
    pub = None
    try:
        pub = published(m.name)
    except KeyError:
        pass
    out.append(f"  {'metric':<6} {'computed':>14}" + (f" {'published':>12}" if pub else ""))
    for k in METRIC_KEYS:
        if k == "bias":
            continue
        line = f"  {k:<6} {mt[k]:>14.6g}"
        if pub and k in pub:
            line += f" {pub[k]:>12.6g}"
        out.append(line)
    if m.power_mw is not None:
        out.append(f"  power {m.power_mw} mW, area {m.area_um2} um^2, delay {m.delay_ns} ns")
    if text_heatmap:
        out.append(ascii_heatmap(m))
    if heatmap:
        heatmap_png(m, heatmap)
        out.append(f"wrote {heatmap}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m jaxdepth.multipliers",
        description="List the approximate 8x8 multipliers jaxdepth knows (EvoApprox circuits and "
                    "generated families) with their error metrics (recomputed from the tables) and "
                    "published power/area/delay; plot error vs power; inspect one multiplier.")
    p.add_argument("--signed", action="store_true", help="only signed multipliers")
    p.add_argument("--unsigned", action="store_true", help="only unsigned multipliers")
    p.add_argument("--no-families", action="store_true", help="only the EvoApprox circuits")
    p.add_argument("--add", action="append", default=[], metavar="NAME",
                   help="also list this multiplier name, e.g. trunc_s8_k5 (repeatable)")
    p.add_argument("--sort", default=None, choices=_SORT_KEYS, help="sort the table by this column")
    p.add_argument("--metric", default="MAE%", choices=("MAE%", "MRE%", "WCE%", "EP%"),
                   help="error metric of --plot (default MAE%%)")
    p.add_argument("--plot", metavar="FILE.png", help="write a scatter of --metric vs power")
    p.add_argument("--show", metavar="NAME", help="print one multiplier's metrics (a name or a "
                   "table file, see jaxdepth.multipliers.load)")
    p.add_argument("--heatmap", metavar="FILE.png", help="with --show: write its error heat map")
    p.add_argument("--text-heatmap", action="store_true",
                   help="with --show: print a coarse text heat map of |error|")
    args = p.parse_args(argv)

    try:
        if args.show:
            print(show(args.show, heatmap=args.heatmap, text_heatmap=args.text_heatmap))
            return 0
        if args.heatmap or args.text_heatmap:
            p.error("--heatmap / --text-heatmap need --show NAME")
        rows = catalogue(families=not args.no_families, extra=args.add)
    except (KeyError, ValueError, FileNotFoundError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    if args.signed != args.unsigned:
        rows = [r for r in rows if r["signed"] == args.signed]
    if args.sort:
        rows = sorted(rows, key=lambda r: _sort_value(r, args.sort))
    print(format_table(rows, CATALOGUE_KEYS))
    if args.plot:
        plot_catalogue(rows, args.plot, args.metric)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
