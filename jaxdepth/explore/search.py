"""Per-layer (or per-group) multiplier assignment search: NSGA-II (optuna's `NSGAIISampler`, not ours) over
which candidate circuit each group uses, objectives a metric (accuracy vs ground truth or fidelity vs the
exact model) and relative multiplier power; the result is the Pareto front.

The first generation is seeded from a sensitivity ranking (most sensitive group first): for each candidate
circuit, the least sensitive k groups take it and the others the exact table, for a spread of k. Every
evaluation goes through the results store (`run_configs`), so a stopped search resumes: its stored trials
are told to a fresh study and the search asks only for the remaining ones; an assignment sampled twice is
read back, not evaluated again. All candidates must share one signedness (the exact table of that
signedness is always a candidate), so every trial has the same plan structure and one compiled model
serves the whole search.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

from ..multipliers import Multiplier, get
from .evaluator import Config, Evaluator, table_id
from .report import flatten, higher_is_better, pareto_front, value
from .runner import Executor, run_configs
from .store import ResultStore, digest


def candidates_with_exact(candidates: Sequence[Multiplier]) -> list[Multiplier]:
    """The candidates (one signedness, all with a published power figure) plus that signedness' exact table."""
    from .cost import figures
    signs = {m.signed for m in candidates}
    if len(signs) != 1:
        raise ValueError("search candidates mix signed and unsigned circuits: search one signedness at a time "
                         f"({', '.join(m.name for m in candidates)})")
    missing = [m.name for m in candidates if figures(m)["power"] is None]
    if missing:
        raise ValueError(f"no published power figure for {', '.join(missing)}: the search needs relative power")
    exact = get("exact_s8" if signs.pop() else "exact_u8")
    return [exact] + [m for m in candidates if not m.is_exact]


def seed_assignments(groups: Sequence[str], candidates: Sequence[Multiplier], ranking: Optional[Sequence[str]],
                     limit: int) -> list[dict[str, str]]:
    """Starting points: per candidate (cheapest first) the least sensitive k groups on it, the rest exact."""
    from .cost import figures
    order = [g for g in (ranking or []) if g in groups] + [g for g in groups if g not in (ranking or [])]
    least_first = order[::-1]
    exact = candidates[0].name
    approx = sorted(candidates[1:], key=lambda m: figures(m)["power"])
    fractions = (1.0, 0.75, 0.5, 0.25, 0.1)
    seeds, seen = [], set()
    for frac in fractions:
        for m in approx:
            k = max(1, round(frac * len(groups)))
            a = {g: (m.name if g in least_first[:k] else exact) for g in groups}
            key = tuple(sorted(a.items()))
            if key not in seen:
                seen.add(key)
                seeds.append(a)
    return seeds[:limit]


def _objectives(rec: dict, metric: str) -> tuple[float, float]:
    row = flatten(rec)
    m = value(row, metric)
    if m is None or not math.isfinite(m):
        m = 0.0 if higher_is_better(metric) else 1e6
    return m, float(row["power"])


def search(ev: Evaluator, store: ResultStore, candidates: Sequence[Multiplier], groups: dict[str, list[str]], *,
           n_trials: int = 200, metric: str = "delta1", ranking: Optional[Sequence[str]] = None, seed: int = 0,
           population: int = 20, executor: Optional[Executor] = None, batch: int = 1, progress: bool = False,
           on_record: Optional[Callable[[dict, bool], None]] = None) -> list[dict]:
    """Run (or resume) the search; returns every trial's record (stored ones first)."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from tqdm import tqdm
    cands = candidates_with_exact(candidates)
    by_name = {m.name: m for m in cands}
    names = [m.name for m in cands]
    sid = digest({"candidates": [table_id(m) for m in cands], "groups": groups})[:12]
    dist = {g: CategoricalDistribution(names) for g in groups}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize" if higher_is_better(metric) else "minimize", "minimize"],
                                sampler=optuna.samplers.NSGAIISampler(population_size=population, seed=seed))

    def config(assignment: dict[str, str], i: int) -> Config:
        per_layer = {n: by_name[assignment[g]] for g, layers in groups.items() for n in layers}
        return Config.per_layer(f"trial {i}", per_layer, "search",
                                (("search", sid), ("assignment", tuple(assignment.items()))))

    previous = [r for r in store.records(ev.context, ["search"]) if r.get("meta", {}).get("search") == sid]
    for rec in previous:
        params = dict(rec["meta"]["assignment"])
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dist,
                                                  values=list(_objectives(rec, metric))))
    records = list(previous)
    if not previous:
        for a in seed_assignments(list(groups), cands, ranking, population):
            study.enqueue_trial(a)
    bar = tqdm(total=n_trials, initial=min(len(records), n_trials), desc="search", unit="trial",
               disable=not progress, dynamic_ncols=True)
    while len(records) < n_trials:
        trials = [study.ask(dist) for _ in range(min(batch, n_trials - len(records)))]
        configs = [config({g: t.params[g] for g in groups}, len(records) + i) for i, t in enumerate(trials)]
        recs = run_configs(ev, store, configs, executor=executor, on_record=on_record)
        for t, c, rec in zip(trials, configs, recs):
            if rec.get("meta", {}).get("search") != sid or rec["label"] != c.label:   # a stored duplicate
                rec = {**rec, "label": c.label, "kind": "search", "meta": dict(c.meta)}
            study.tell(t, list(_objectives(rec, metric)))
            records.append(rec)
        bar.update(len(trials))
    bar.close()
    return records


def front(records: Sequence[dict], metric: str = "delta1") -> list[dict]:
    """The Pareto front (flat rows) of search records: best ``metric`` for the least relative power."""
    return pareto_front([flatten(r) for r in records], metric, "power")
