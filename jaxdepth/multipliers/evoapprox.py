"""The 66 EvoApproxLib 8x8 multipliers shipped as package data (MIT, see data/EVOAPPROX_NOTICE.md)."""
from __future__ import annotations

import csv
import functools
from importlib import resources
from typing import Any

import numpy as np

from .core import Multiplier

_METRIC_COLUMNS = ("MAE%", "MAE", "WCE%", "WCE", "WCRE%", "EP%", "MRE%", "MSE")
_HARDWARE_COLUMNS = ("power_mW", "area_um2", "delay_ns")


def _data_file(name: str):
    return resources.files("jaxdepth.multipliers").joinpath("data", name)


@functools.lru_cache(maxsize=1)
def published_figures() -> dict[str, dict[str, Any]]:
    """circuits.csv as {name: {signed, release, aliases, published metrics, power/area/delay}}."""
    with _data_file("circuits.csv").open("r", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        out[r["name"]] = {
            "signed": r["signedness"] == "signed",
            "release": r["release"],
            "aliases": tuple(a for a in r["aliases"].split(";") if a) if r["aliases"] else (),
            "published": {k: float(r[k]) for k in _METRIC_COLUMNS},
            **{k: float(r[k]) for k in _HARDWARE_COLUMNS},
        }
    return out


@functools.lru_cache(maxsize=1)
def _tables() -> dict[str, np.ndarray]:
    with _data_file("luts.npz").open("rb") as fh:
        with np.load(fh) as z:
            return {k: z[k] for k in z.files}


def names() -> list[str]:
    """Names of all shipped EvoApprox circuits, signed first."""
    return list(published_figures())


def load(name: str) -> Multiplier:
    """One EvoApprox circuit by its exact (v2022 or @release) name."""
    info = published_figures()[name]
    meta = {k: v for k, v in info.items() if k != "signed"}
    meta["source"] = "EvoApproxLib (MIT, Copyright 2018 EHW@FIT)"
    return Multiplier(name, _tables()[name], info["signed"], meta)
