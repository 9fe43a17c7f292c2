"""Argument checking and normalisation shared by every LUT convolution kernel.

The front end (`jaxdepth.lutconv.conv2d`) validates the call, pads the input explicitly with the pad
code, and hands every kernel the same normalised problem: a VALID convolution of int32 codes with
``stride``, ``dilation`` and ``groups`` (a `ConvSpec`). Kernels therefore never see padding, except those
registered with ``pads_inside`` (`registry.Kernel`), which get the unpadded codes and the pads.
"""
from __future__ import annotations

import dataclasses
import operator
from typing import Any, Sequence, Union

import jax
import numpy as np

Pair = tuple[int, int]
PaddingArg = Union[int, Sequence[int], Sequence[Sequence[int]], str]


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A normalised VALID convolution: strides, dilations and feature groups."""

    stride: Pair = (1, 1)
    dilation: Pair = (1, 1)
    groups: int = 1

    def output_hw(self, in_hw: Pair, kernel_hw: Pair) -> Pair:
        """Output height and width of a VALID convolution of an (already padded) input; 0 where the
        dilated kernel does not fit (an empty output, as XLA's convolution gives)."""
        out = []
        for size, k, s, d in zip(in_hw, kernel_hw, self.stride, self.dilation):
            span = d * (k - 1) + 1
            out.append(max((size - span) // s + 1, 0))
        return out[0], out[1]


def is_traced(*arrays: Any) -> bool:
    """True when any argument is a jax tracer (the call is being traced inside jit / vmap)."""
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


def _is_int(value: Any) -> bool:
    """True for Python / NumPy integers and concrete integer scalars (not floats, even integral ones)."""
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def check_groups(groups: Any) -> int:
    """``groups`` as an int; raise unless it is a positive int (not a float, not a bool)."""
    if isinstance(groups, bool) or not _is_int(groups) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    return int(groups)


def as_pair(value: Any, what: str) -> Pair:
    """An int or a pair of positive ints -> (int, int)."""
    if _is_int(value):
        pair = (int(value), int(value))
    else:
        try:
            a, b = value
        except (TypeError, ValueError):
            a = b = None
        if not (_is_int(a) and _is_int(b)):
            raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
        pair = (int(a), int(b))
    if min(pair) < 1:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return pair


def normalize_padding(padding: PaddingArg, in_hw: Pair, kernel_hw: Pair, stride: Pair,
                      dilation: Pair) -> tuple[Pair, Pair]:
    """Any accepted padding form -> ((top, bottom), (left, right)).

    Forms: int, (ph, pw), ((top, bottom), (left, right)), "VALID", "SAME" (TensorFlow / XLA rule:
    output = ceil(in / stride), the extra row or column at the bottom / right).
    """
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return (0, 0), (0, 0)
        if mode != "SAME":
            raise ValueError(f"padding string must be 'SAME' or 'VALID', got {padding!r}")
        pads = []
        for size, k, s, d in zip(in_hw, kernel_hw, stride, dilation):
            out = -(-size // s)
            total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        return pads[0], pads[1]
    forms = "an int, a pair (ph, pw), ((top, bottom), (left, right)), 'SAME' or 'VALID'"
    if _is_int(padding):
        p = int(padding)
        result = ((p, p), (p, p))
    else:
        try:
            items = list(padding)
        except TypeError:
            raise ValueError(f"padding must be {forms}; got {padding!r}") from None
        if len(items) != 2:
            raise ValueError(f"padding must be {forms}; got {padding!r}")
        if all(_is_int(v) for v in items):
            result = ((int(items[0]),) * 2, (int(items[1]),) * 2)
        else:
            try:
                result = tuple(_int_pair(item) for item in items)
            except (TypeError, ValueError):
                raise ValueError(f"padding must be {forms} (integers only); got {padding!r}") from None
    if min(min(p) for p in result) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return result  # type: ignore[return-value]


def _int_pair(item: Any) -> Pair:
    a, b = item
    if not (_is_int(a) and _is_int(b)):
        raise ValueError(f"not a pair of ints: {item!r}")
    return int(a), int(b)


def check_integer_codes(arr: Any, what: str) -> None:
    """Raise a clear error unless ``arr`` has an integer dtype."""
    dtype = np.dtype(arr.dtype if hasattr(arr, "dtype") else np.asarray(arr).dtype)
    if dtype.kind not in "iu":
        raise TypeError(f"{what} must hold integer codes (int8/uint8/int32...), got dtype {dtype}; "
                        "quantize first (jaxdepth.quant)")


def check_code_range(arr: Any, signed: bool, what: str) -> None:
    """Codes must be in [-128, 127] for signed tables and [0, 255] for unsigned ones (concrete only)."""
    try:
        a = np.asarray(arr)
    except Exception:  # a tracer inside jit: the range cannot be checked here
        return
    if a.size == 0:
        return
    lo, hi = (-128, 127) if signed else (0, 255)
    amin, amax = int(a.min()), int(a.max())
    if amin < lo or amax > hi:
        kind = "signed" if signed else "unsigned"
        raise ValueError(f"{what} codes span [{amin}, {amax}], outside [{lo}, {hi}] of a {kind} table")


def check_pad_code(pad_code: Any, signed: bool) -> None:
    """``pad_code`` must be one integer code of the table's range (the range only when concrete; a traced
    pad code must still have an integer dtype and be a scalar, both static)."""
    dtype = np.dtype(pad_code.dtype if hasattr(pad_code, "dtype") else np.asarray(pad_code).dtype)
    if np.ndim(pad_code) != 0 or dtype.kind not in "iu":
        raise ValueError(f"pad_code must be one integer code, got {pad_code!r} (dtype {dtype}, shape "
                         f"{np.shape(pad_code)}); quantize the padding value first (e.g. the zero point)")
    if is_traced(pad_code):
        return
    lo, hi = (-128, 127) if signed else (0, 255)
    if not lo <= int(pad_code) <= hi:
        kind = "signed" if signed else "unsigned"
        raise ValueError(f"pad_code {pad_code} outside [{lo}, {hi}] of a {kind} table")
