"""Run configurations through an evaluator (in process, or on Ray workers) with the results store as the
single source of truth: stored keys are skipped, each finished configuration is written at once."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional, Protocol as TypingProtocol, Sequence, Union

from ..multipliers import Multiplier, get
from .evaluator import Config, Evaluator
from .store import ResultStore


class Executor(TypingProtocol):
    """Evaluates configurations, yielding ``(config, record)`` as each finishes (any order)."""

    def run(self, configs: Sequence[Config]) -> Iterator[tuple[Config, dict]]: ...


class LocalExecutor:
    """In-process, one configuration after another (the default: nothing to start)."""

    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator

    def run(self, configs: Sequence[Config]) -> Iterator[tuple[Config, dict]]:
        for c in configs:
            yield c, self.evaluator.evaluate(c)


def reference_configs(signedness: Iterable[bool] = (True,), layers: Sequence[str] = ("*",)) -> list[Config]:
    """The float model and the exact table(s) of each signedness on ``layers``: the rows a sweep is read against."""
    out = [Config("float", (), None, "reference", (("multiplier", "float"),))]
    for signed in sorted(set(signedness), reverse=True):
        m = get("exact_s8" if signed else "exact_u8")
        label = "int8" if signed else "uint8"
        out.append(Config(label, tuple((p, m) for p in layers), None, "reference",
                          (("multiplier", m.name), ("layers", " ".join(layers)))))
    return out


def sweep_configs(multipliers: Union[Multiplier, Sequence[Multiplier]], layers: Union[str, Sequence[str]] = ("*",), *,
                  references: bool = True) -> list[Config]:
    """One configuration per multiplier on the ``layers`` globs (the rest float, as ``evaluate --layers``),
    preceded by the reference rows (float, and the exact table of each signedness used). ``layers``: a
    list of globs, or one glob as a string."""
    layers = (layers,) if isinstance(layers, str) else tuple(layers) or ("*",)
    if isinstance(multipliers, Multiplier):
        multipliers = [multipliers]
    configs = reference_configs({m.signed for m in multipliers}, layers) if references else []
    names = {c.label for c in configs}
    for m in multipliers:
        if m.name in names:
            continue
        configs.append(Config(m.name, tuple((p, m) for p in layers), None, "sweep",
                              (("multiplier", m.name), ("layers", " ".join(layers)))))
    return configs


def run_configs(evaluator: Evaluator, store: ResultStore, configs: Sequence[Config], *,
                executor: Optional[Executor] = None, progress: bool = False,
                on_record: Optional[Callable[[dict, bool], None]] = None) -> list[dict]:
    """Records of ``configs`` (in order): stored ones read back, the others evaluated and stored one by one.

    ``on_record(record, evaluated_now)`` is called for every configuration (e.g. a Ctrl-C summary).
    """
    from tqdm import tqdm
    store.add_context(evaluator.context, {"description": evaluator.description,
                                          "protocol": evaluator.protocol.__dict__})
    keys = [evaluator.key(c) for c in configs]
    records: dict[str, dict] = {}
    todo: list[Config] = []
    pending: set[str] = set()
    for c, k in zip(configs, keys):
        rec = store.get(k)
        if rec is not None:
            records[k] = rec
            if on_record:
                on_record(rec, False)
        elif k not in pending:
            pending.add(k)
            todo.append(c)
    executor = executor or LocalExecutor(evaluator)
    bar = tqdm(total=len(todo), desc="configurations", unit="cfg", disable=not progress or not todo,
               dynamic_ncols=True)
    for c, rec in executor.run(todo):
        k = evaluator.key(c)                     # the driver's key (a worker's paths may differ)
        rec = {**rec, "key": k, "context": evaluator.context}
        store.put(k, evaluator.context, rec)
        records[k] = rec
        bar.update(1)
        bar.set_postfix_str(c.label[:30])
        if on_record:
            on_record(rec, True)
    bar.close()
    return [records[k] for k in keys]
