"""Find a multiplier by name: exact tables, EvoApprox circuits (name or alias), parametric families."""
from __future__ import annotations

import difflib
import re
from typing import Callable

from . import evoapprox
from .core import Multiplier, exact_table

# name pattern -> factory(match) for generated multipliers; families register themselves here.
_GENERATORS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Multiplier], str]] = []


def register_generator(pattern: str, factory: Callable[[re.Match[str]], Multiplier], example: str) -> None:
    """Make names matching ``pattern`` (full match) resolvable by `get`; ``example`` is listed."""
    _GENERATORS.append((re.compile(pattern), factory, example))


def exact(signed: bool = True) -> Multiplier:
    """The exact 8x8 multiplier, signed (two's complement) or unsigned."""
    name = "exact_s8" if signed else "exact_u8"
    return Multiplier(name, exact_table(signed), signed, {"source": "exact"})


def _alias_index() -> dict[str, str]:
    idx: dict[str, str] = {}
    for name, info in evoapprox.published_figures().items():
        for alias in info["aliases"]:
            idx.setdefault(alias, name)
    return idx


def names(include_generated_examples: bool = True) -> list[str]:
    """Every name `get` knows: exact tables, EvoApprox circuits, and one example per family."""
    out = ["exact_s8", "exact_u8", *evoapprox.names()]
    if include_generated_examples:
        out += [example for _, _, example in _GENERATORS]
    return out


def get(name: str, *, transpose: bool = False) -> Multiplier:
    """The multiplier called ``name``.

    Accepts ``exact_s8`` / ``exact_u8`` (also ``exact``, ``int8`` = signed exact, ``uint8``), every
    EvoApprox circuit by v2022 name or by alias (``name@release``), and generated family names such as
    ``trunc_s8_k4`` (see `jaxdepth.multipliers.families`). ``transpose=True`` (or a name ending in ``.T``,
    as `Multiplier.transposed` names it) swaps the operand roles.
    Unknown names raise KeyError with the closest known names.
    """
    if not isinstance(name, str):
        raise TypeError(f"multiplier name must be a string, got {type(name).__name__}")
    key = name.strip()
    if key.endswith(".T"):                  # the name `Multiplier.transposed` gives, e.g. a saved plan's
        return get(key[:-2], transpose=not transpose)
    base = {"exact": "exact_s8", "int8": "exact_s8", "exact_s8": "exact_s8",
            "uint8": "exact_u8", "exact_u8": "exact_u8"}.get(key)
    mult: Multiplier | None = None
    if base is not None:
        mult = exact(base == "exact_s8")
    elif key in evoapprox.published_figures():
        mult = evoapprox.load(key)
    elif key in _alias_index():
        mult = evoapprox.load(_alias_index()[key])
    else:
        for pattern, factory, _ in _GENERATORS:
            m = pattern.fullmatch(key)
            if m:
                mult = factory(m)
                break
    if mult is None:
        known = {k.lower(): k for k in names() + list(_alias_index())}     # suggestions ignore case
        close = [known[k] for k in difflib.get_close_matches(key.lower(), list(known), n=5, cutoff=0.5)]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown multiplier {name!r}.{hint} (jaxdepth.multipliers.names() lists all)")
    return mult.transposed() if transpose else mult
