"""Argument checks shared by the library's entry points: counts (integers >= a bound) and rates (finite
positive numbers), with errors that name the argument. One definition, so ``True`` is never a batch size
and a float never a step count anywhere."""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional


def is_count(value: Any, low: int = 1) -> bool:
    """True for a Python or NumPy integer (not a bool) >= ``low``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def is_rate(value: Any, low: Optional[float] = None) -> bool:
    """True for a finite real number (not a bool) > 0, or >= ``low`` when given."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return value > 0 if low is None else value >= low


def check_counts(low: int = 1, **counts: Any) -> None:
    """Raise ValueError unless every value is an integer >= ``low``, naming the argument (the keyword: a
    function's parameter, or a CLI's option)."""
    for name, value in counts.items():
        if not is_count(value, low):
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_rates(low: Optional[float] = None, **rates: Any) -> None:
    """Raise ValueError unless every value is a finite number > 0 (>= ``low`` when given), naming the argument."""
    for name, value in rates.items():
        if not is_rate(value, low):
            raise ValueError(f"{name} must be a finite number {'> 0' if low is None else f'>= {low:g}'}, "
                             f"got {value!r}")
