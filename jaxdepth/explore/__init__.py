"""Design-space exploration: which multiplier, on which layers, for how much power at what accuracy.

    >>> from jaxdepth import explore
    >>> spec = explore.EvalSpec(data="synthetic:32:1000")            # bundled model, held-out rooms
    >>> ev = spec.build()
    >>> configs = explore.sweep_configs(explore.select_multipliers(["mul8u_*", "power < 0.3"]), ["*"])
    >>> with explore.ResultStore("out/results.sqlite") as store:
    ...     records = explore.run_configs(ev, store, configs)         # resumable: stored keys are skipped
    >>> rows = [explore.flatten(r) for r in records]
    >>> explore.pareto_front(rows, "delta1", "power")

Modules: `cost` (relative multiplier power / area / delay), `select` (multiplier and layer selection),
`store` (SQLite results), `evaluator` (one compiled model per plan structure, tables as runtime operands),
`runner` (sweeps, resumable runs), `report` (front, CSV / JSON, plot, Markdown). CLI: ``python -m
jaxdepth.explore --help``.
"""
from .cost import network_cost, relative_cost
from .evaluator import Config, EvalSpec, Evaluator, Protocol, table_id
from .report import flatten, markdown, pareto_front, pareto_plot, write_tables
from .runner import LocalExecutor, reference_configs, run_configs, sweep_configs
from .select import SelectionError, layer_groups, select_layers, select_multipliers
from .store import ResultStore, StoreError

__all__ = ["Config", "EvalSpec", "Evaluator", "LocalExecutor", "Protocol", "ResultStore", "SelectionError",
           "StoreError", "flatten", "layer_groups", "markdown", "network_cost", "pareto_front", "pareto_plot",
           "reference_configs", "relative_cost", "run_configs", "select_layers", "select_multipliers",
           "sweep_configs", "table_id", "write_tables"]
