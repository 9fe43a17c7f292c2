"""Approximate 8-bit multipliers as product tables ``lut[w_byte, x_byte]`` (weight = row).

* `get` -- a multiplier by name: ``exact_s8`` / ``exact_u8``, the 66 EvoApprox circuits (by name or
  alias), and the generated families of `jaxdepth.multipliers.families` (``trunc_s8_k4``,
  ``bam_u8_h2_v4``, ``drum_u8_k4``, ``mitchell_s8``, ``roba_u8``, ...).
* `load` -- a user's table from .npy / .npz[:key] / .csv / text, or from a function ``f(a, b)``;
  `save` -- a table with its signedness as .npz.
* `metrics`, `published`, `catalogue` -- error metrics (EvoApprox definitions), published figures,
  and a table of everything to pick a circuit from. ``python -m jaxdepth.multipliers --help``.

    >>> from jaxdepth import multipliers
    >>> m = multipliers.get("mul8s_1L2J")
    >>> round(multipliers.metrics(m)["MAE%"], 3)
    0.081
"""
from . import families
from .core import LUT_SHAPE, Multiplier, exact_table, operand_values, validate_table
from .families import bam, drum, mitchell, roba, truncated
from .loaders import load, save
from .metrics import catalogue, errors, metrics, published
from .registry import exact, get, names, register_generator

__all__ = ["LUT_SHAPE", "Multiplier", "bam", "catalogue", "drum", "errors", "exact", "exact_table",
           "families", "get", "load", "metrics", "mitchell", "names", "operand_values", "published",
           "register_generator", "roba", "save", "truncated", "validate_table"]
