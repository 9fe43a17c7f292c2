"""Which layers a multiplier hurts: one layer (or group) at a time through it, and how an error propagates.

`sensitivity_configs`: a baseline (every layer through the exact table of the multiplier's signedness, so
the whole sweep is one plan structure and compiles once) and one configuration per group with that
group through the multiplier. `rank` orders the groups by the drop of a metric against the baseline.

`propagation`: for one configuration, every layer's output compared with the exact (float) model's on a few
frames: the relative error ``||y - y_exact|| / ||y_exact||`` and the spread ratio ``std(y) / std(y_exact)``
(-> 0: the layer's output collapsed to a constant; >> 1: it blew up). `saturation` names where the error
enters and where it saturates.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..multipliers import Multiplier, get
from .evaluator import Config, Evaluator
from .report import flatten, higher_is_better, value


def base_multiplier(m: Multiplier, base: str) -> Optional[Multiplier]:
    """The arithmetic of the layers not under test: ``exact`` (the exact table of ``m``'s signedness) or
    ``float``."""
    if base == "float":
        return None
    if base != "exact":
        raise ValueError(f"base must be 'exact' or 'float', got {base!r}")
    return get("exact_s8" if m.signed else "exact_u8")


def sensitivity_configs(m: Multiplier, groups: dict[str, list[str]], base: str = "exact") -> list[Config]:
    """The baseline and one configuration per group (``groups``: name -> layer names, see `layer_groups`)."""
    b = base_multiplier(m, base)
    base_rules = (("*", b),) if b is not None else ()
    base_label = "float" if b is None else ("int8" if m.signed else "uint8")
    configs = [Config(base_label, base_rules, None, "reference",
                      (("multiplier", "float" if b is None else b.name), ("layers", "*")))]
    for g, names in groups.items():
        configs.append(Config(f"{m.name} @ {g}", tuple((n, m) for n in names) + base_rules, None, "sensitivity",
                              (("multiplier", m.name), ("layers", g), ("group", g), ("base", base_label))))
    return configs


def rank(records: Sequence[dict], metric: str = "delta1") -> list[dict]:
    """Rows of the sensitivity records (the first record is the baseline), with ``drop`` = how much worse
    ``metric`` is than the baseline (positive: worse), most sensitive first."""
    base = flatten(records[0])
    sign = 1.0 if higher_is_better(metric) else -1.0
    out = []
    for rec in records[1:]:
        row = flatten(rec)
        row["group"] = rec.get("meta", {}).get("group", row["label"])
        row["drop"] = sign * (value(base, metric) - value(row, metric)) if value(row, metric) is not None else None
        out.append(row)
    out.sort(key=lambda r: -np.inf if r["drop"] is None else -r["drop"])
    return out


def sensitivity_plot(ranking: Sequence[dict], path: Any, metric: str, title: str = "") -> Any:
    """Horizontal bars of the metric drop per group, most sensitive on top."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..viz import _save
    rows = [r for r in ranking if r["drop"] is not None]
    h = max(3.0, 0.22 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(8, h))
    y = np.arange(len(rows))[::-1]
    ax.barh(y, [r["drop"] for r in rows], color=["tab:red" if r["drop"] > 0 else "tab:green" for r in rows])
    ax.set_yticks(y, [r["group"] for r in rows], fontsize=7)
    ax.axvline(0, color="0.3", lw=0.8)
    ax.set_xlabel(f"{metric} drop vs the baseline (positive = worse)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


# ---- error propagation -----------------------------------------------------------------------------------
def propagation(ev: Evaluator, config: Config, frames: int = 4) -> list[dict]:
    """Per layer (model order): relative error of its output against the exact model's, spread ratio, and the
    layer's arithmetic, on the first ``frames`` frames (no flip)."""
    import jax
    from ..models import Plan, QConv, QDense
    assignment = ev.assignment(config)
    x = np.concatenate([ev._x[id(b[0])] for b in ev.batches])[:frames]
    rules = {n: {"multiplier": "exact_s8" if m.signed else "exact_u8", "runtime_table": True}
             for n, m in assignment.items() if m is not None}

    def capture(model, v, x):
        def keep(mdl, method):
            return isinstance(mdl, (QConv, QDense)) and method == "__call__"
        _, state = model.apply(v, x.astype(np.float32) / 255.0, capture_intermediates=keep, mutable=["intermediates"])
        return state["intermediates"]

    approx = ev.model.clone(plan=Plan.make(rules))
    got = jax.jit(lambda v, x: capture(approx, v, x))(ev.variables_for(assignment), x)
    ref = jax.jit(lambda v, x: capture(ev.model, v, x))(ev._base, x)
    out = []
    for info in ev.infos:
        a = _first_array(got, info.path)
        e = _first_array(ref, info.path)
        if a is None or e is None:
            continue
        a64, e64 = np.asarray(a, np.float64), np.asarray(e, np.float64)
        m = assignment[info.name]
        out.append({"layer": info.name, "multiplier": None if m is None else m.name, "macs": info.macs,
                    "rel_error": float(np.linalg.norm(a64 - e64) / max(np.linalg.norm(e64), 1e-30)),
                    "std_ratio": float(a64.std() / max(e64.std(), 1e-30)),
                    "mean": float(a64.mean()), "exact_mean": float(e64.mean())})
    return out


def _first_array(tree: Any, path: Sequence[str]) -> Optional[np.ndarray]:
    """The first array a module at ``path`` returned (captured intermediates), None if not captured."""
    import jax
    node = tree
    for p in path:
        if not hasattr(node, "get") or p not in node:
            return None
        node = node[p]
    leaves = jax.tree_util.tree_leaves(node.get("__call__", node))
    return None if not leaves else np.asarray(leaves[0])


def saturation(rows: Sequence[dict], enter: float = 0.05, blow: float = 0.5) -> dict[str, Optional[str]]:
    """Where the error enters (first layer above ``enter`` relative error), where it blows up (first above
    ``blow``) and where the output collapses (first layer whose spread falls below 5 % of the exact one's)."""
    def first(pred):
        return next((r["layer"] for r in rows if pred(r)), None)
    return {"enters": first(lambda r: r["rel_error"] > enter), "blows_up": first(lambda r: r["rel_error"] > blow),
            "collapses": first(lambda r: r["std_ratio"] < 0.05)}


def propagation_plot(rows: Sequence[dict], path: Any, title: str = "") -> Any:
    """Relative error (log scale) and spread ratio of every layer's output, in model order."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..viz import _save
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(max(8, 0.16 * len(rows) + 2), 6.5), sharex=True)
    x = np.arange(len(rows))
    err = np.maximum([r["rel_error"] for r in rows], 1e-6)
    colors = ["tab:blue" if r["multiplier"] and not r["multiplier"].startswith("exact") else "0.6" for r in rows]
    ax.bar(x, err, color=colors)
    ax.set_yscale("log")
    ax.set_ylabel("relative error of the output\n||y - y_exact|| / ||y_exact||")
    ax.axhline(0.5, color="tab:red", lw=0.8, ls="--")
    ax2.bar(x, [r["std_ratio"] for r in rows], color=colors)
    ax2.axhline(1.0, color="0.3", lw=0.8)
    ax2.set_ylabel("std(y) / std(y_exact)")
    ax2.set_xticks(x, [r["layer"] for r in rows], rotation=90, fontsize=6)
    sat = saturation(rows)
    for key, color in (("blows_up", "tab:red"), ("collapses", "tab:purple")):
        if sat[key] is not None:
            i = next(j for j, r in enumerate(rows) if r["layer"] == sat[key])
            for a in (ax, ax2):
                a.axvline(i, color=color, lw=1, ls=":")
            ax.annotate(key.replace("_", " "), (i, err[i]), xytext=(4, 4), textcoords="offset points", fontsize=7,
                        color=color)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)
