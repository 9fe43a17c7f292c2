"""Approximate 8-bit multipliers as product tables ``lut[w_byte, x_byte]`` (weight = row).

    >>> from jaxdepth import multipliers
    >>> m = multipliers.get("mul8s_1L2J")
    >>> multipliers.metrics(m)["MAE%"]
"""
from .core import LUT_SHAPE, Multiplier, exact_table, operand_values, validate_table
from .registry import exact, get, names, register_generator

__all__ = ["LUT_SHAPE", "Multiplier", "exact", "exact_table", "get", "names", "operand_values",
           "register_generator", "validate_table"]
