"""Text and figures about multipliers: the catalogue as a table, error vs power, one circuit's metrics and
error heat maps (used by ``jaxdepth-multipliers`` / ``python -m jaxdepth.multipliers``)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .core import Multiplier
from .metrics import CATALOGUE_KEYS, METRIC_KEYS, errors, metrics, published

SORT_KEYS = tuple(k for k in CATALOGUE_KEYS if k not in ("family",))


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


def sort_value(row: dict[str, Any], key: str) -> tuple:
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
    _save(fig, path, dpi=150)


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
    _save(fig, path, dpi=120)


def show(m: Multiplier, *, heatmap: str | None = None, text_heatmap: bool = False) -> str:
    """One multiplier's metrics (computed, and published where known) as text; optionally its heat maps."""
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


def _save(fig: Any, path: str, dpi: int) -> None:
    """Write a figure atomically (temporary name, then rename) and close it."""
    import matplotlib.pyplot as plt

    from ..io.atomic import replacing
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
