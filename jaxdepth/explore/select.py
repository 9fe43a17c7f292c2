"""Choose multipliers and layers for an exploration: names, globs, families, filters on published figures,
user table files; layer-name globs. Everything is checked before any work starts.

    >>> names = [m.name for m in select_multipliers(["mul8s_*", "power < 0.3"])]
    >>> select_layers(["decoder.*"], layer_names)

A multiplier selection is a list of terms:

* a name `jaxdepth.multipliers.get` knows (``mul8u_197B``, ``exact_u8``, ``trunc_s8_k4``, an alias);
* a glob over the catalogue (``mul8s_*``, ``*_u8*``): the 66 EvoApprox circuits and the listed members of
  the generated families (`jaxdepth.multipliers.metrics.DEFAULT_FAMILY_MEMBERS`);
* a family: ``evoapprox``, ``signed`` / ``unsigned`` (EvoApprox circuits of that signedness), ``trunc``,
  ``bam``, ``drum``, ``mitchell``, ``roba``;
* a table file (``.npy``, ``.npz[:key]``, ``.csv``, ``.txt``; signedness as `jaxdepth.multipliers.load`
  infers it);
* a filter ``KEY OP VALUE`` on the published / computed figures, e.g. ``MAE% < 0.5``, ``power < 0.3``,
  ``power<=0.3mW``, ``EP% > 50``; KEY is one of `FILTER_KEYS` (``power``, ``area``, ``delay`` are the
  published mW / um2 / ns); OP one of ``< <= > >= == !=``. Filters keep the circuits that satisfy all of
  them; circuits without the figure are dropped.

With only filters, they apply to the 66 EvoApprox circuits. Unknown names, globs or families that match
nothing, unreadable files and malformed filters raise `SelectionError`.
"""
from __future__ import annotations

import fnmatch
import operator
import os
import re
from typing import Iterable, Optional, Sequence, Union

from ..models.plan import unmatched_patterns
from ..multipliers import Multiplier

FILTER_KEYS = {"power": "power_mW", "power_mw": "power_mW", "area": "area_um2", "area_um2": "area_um2",
               "delay": "delay_ns", "delay_ns": "delay_ns", "mae%": "MAE%", "wce%": "WCE%", "ep%": "EP%",
               "mre%": "MRE%", "mae": "MAE", "wce": "WCE", "wcre%": "WCRE%"}
FAMILIES = ("evoapprox", "signed", "unsigned", "trunc", "bam", "drum", "mitchell", "roba")
_OPS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne, "<": operator.lt,
        ">": operator.gt}
_FILTER = re.compile(r"^\s*([A-Za-z_%]+)\s*(<=|>=|==|!=|<|>)\s*([-+0-9.eE]+)\s*(mw|um2|ns|%)?\s*$", re.I)
_TABLE_SUFFIXES = (".npy", ".npz", ".csv", ".txt", ".dat")


class SelectionError(ValueError):
    """A selection term that names nothing (unknown circuit, empty glob, bad filter, unreadable file)."""


def _catalogue_names() -> list[str]:
    from ..multipliers import evoapprox
    from ..multipliers.metrics import DEFAULT_FAMILY_MEMBERS
    return [*evoapprox.names(), *DEFAULT_FAMILY_MEMBERS]


def _family(term: str) -> list[str]:
    from ..multipliers import evoapprox
    from ..multipliers.metrics import DEFAULT_FAMILY_MEMBERS
    if term == "evoapprox":
        return evoapprox.names()
    if term in ("signed", "unsigned"):
        figs = evoapprox.published_figures()
        return [n for n in evoapprox.names() if figs[n]["signed"] == (term == "signed")]
    prefix = {"trunc": "trunc_"}.get(term, term + "_")
    return [n for n in DEFAULT_FAMILY_MEMBERS if n.startswith(prefix)]


def parse_filter(term: str) -> Optional[tuple[str, str, float]]:
    """``"power < 0.3 mW"`` -> ("power_mW", "<", 0.3); None when ``term`` is not a filter."""
    if not re.search(r"[<>=!~\s]", term.strip()):
        return None
    m = _FILTER.match(term)
    if not m or m.group(1).lower() not in FILTER_KEYS:
        raise SelectionError(f"cannot read filter {term!r}: use KEY OP VALUE with KEY one of "
                             f"{', '.join(sorted(set(FILTER_KEYS)))} and OP one of < <= > >= == != "
                             f"(e.g. 'MAE% < 0.5', 'power < 0.3')")
    return FILTER_KEYS[m.group(1).lower()], m.group(2), float(m.group(3))


def figure(m: Multiplier, key: str) -> Optional[float]:
    """A multiplier's published hardware figure or recomputed error metric called ``key``."""
    if key in ("power_mW", "area_um2", "delay_ns"):
        from .cost import figures
        return figures(m)[{"power_mW": "power", "area_um2": "area", "delay_ns": "delay"}[key]]
    from ..multipliers import metrics
    return metrics(m)[key]


def _load_file(term: str, signed: Optional[bool]) -> Multiplier:
    """A user table; its signedness is ``signed`` or the one stored with it (`jaxdepth.multipliers.save`),
    never guessed."""
    from ..multipliers import load
    from ..multipliers.loaders import _read_file
    try:
        if signed is None and _read_file(term)[3] is None:
            raise SelectionError(f"{term}: say whether the table is signed (int8 operands) or unsigned (uint8): "
                                 f"--signed / --unsigned (or save it with jaxdepth.multipliers.save)")
        return load(term, signed=signed)
    except (OSError, ValueError, KeyError) as e:
        if isinstance(e, SelectionError):
            raise
        raise SelectionError(f"{term}: not a readable multiplier table ({e})") from None


def _is_file_term(term: str) -> bool:
    base = term.rpartition(":")[0] if ".npz:" in term else term
    return base.lower().endswith(_TABLE_SUFFIXES) or os.sep in term and os.path.exists(base)


def select_multipliers(terms: Union[str, Sequence[str]], signed: Optional[bool] = None) -> list[Multiplier]:
    """The multipliers ``terms`` (a list, or one term as a string) select, in first-mention order, without
    duplicates (see the module doc). ``signed``: the signedness of the table files among the terms (else
    the one stored with them)."""
    if isinstance(terms, str):
        terms = [terms]
    from ..multipliers import get
    chosen: list[Multiplier] = []
    seen: set[str] = set()
    filters: list[tuple[str, str, float]] = []

    def add(m: Multiplier) -> None:
        if m.name not in seen:
            seen.add(m.name)
            chosen.append(m)

    for raw in terms:
        term = str(raw).strip()
        if not term:
            continue
        flt = parse_filter(term)
        if flt is not None:
            filters.append(flt)
        elif _is_file_term(term):
            add(_load_file(term, signed))
        elif term.lower() in FAMILIES:
            for name in _family(term.lower()):
                add(get(name))
        elif any(c in term for c in "*?["):
            matches = [n for n in _catalogue_names() if fnmatch.fnmatchcase(n, term)]
            if not matches:
                raise SelectionError(f"multiplier glob {term!r} matches no circuit (python -m jaxdepth.multipliers "
                                     f"lists them)")
            for name in matches:
                add(get(name))
        else:
            try:
                add(get(term))
            except KeyError as e:
                raise SelectionError(str(e.args[0]) if e.args else str(e)) from None
    if not chosen and filters:
        for name in _family("evoapprox"):
            add(get(name))
    for key, op, value in filters:
        chosen = [m for m in chosen if (v := figure(m, key)) is not None and _OPS[op](v, value)]
    if not chosen:
        raise SelectionError(f"the multiplier selection {list(terms)} selects no circuit")
    return chosen


def select_layers(patterns: Union[str, Iterable[str]], layer_names: Sequence[str]) -> list[str]:
    """The layers (in model order) matching any of ``patterns`` (globs, or one glob as a string); a pattern
    matching none raises."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns) or ["*"]
    problem = unmatched_patterns(patterns, layer_names)
    if problem:
        raise SelectionError(problem)
    return [n for n in layer_names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def layer_groups(layer_names: Sequence[str], granularity: str) -> dict[str, list[str]]:
    """Named groups of layers, in model order: ``layers`` (each layer alone), ``blocks`` (the first two
    name parts: ``encoder.block4``, ``decoder.up1``), ``parts`` (``encoder``, ``decoder``)."""
    depth = {"layers": None, "blocks": 2, "parts": 1}
    if granularity not in depth:
        raise SelectionError(f"granularity must be one of {', '.join(depth)}, got {granularity!r}")
    groups: dict[str, list[str]] = {}
    for n in layer_names:
        key = n if depth[granularity] is None else ".".join(n.split(".")[:depth[granularity]])
        groups.setdefault(key, []).append(n)
    return groups
