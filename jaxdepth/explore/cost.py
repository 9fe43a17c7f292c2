"""Hardware cost of a per-layer multiplier assignment, from the circuits' published synthesis figures.

    relative power = sum_l MACs_l * P(m_l) / sum_l MACs_l * P(reference)

``P`` is the published power of layer ``l``'s multiplier (EvoApproxLib: 45 nm synthesis, mW at the
library's operating point), the reference the exact signed 8x8 EvoApprox multiplier ``mul8s_1KV6``
(0.425 mW), so an all-int8 network costs 1.0. Area is weighted the same way; delay is the worst
multiplier's delay relative to the reference (the critical path, not a sum).

Layers that stay float are charged a 32-bit float multiplier at Horowitz's 45 nm figures (ISSCC 2014,
"Computing's energy problem": 8-bit integer multiply 0.2 pJ / 282 um2, 32-bit float multiply 3.7 pJ /
7700 um2): 18.5x the int8 power, 27.3x the area, no delay figure. Exact tables cost the exact circuit
of their signedness (``exact_u8`` = ``mul8u_1JJQ``, 0.391 mW); circuits with no published figures
(generated families, user tables) have no cost (``None``) unless ``figures`` supplies it.

Limits: only the multipliers are counted (no adders, accumulators, memory traffic, zero-point correction
logic of unsigned layers, control); MAC-weighting assumes every multiplication costs the same energy
whatever its operands (EvoApprox figures are averages over random operands) and that each layer's MACs
run on its own multiplier type; area weighted by MACs is the area of a datapath provisioned in proportion
to each layer's work, not of a time-multiplexed accelerator (which would pay each distinct multiplier
once).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Optional, Sequence

from ..multipliers import Multiplier

REFERENCE = "mul8s_1KV6"                                     # exact signed 8x8 (EvoApproxLib)
EXACT_CIRCUITS = {True: "mul8s_1KV6", False: "mul8u_1JJQ"}   # the exact circuit of each signedness
FLOAT_FACTOR = {"power": 3.7 / 0.2, "area": 7700.0 / 282.0, "delay": None}   # Horowitz 2014, 45 nm
_KEYS = {"power": "power_mW", "area": "area_um2", "delay": "delay_ns"}
FIGURES = tuple(_KEYS)


def figures(m: Optional[Multiplier]) -> dict[str, Optional[float]]:
    """Published power (mW), area (um2) and delay (ns) of ``m`` (None: float), absolute; None when unknown."""
    from ..multipliers import get
    ref = {k: get(REFERENCE).metadata[v] for k, v in _KEYS.items()}
    if m is None:
        return {k: (None if FLOAT_FACTOR[k] is None else FLOAT_FACTOR[k] * ref[k]) for k in _KEYS}
    meta = m.metadata
    if m.is_exact and _KEYS["power"] not in meta:
        meta = get(EXACT_CIRCUITS[m.signed]).metadata
    return {k: (float(meta[v]) if meta.get(v) is not None else None) for k, v in _KEYS.items()}


def relative_cost(layers: Sequence[tuple[int, Optional[Multiplier]]]) -> dict[str, Optional[float]]:
    """``{"power", "area", "delay"}`` of (MACs, multiplier or None = float) pairs, relative to int8 everywhere.

    Power and area are MAC-weighted means; delay is the maximum. A figure is None when any layer's
    multiplier lacks it.
    """
    from ..multipliers import get
    ref = figures(get(REFERENCE))
    total = sum(macs for macs, _ in layers)
    out: dict[str, Optional[float]] = {}
    per = [(macs, figures(m)) for macs, m in layers]
    for k in _KEYS:
        values = [f[k] for _, f in per]
        if not layers or total <= 0 or any(v is None for v in values):
            out[k] = None
        elif k == "delay":
            out[k] = max(values) / ref[k]
        else:
            out[k] = sum(macs * f[k] for macs, f in per) / (total * ref[k])
    return out


def network_cost(infos: Iterable[Any], assignment: Mapping[str, Optional[Multiplier]]) -> dict[str, Optional[float]]:
    """`relative_cost` of a model's layers (`jaxdepth.models.LayerInfo`) under ``assignment``
    (layer name -> multiplier, None = float)."""
    return relative_cost([(i.macs, assignment.get(i.name)) for i in infos])


def format_cost(value: Optional[float]) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
