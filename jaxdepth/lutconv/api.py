"""Public entry points: `conv2d`, `dense`, `explain`, and `window_sums` (the per-group window sums of codes)."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from ..multipliers import Multiplier, validate_table
from .registry import Kernel, Problem, choose, get_kernel
from .spec import (ConvSpec, PaddingArg, as_pair, check_code_range, check_integer_codes, is_traced,
                   normalize_padding)

TableLike = Union[Multiplier, np.ndarray, jax.Array]
ImplArg = Union[str, Sequence[str]]  # "auto", one kernel name, or the kernels "auto" may choose among


def window_sums(values: jax.Array, kernel_hw: tuple[int, int], groups: int, stride: Any = 1,
                dilation: Any = 1, pads: Any = ((0, 0), (0, 0)), pad_value: Any = 0) -> jax.Array:
    """Sum of ``values`` (N, H, W, C) int32 over each output's receptive field, per channel group:
    (N, Ho, Wo, groups) int32. ``pads`` (((top, bottom), (left, right))) add positions holding ``pad_value``
    in every channel. The zero-point corrections of unsigned layers and `lowrank`'s ``v[x]`` term use it."""
    n, h, w, c = values.shape
    per_group = values.reshape(n, h, w, groups, c // groups).sum(axis=-1, dtype=jnp.int32)
    per_group = jnp.pad(per_group, ((0, 0), *pads, (0, 0)),
                        constant_values=jnp.asarray(pad_value, jnp.int32) * (c // groups))
    return jax.lax.reduce_window(per_group, jnp.int32(0), jax.lax.add, (1, *kernel_hw, 1),
                                 (1, *as_pair(stride, "stride"), 1), "VALID",
                                 window_dilation=(1, *as_pair(dilation, "dilation"), 1))


def _resolve_table(lut: TableLike, signed: Optional[bool]) -> tuple[Any, Optional[np.ndarray], Optional[bool]]:
    """(table usable by kernels, concrete numpy table or None, signedness or None)."""
    if isinstance(lut, Multiplier):
        if signed is not None and signed != lut.signed:
            raise ValueError(f"signed={signed} contradicts multiplier {lut.name} (signed={lut.signed})")
        return lut.table, lut.table, lut.signed
    if is_traced(lut):
        if tuple(lut.shape) != (256, 256):
            raise ValueError(f"a product table must have shape (256, 256), got {tuple(lut.shape)}")
        return lut, None, signed
    table = validate_table(np.asarray(lut), "lut")
    return table, table, signed


def _allowed(impl: ImplArg) -> Optional[frozenset[str]]:
    """None for "auto"; for a sequence of kernel names, those names (each checked)."""
    if isinstance(impl, str):
        return None
    names = frozenset(get_kernel(name).name for name in impl)
    if not names:
        raise ValueError("impl must be 'auto', a kernel name or a non-empty list of kernel names")
    return names


def _prepare(x: Any, w: Any, lut: TableLike, stride: Any, padding: PaddingArg, dilation: Any,
             groups: int, pad_code: int, signed: Optional[bool], impl: ImplArg):
    check_integer_codes(x, "x")
    check_integer_codes(w, "w")
    if len(np.shape(x)) != 4:
        raise ValueError(f"x must be NHWC (rank 4), got shape {tuple(np.shape(x))}")
    if len(np.shape(w)) != 4:
        raise ValueError(f"w must be HWIO (rank 4), got shape {tuple(np.shape(w))}")
    n, h, wd, c = np.shape(x)
    kh, kw, cg, o = np.shape(w)
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if c % groups or o % groups:
        raise ValueError(f"in_channels {c} and out_channels {o} must both be divisible by groups {groups}")
    if cg * groups != c:
        raise ValueError(f"w has {cg} input channels per group but x has {c} channels and groups={groups} "
                         f"(expected w.shape[2] == {c // groups})")
    table, concrete, signed = _resolve_table(lut, signed)
    if signed is None:  # infer from the codes when the table is a bare array
        lows = [int(np.min(a)) for a in (x, w) if not is_traced(a) and np.size(a)]
        signed = bool(lows) and min(lows) < 0
    check_code_range(x, signed, "x")
    check_code_range(w, signed, "w")
    lo, hi = (-128, 127) if signed else (0, 255)
    if not is_traced(pad_code) and not lo <= int(pad_code) <= hi:
        raise ValueError(f"pad_code {pad_code} outside [{lo}, {hi}]")
    stride_p, dilation_p = as_pair(stride, "stride"), as_pair(dilation, "dilation")
    pads = normalize_padding(padding, (h, wd), (kh, kw), stride_p, dilation_p)
    spec = ConvSpec(stride_p, dilation_p, int(groups))
    padded_shape = (n, h + sum(pads[0]), wd + sum(pads[1]), c)
    spec.output_hw(padded_shape[1:3], (kh, kw))  # raises when the kernel does not fit
    traced = is_traced(x, w, table, pad_code)
    problem = Problem(padded_shape, (kh, kw, cg, o), spec, concrete, traced)
    kernel, _ = _select(problem, impl)
    return kernel, problem, table, pads


def _select(problem: Problem, impl: ImplArg) -> tuple[Kernel, str]:
    """The kernel ``impl`` runs ``problem`` with, and why; a forced kernel that cannot run it raises."""
    if not isinstance(impl, str) or impl == "auto":
        return choose(problem, _allowed(impl))
    kernel = get_kernel(impl)
    if problem.traced and not kernel.jittable:
        raise ValueError(f"impl={impl!r} runs on concrete arrays only; use a jittable impl inside jit")
    why_not = kernel.supports(problem)
    if why_not:
        raise ValueError(f"impl={impl!r} cannot run this call: {why_not}")
    return kernel, f"{kernel.name}: forced (impl={impl!r})"


def conv2d(x: Any, w: Any, lut: TableLike, *, stride: Any = 1, padding: PaddingArg = 0, dilation: Any = 1,
           groups: int = 1, pad_code: Any = 0, signed: Optional[bool] = None, impl: ImplArg = "auto") -> jax.Array:
    """LUT convolution of integer codes: int32 accumulators ``sum lut[w_byte, x_byte]``.

    x: (N, H, W, C) integer codes; w: (KH, KW, C // groups, O) integer codes; lut: a `Multiplier` or a
    (256, 256) int32 table indexed ``[w_byte, x_byte]``. Padded positions hold ``pad_code`` and pass
    through the table like any other operand (``pad_code`` may be traced inside jit).
    ``impl``: "auto", one of `implementations()`, or a list of them that "auto" chooses among (e.g.
    ``["wstat", "dwrows", "direct"]``: the callback kernels only, which compile fastest).
    """
    kernel, problem, table, pads = _prepare(x, w, lut, stride, padding, dilation, groups, pad_code,
                                            signed, impl)
    if kernel.pads_inside:
        return kernel.fn(x, w, table, problem.spec, pads, pad_code)
    pad_width = ((0, 0), pads[0], pads[1], (0, 0))
    if kernel.jittable:
        xp = jnp.pad(jnp.asarray(x, jnp.int32), pad_width, constant_values=jnp.asarray(pad_code, jnp.int32))
        return kernel.fn(xp, jnp.asarray(w, jnp.int32), table, problem.spec)
    xp = np.pad(np.asarray(x, np.int32), pad_width, constant_values=int(pad_code))
    return jnp.asarray(kernel.fn(xp, np.asarray(w, np.int32), np.asarray(table), problem.spec))


def dense(x: Any, w: Any, lut: TableLike, *, signed: Optional[bool] = None, impl: ImplArg = "auto") -> jax.Array:
    """LUT matrix product of integer codes: x (N, I), w (I, O) -> int32 (N, O)."""
    if len(np.shape(x)) != 2 or len(np.shape(w)) != 2:
        raise ValueError(f"dense expects x (N, I) and w (I, O), got {np.shape(x)} and {np.shape(w)}")
    if np.shape(x)[1] != np.shape(w)[0]:
        raise ValueError(f"x has {np.shape(x)[1]} features but w expects {np.shape(w)[0]}")
    out = conv2d(x[:, None, None, :], w[None, None], lut, signed=signed, impl=impl)
    return out[:, 0, 0, :]


def explain(x_shape: tuple[int, ...], w_shape: tuple[int, ...], lut: TableLike, *, stride: Any = 1,
            padding: PaddingArg = 0, dilation: Any = 1, groups: int = 1, traced: bool = False,
            impl: ImplArg = "auto") -> str:
    """Which kernel ``impl`` ("auto", "auto" among a list of kernels, or one forced kernel) would use for
    such a call, and why; raises as `conv2d` would when a forced kernel cannot run it."""
    table = lut.table if isinstance(lut, Multiplier) else validate_table(np.asarray(lut))
    n, h, wd, c = x_shape
    kh, kw, cg, o = w_shape
    stride_p, dilation_p = as_pair(stride, "stride"), as_pair(dilation, "dilation")
    pads = normalize_padding(padding, (h, wd), (kh, kw), stride_p, dilation_p)
    problem = Problem((n, h + sum(pads[0]), wd + sum(pads[1]), c), tuple(w_shape),
                      ConvSpec(stride_p, dilation_p, groups), table, traced)
    return _select(problem, impl)[1]
