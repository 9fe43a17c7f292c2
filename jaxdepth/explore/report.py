"""Results as tables and figures: flat rows, the Pareto front, CSV / JSON export, the Pareto plot, a Markdown
report. Every file is written atomically (`jaxdepth.io.atomic`)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from ..metrics import HIGHER_IS_BETTER, METRICS

#: Objectives a front can be taken on: accuracy vs ground truth (``delta1`` ...), fidelity vs the exact model
#: (``psnr``, ``depth_rel_rms``, ``decoder_rel_rms``).
ACCURACY = tuple(METRICS)
FIDELITY = ("psnr", "depth_rel_rms", "decoder_rel_rms")
COLUMNS = ("label", "kind", "multipliers", "layers", *ACCURACY, "psnr", "depth_rel_rms", "decoder_rel_rms",
           "power", "area", "delay", "warning", "seconds", "key")


def higher_is_better(metric: str) -> bool:
    return metric in HIGHER_IS_BETTER


def flatten(record: dict) -> dict[str, Any]:
    """One flat row of a stored record (accuracy vs gt, fidelity vs exact, relative cost)."""
    plan = record.get("plan", {})
    used = sorted({m for m in plan.values() if m is not None})
    quantized = [n for n, m in plan.items() if m is not None]
    meta = record.get("meta", {})
    layers = meta.get("layers") or (f"{len(quantized)}/{len(plan)} layers" if plan else "")
    if meta.get("assignment"):    # a search trial: which circuit on which groups (exact ones left out)
        layers = describe_assignment(meta["assignment"])
    row: dict[str, Any] = {"label": record["label"], "kind": record["kind"], "multipliers": " ".join(used) or "float",
                           "layers": layers}
    row.update({k: record["accuracy"].get(k) for k in ACCURACY})
    fid = record.get("fidelity", {})
    row.update({k: fid.get(k) for k in FIDELITY})
    row.update({k: record.get("cost", {}).get(k) for k in ("power", "area", "delay")})
    row.update(warning=record.get("warning") or "", seconds=record.get("seconds"), key=record.get("key"))
    return row


def describe_assignment(assignment: Iterable, show: int = 4) -> str:
    """``circuit: group, group, ... (+k)`` per approximate circuit of a group assignment, compactly."""
    pairs = [(str(g), str(m)) for g, m in assignment]
    by: dict[str, list[str]] = {}
    for g, m in pairs:
        by.setdefault(m, []).append(g)
    parts = []
    for m, gs in by.items():
        if m.startswith("exact"):
            continue
        if len(gs) == len(pairs):
            parts.append(f"{m}: all {len(gs)} groups")
        else:
            more = f" (+{len(gs) - show})" if len(gs) > show else ""
            parts.append(f"{m}: {', '.join(gs[:show])}{more}")
    exact = len(by.get("exact_u8", [])) + len(by.get("exact_s8", []))
    return "; ".join(parts + ([f"exact: {exact} groups"] if exact and parts else [])) or "all exact"


def value(row: dict, metric: str) -> Optional[float]:
    v = row.get(metric)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def pareto_front(rows: Sequence[dict], metric: str = "delta1", cost: str = "power") -> list[dict]:
    """The rows no other row dominates (lower ``cost`` and better ``metric``, one strictly), by cost.

    Rows without the metric or the cost are left out; a ``metric`` or ``cost`` no row has is a ValueError
    (a misspelt column would give an empty front)."""
    for role, column in (("metric", metric), ("cost", cost)):
        if rows and not any(column in r for r in rows):
            known = sorted({k for r in rows for k, v in r.items() if isinstance(v, (int, float))})
            raise ValueError(f"pareto_front: no row has the {role} {column!r}; numeric columns: {', '.join(known)}")
    sign = 1.0 if higher_is_better(metric) else -1.0
    pts = [(value(r, cost), sign * value(r, metric), r) for r in rows
           if value(r, cost) is not None and value(r, metric) is not None]
    front = []
    for c, m, r in pts:
        dominated = any(c2 <= c and m2 >= m and (c2 < c or m2 > m) for c2, m2, _ in pts)
        if not dominated:
            front.append((c, -m, r))
    front.sort(key=lambda t: (t[0], t[1]))
    seen, out = set(), []
    for c, _, r in front:     # equal points: keep one
        key = (c, value(r, metric))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def to_csv(rows: Sequence[dict], columns: Sequence[str] = COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    return buf.getvalue()


def write_tables(rows: Sequence[dict], out: Path, stem: str = "results") -> list[Path]:
    """``<stem>.csv`` and ``<stem>.json`` (rows with their full records' flat fields) in ``out``."""
    from ..io.atomic import write_json, write_text
    out = Path(out)
    clean = [{k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
             for r in rows]
    return [write_text(out / f"{stem}.csv", to_csv(rows)), write_json(out / f"{stem}.json", clean)]


def _place_labels(ax, points: Sequence[tuple[float, float, str]],
                  obstacles: Sequence[tuple[float, float]] = ()) -> None:
    """Label points without overlapping text: each label tries offsets around its point (nearest first) and
    takes the first whose box overlaps no earlier label, no marker and stays inside the axes; a label
    with no free place is drawn further out with a leader line."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axbox = ax.get_window_extent(renderer)
    marker_boxes, other_markers = [], []
    for x, y, _ in points:
        px, py = ax.transData.transform((x, y))
        marker_boxes.append((px - 4, py - 4, px + 4, py + 4))
    for x, y in obstacles:
        px, py = ax.transData.transform((x, y))
        other_markers.append((px - 5, py - 5, px + 5, py + 5))
    taken: list[tuple[float, float, float, float]] = []
    offsets = [(6, 4), (6, -12), (-6, 4), (-6, -12), (0, 10), (0, -16), (12, 14), (12, -22), (-12, 14),
               (-12, -22), (20, 0), (-20, 0), (24, 24), (24, -30), (-24, 24), (-24, -30)]

    def overlaps(b, boxes):
        return any(b[0] < o[2] and b[2] > o[0] and b[1] < o[3] and b[3] > o[1] for o in boxes)

    for (x, y, text), mbox in zip(points, marker_boxes):
        placed = False
        for far in (1, 2, 3):
            for dx, dy in offsets:
                dx2, dy2 = dx * far, dy * far
                ha = "left" if dx2 >= 0 else "right"
                t = ax.annotate(text, (x, y), xytext=(dx2, dy2), textcoords="offset points", fontsize=7, ha=ha,
                                arrowprops=None if far == 1 else dict(arrowstyle="-", lw=0.5, color="0.5"))
                bb = t.get_window_extent(renderer)
                box = (bb.x0, bb.y0, bb.x1, bb.y1)
                others = [b for b in marker_boxes if b is not mbox] + other_markers
                inside = box[0] >= axbox.x0 and box[2] <= axbox.x1 and box[1] >= axbox.y0 and box[3] <= axbox.y1
                if inside and not overlaps(box, taken) and not overlaps(box, others):
                    taken.append(box)
                    placed = True
                    break
                t.remove()
            if placed:
                break


def pareto_plot(rows: Sequence[dict], path: Path, metric: str = "delta1", cost: str = "power",
                title: str = "", max_labels: int = 14) -> Path:
    """Every configuration (grey), the Pareto front (line, labelled), float / int8 / uint8 marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..viz import _save
    front = pareto_front([r for r in rows if r["kind"] != "reference" or r["label"] != "float"], metric, cost)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    pts = [(value(r, cost), value(r, metric), r) for r in rows if value(r, cost) is not None
           and value(r, metric) is not None and r["label"] != "float"]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color="0.6", label="configurations", zorder=2)
    fx = [value(r, cost) for r in front]
    fy = [value(r, metric) for r in front]
    ax.plot(fx, fy, "-o", color="tab:blue", ms=5, lw=1.2, label="Pareto front", zorder=3)
    marks = {"int8": ("s", "tab:green"), "uint8": ("D", "tab:olive")}
    for r in rows:
        if r["kind"] == "reference" and r["label"] in marks and value(r, cost) is not None:
            m, c = marks[r["label"]]
            ax.scatter([value(r, cost)], [value(r, metric)], marker=m, s=60, color=c, zorder=4,
                       label=f"{r['label']} (exact table)")
    flt = next((r for r in rows if r["label"] == "float" and value(r, metric) is not None), None)
    if flt is not None and metric in ACCURACY:
        ax.axhline(value(flt, metric), color="tab:red", ls="--", lw=0.8, label="float model", zorder=1)
    ax.set_xlabel({"power": "multiplier power relative to int8 (exact mul8s_1KV6 = 1)",
                   "area": "multiplier area relative to int8"}.get(cost, cost))
    ax.set_ylabel(metric + (" (vs ground truth)" if metric in ACCURACY else " (vs exact model)"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    labels = [r for r in front if r["kind"] != "reference"]
    if len(labels) > max_labels:   # label a spread along the front
        step = (len(labels) - 1) / (max_labels - 1)
        labels = [labels[round(i * step)] for i in range(max_labels)]
    refs = [(value(r, cost), value(r, metric)) for r in rows if r["kind"] == "reference" and r["label"] != "float"
            and value(r, cost) is not None and value(r, metric) is not None]
    _place_labels(ax, [(value(r, cost), value(r, metric), r["label"]) for r in labels], refs)
    return _save(fig, path)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.{digits}f}"
    return str(v)


def markdown(rows: Sequence[dict], metric: str = "delta1", cost: str = "power", title: str = "Pareto front",
             context: str = "", limit: int = 25) -> str:
    """A short Markdown report: the references, the front (metric, fidelity, power / area), the best saving
    within 1 % and 5 % of the int8 metric."""
    front = pareto_front([r for r in rows if r["label"] != "float"], metric, cost)
    refs = [r for r in rows if r["kind"] == "reference"]
    lines = [f"# {title}", ""]
    if context:
        lines += [context, ""]
    cols = ["label", "multipliers", "layers", metric, "psnr", "depth_rel_rms", "power", "area"]
    head = "| " + " | ".join(c if c != metric else f"**{metric}**" for c in cols) + " |"
    sep = "| " + " | ".join("---" for _ in cols) + " |"

    def table(rs):
        return [head, sep] + ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rs]

    lines += ["References:", ""] + table(refs) + [""]
    lines += [f"Pareto front ({len(front)} of {len(rows)} configurations; {metric} "
              f"{'higher' if higher_is_better(metric) else 'lower'} is better, {cost} relative to int8):", ""]
    lines += table(front[:limit]) + [""]
    int8 = next((r for r in refs if r["label"] == "int8"), None) or next(
        (r for r in refs if r["label"] == "uint8"), None)
    if int8 is not None and value(int8, metric) is not None:
        base = value(int8, metric)
        for tol in (0.01, 0.05):
            ok = [r for r in front if value(r, metric) is not None and (
                value(r, metric) >= base * (1 - tol) if higher_is_better(metric) else value(r, metric) <= base * (1 + tol))]
            if ok:
                best = min(ok, key=lambda r: value(r, cost))
                lines.append(f"- within {tol:.0%} of {int8['label']}'s {metric} ({base:.4f}): **{best['label']}** "
                             f"({best['multipliers']}; {best['layers']}) at {cost} {value(best, cost):.3f} "
                             f"(saves {100 * (1 - value(best, cost)):.1f} % of the multiplier {cost}), "
                             f"{metric} {value(best, metric):.4f}")
    warn = [r for r in rows if r.get("warning")]
    if warn:
        lines += ["", f"{len(warn)} configuration(s) gave degenerate depth, e.g. {warn[0]['label']}: "
                      f"{warn[0]['warning']}"]
    lines += ["", "Power / area: MAC-weighted published EvoApprox figures relative to the exact signed 8x8 "
                  "multiplier (see the README's cost model and its limits)."]
    return "\n".join(lines) + "\n"
