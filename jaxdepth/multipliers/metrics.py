"""Error metrics of a product table, the published EvoApprox figures, and a catalogue to pick from.

The metrics follow the EvoApproxLib definitions (see ``data/EVOAPPROX_NOTICE.md`` and the project's
evoapprox README). With ``e = f(a, b) - a*b`` over all 65,536 operand pairs (``a, b`` in 0..255 for
unsigned tables, -128..127 for signed ones; ``a`` the weight, ``b`` the activation):

========  ====================================================================================
MAE       mean ``|e|``
MAE%      ``MAE / 2**16 * 100`` (the same 2^16 denominator for signed and unsigned)
WCE       max ``|e|``
WCE%      ``WCE / 2**16 * 100``
EP%       ``100 *`` fraction of pairs with ``e != 0``
MRE%      ``100 *`` mean of ``|e| / |a*b|`` over the pairs with ``a*b != 0``
WCRE%     ``100 *`` max of ``|e| / |a*b|`` over the same pairs
MSE       mean ``e**2`` (not normalised)
ME        mean ``e`` (the bias; also under the key ``bias``)
========  ====================================================================================
"""
from __future__ import annotations

import functools
from typing import Any, Iterable, Union

import numpy as np

from . import evoapprox
from .core import Multiplier, operand_values

#: The keys of `metrics`, in display order.
METRIC_KEYS = ("MAE%", "MAE", "WCE%", "WCE", "WCRE%", "EP%", "MRE%", "MSE", "ME", "bias")
#: The columns of a `catalogue` row.
CATALOGUE_KEYS = ("name", "signed", "family", "MAE%", "WCE%", "EP%", "MRE%", "power_mW", "area_um2",
                  "delay_ns")

_FULL_SCALE = float(1 << 16)


def errors(m: Multiplier) -> np.ndarray:
    """``e[w_byte, x_byte] = table - exact product`` as int64 (256, 256)."""
    v = operand_values(m.signed).astype(np.int64)
    return m.table.astype(np.int64) - np.outer(v, v)


def metrics(m: Multiplier) -> dict[str, float]:
    """MAE, MAE%, WCE, WCE%, WCRE%, EP%, MRE%, MSE and ME (= ``bias``) of ``m`` over all pairs.

    Definitions in the module docstring; they reproduce the published EvoApprox figures.
    """
    if not isinstance(m, Multiplier):
        raise TypeError(f"metrics() takes a Multiplier (see jaxdepth.multipliers.get / load), "
                        f"got {type(m).__name__}")
    v = operand_values(m.signed).astype(np.int64)
    exact = np.outer(v, v)
    e = m.table.astype(np.int64) - exact
    ae = np.abs(e)
    nz = exact != 0
    rel = ae[nz] / np.abs(exact[nz])
    mae = float(ae.mean())
    wce = float(ae.max())
    me = float(e.mean())
    return {
        "MAE%": mae / _FULL_SCALE * 100.0,
        "MAE": mae,
        "WCE%": wce / _FULL_SCALE * 100.0,
        "WCE": wce,
        "WCRE%": float(rel.max()) * 100.0,
        "EP%": float(np.count_nonzero(e)) / e.size * 100.0,
        "MRE%": float(rel.mean()) * 100.0,
        "MSE": float((e.astype(np.float64) ** 2).mean()),
        "ME": me,
        "bias": me,
    }


def published(name: Union[str, Multiplier]) -> dict[str, Any]:
    """The figures EvoApproxLib publishes for circuit ``name`` (v2022 name or alias ``name@release``, or
    the `Multiplier` `get` returns for one).

    Returns ``{"name", "signed", "release", "aliases", "MAE%", "MAE", "WCE%", "WCE", "WCRE%", "EP%",
    "MRE%", "MSE", "power_mW", "area_um2", "delay_ns"}``. Published metrics are rounded to about two
    significant digits; three signed circuits' MAE / MAE% are off by 1-6 % (mul8s_1KV8, mul8s_1KV9,
    mul8s_1KVQ). Raises KeyError (with suggestions) for a name that is not an EvoApprox circuit.
    """
    from .registry import get  # resolves aliases and suggests close names

    figures = evoapprox.published_figures()
    if isinstance(name, Multiplier):
        name = name.name
    key = name.strip() if isinstance(name, str) else name
    if key not in figures:
        m = get(key)
        if m.name not in figures:
            raise KeyError(f"{name!r} is not an EvoApprox circuit: no published figures")
        key = m.name
    info = figures[key]
    return {"name": key, "signed": info["signed"], "release": info["release"],
            "aliases": info["aliases"], **info["published"],
            **{k: info[k] for k in ("power_mW", "area_um2", "delay_ns")}}


#: Family members listed by `catalogue(families=True)`: a spread of each family's parameter.
DEFAULT_FAMILY_MEMBERS = (
    *(f"trunc_{s}_k{k}" for s in ("u8", "s8") for k in (2, 4, 6, 8)),
    *(f"bam_{s}_h{h}_v{v}" for s in ("u8", "s8") for h, v in ((0, 4), (2, 6), (2, 8), (4, 8))),
    *(f"drum_{s}_k{k}" for s in ("u8", "s8") for k in (3, 4, 5, 6)),
    "mitchell_u8", "mitchell_s8", "roba_u8", "roba_s8",
)


@functools.lru_cache(maxsize=None)
def _row(name: str) -> tuple:
    from .registry import get

    m = get(name)
    mt = metrics(m)
    return (m.name, m.signed, m.metadata.get("family", "evoapprox" if m.power_mw is not None else ""),
            mt["MAE%"], mt["WCE%"], mt["EP%"], mt["MRE%"], m.power_mw, m.area_um2, m.delay_ns)


def catalogue(*, evoapprox_circuits: bool = True, families: bool = True,
              extra: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Rows ``{name, signed, family, MAE%, WCE%, EP%, MRE%, power_mW, area_um2, delay_ns}``.

    Metrics are recomputed from the tables (so every row uses the same definitions); power, area and
    delay are EvoApprox's published 45 nm synthesis figures, ``None`` for the generated families
    (no hardware figures exist for them here). ``families`` adds `DEFAULT_FAMILY_MEMBERS`; ``extra``
    adds any other names `get` resolves.
    """
    names: list[str] = []
    if evoapprox_circuits:
        names += evoapprox.names()
    if families:
        names += list(DEFAULT_FAMILY_MEMBERS)
    names += [n for n in extra if n not in names]
    return [dict(zip(CATALOGUE_KEYS, _row(n))) for n in names]
