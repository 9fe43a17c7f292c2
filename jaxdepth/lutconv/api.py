"""Public entry points: `conv2d`, `dense`, `explain`, and `window_sums` (the per-group window sums of codes)."""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from ..multipliers import Multiplier, validate_table
from .registry import Choice, Kernel, Problem, choose, get_kernel, implementations
from .spec import (ConvSpec, Pair, PaddingArg, as_pair, check_code_range, check_groups, check_integer_codes,
                   check_pad_code, is_traced, normalize_padding)

TableLike = Union[Multiplier, np.ndarray, jax.Array]
ImplArg = Union[str, Sequence[str]]  # "auto", one kernel name, or the kernels "auto" may choose among


def window_sums(values: jax.Array, kernel_hw: tuple[int, int], groups: int, stride: Any = 1,
                dilation: Any = 1, pads: Any = ((0, 0), (0, 0)), pad_value: Any = 0) -> jax.Array:
    """Sum of ``values`` (N, H, W, C) int32 over each output's receptive field, per channel group:
    (N, Ho, Wo, groups) int32. ``pads`` (((top, bottom), (left, right))) add positions holding ``pad_value``
    in every channel. The zero-point corrections of unsigned layers and `lowrank`'s ``v[x]`` term use it."""
    n, h, w, c = values.shape
    groups = check_groups(groups)
    if c % groups:
        raise ValueError(f"window_sums: groups must divide the {c} channels of values {tuple(values.shape)}, "
                         f"got {groups}")
    per_group = values.reshape(n, h, w, groups, c // groups).sum(axis=-1, dtype=jnp.int32)
    per_group = jnp.pad(per_group, ((0, 0), *pads, (0, 0)),
                        constant_values=jnp.asarray(pad_value, jnp.int32) * (c // groups))
    return jax.lax.reduce_window(per_group, jnp.int32(0), jax.lax.add, (1, *kernel_hw, 1),
                                 (1, *as_pair(stride, "stride"), 1), "VALID",
                                 window_dilation=(1, *as_pair(dilation, "dilation"), 1))


def check_table(lut: Any, what: str = "lut") -> Any:
    """A product table given as an array -> the table kernels use: a concrete one validated as
    `multipliers.validate_table` does (int32 (256, 256), integer entries within +-2^17), a traced one (a
    runtime operand inside jit) checked statically (shape, integer dtype)."""
    if isinstance(lut, str):
        raise TypeError(f"{what} must be a Multiplier or a (256, 256) table, got the string {lut!r}: pass "
                        f"multipliers.get({lut!r})")
    if is_traced(lut):
        if tuple(lut.shape) != (256, 256):
            raise ValueError(f"{what}: a product table must have shape (256, 256), got {tuple(lut.shape)}")
        if not jnp.issubdtype(lut.dtype, jnp.integer):
            raise ValueError(f"{what}: a traced product table must have an integer dtype (its entries cannot "
                             f"be checked inside jit), got {lut.dtype}; cast it with .astype(jnp.int32)")
        return lut
    return validate_table(np.asarray(lut), what)


def _resolve_table(lut: TableLike, signed: Optional[bool]) -> tuple[Any, Optional[np.ndarray], Optional[bool]]:
    """(table usable by kernels, concrete numpy table or None, signedness or None)."""
    if isinstance(lut, Multiplier):
        if signed is not None and signed != lut.signed:
            raise ValueError(f"signed={signed} contradicts multiplier {lut.name} (signed={lut.signed})")
        return lut.table, lut.table, lut.signed
    table = check_table(lut)
    return table, (None if is_traced(table) else table), signed


def check_impl(impl: Any, what: str = "impl") -> Optional[frozenset[str]]:
    """Checks a kernel choice: "auto", one kernel name, or a non-empty list of kernel names for "auto" to
    choose among. Returns None for a string (auto or forced) and the names of a list; raises a ValueError
    naming ``what`` (e.g. "plan rule 'impl'") otherwise, before any model is traced."""
    known = implementations()
    forms = "'auto', one kernel name, or a non-empty list of kernel names (no 'auto') for 'auto' to choose among"
    if isinstance(impl, str):
        names = [impl]
    else:
        try:
            names = list(impl)
        except TypeError:
            names = None
        if not names or not all(isinstance(name, str) and name != "auto" for name in names):
            raise ValueError(f"{what} must be {forms}, got {impl!r}; kernels: {', '.join(known)}")
    bad = [name for name in names if name != "auto" and name not in known]
    if bad:
        raise ValueError(f"{what} {bad[0]!r} names no LUT kernel; use {forms}; kernels: {', '.join(known)}")
    return None if isinstance(impl, str) else frozenset(names)


def _problem(x_shape: Any, w_shape: Any, table: Optional[np.ndarray], stride: Any, padding: PaddingArg,
             dilation: Any, groups: Any, traced: bool) -> tuple[Problem, tuple[Pair, Pair]]:
    """The normalised problem (padded input shape, spec) and the pads; raises on inconsistent shapes."""
    shapes = []
    for shape, what, layout in ((x_shape, "x", "NHWC"), (w_shape, "w", "HWIO")):
        try:
            shape = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise ValueError(f"{what} shape must be a sequence of ints, got {shape!r}") from None
        if len(shape) != 4:
            raise ValueError(f"{what} must be {layout} (rank 4), got shape {shape}")
        if min(shape) < 0:
            raise ValueError(f"{what} shape {shape} has a negative dimension")
        shapes.append(shape)
    (n, h, wd, c), (kh, kw, cg, o) = shapes
    if kh < 1 or kw < 1:
        raise ValueError(f"w (HWIO) {shapes[1]} has an empty kernel window {kh}x{kw}")
    groups = check_groups(groups)
    if c % groups or o % groups:
        raise ValueError(f"in_channels {c} and out_channels {o} must both be divisible by groups {groups}")
    if cg * groups != c:
        raise ValueError(f"w has {cg} input channels per group but x has {c} channels and groups={groups} "
                         f"(expected w.shape[2] == {c // groups})")
    stride_p, dilation_p = as_pair(stride, "stride"), as_pair(dilation, "dilation")
    pads = normalize_padding(padding, (h, wd), (kh, kw), stride_p, dilation_p)
    padded = (n, h + sum(pads[0]), wd + sum(pads[1]), c)
    return Problem(padded, shapes[1], ConvSpec(stride_p, dilation_p, int(groups)), table, traced), pads


def _out_shape(problem: Problem) -> tuple[int, int, int, int]:
    ho, wo = problem.spec.output_hw(problem.x_shape[1:3], problem.w_shape[:2])
    return problem.x_shape[0], ho, wo, problem.w_shape[3]


def _is_empty(problem: Problem) -> bool:
    """No output value, or an empty reduction (C = 0): the result is known without running a kernel."""
    return 0 in _out_shape(problem) or problem.x_shape[3] == 0


def _prepare(x: Any, w: Any, lut: TableLike, stride: Any, padding: PaddingArg, dilation: Any,
             groups: int, pad_code: int, signed: Optional[bool], impl: ImplArg):
    check_integer_codes(x, "x")
    check_integer_codes(w, "w")
    table, concrete, signed = _resolve_table(lut, signed)
    if signed is None:  # infer from the codes when the table is a bare array
        lows = [int(np.min(a)) for a in (x, w) if not is_traced(a) and np.size(a)]
        signed = bool(lows) and min(lows) < 0
    traced = is_traced(x, w, table, pad_code)
    problem, pads = _problem(np.shape(x), np.shape(w), concrete, stride, padding, dilation, groups, traced)
    check_code_range(x, signed, "x")
    check_code_range(w, signed, "w")
    check_pad_code(pad_code, signed)
    kernel, _ = _select(problem, impl)
    return kernel, problem, table, pads


def _empty_reason(problem: Problem) -> str:
    shape = _out_shape(problem)
    if 0 in shape:
        return f"empty output {shape}, no kernel runs"
    return f"no input channel (C = 0), every sum is empty: zeros of shape {shape}, no kernel runs"


def _select(problem: Problem, impl: ImplArg) -> tuple[Optional[Kernel], Choice]:
    """The kernel ``impl`` runs ``problem`` with, and the `Choice`; a forced kernel that cannot run it
    raises. An empty problem needs no kernel (None): its result is the zero array of the output shape."""
    allowed = check_impl(impl)
    if not isinstance(impl, str) or impl == "auto":
        if _is_empty(problem):
            return None, Choice(None, "empty", description=_empty_reason(problem))
        return choose(problem, allowed)
    kernel = get_kernel(impl)
    if _is_empty(problem):
        return None, Choice(None, "empty", description=_empty_reason(problem))
    if problem.traced and not kernel.jittable:
        raise ValueError(f"impl={impl!r} runs on concrete arrays only; use a jittable impl inside jit")
    why_not = kernel.supports(problem)
    if why_not:
        raise ValueError(f"impl={impl!r} cannot run this call: {why_not}")
    est = kernel.estimate(problem)
    return kernel, Choice(kernel.name, "forced", () if est is None else ((kernel.name, est),),
                          description=f"impl={impl!r}")


def conv2d(x: Any, w: Any, lut: TableLike, *, stride: Any = 1, padding: PaddingArg = 0, dilation: Any = 1,
           groups: int = 1, pad_code: Any = 0, signed: Optional[bool] = None, impl: ImplArg = "auto") -> jax.Array:
    """LUT convolution of integer codes: int32 accumulators ``sum lut[w_byte, x_byte]``.

    x: (N, H, W, C) integer codes; w: (KH, KW, C // groups, O) integer codes; lut: a `Multiplier` or a
    (256, 256) int32 table indexed ``[w_byte, x_byte]``. Padded positions hold ``pad_code`` and pass
    through the table like any other operand (``pad_code`` may be traced inside jit). Empty calls (N, C or
    O = 0, or an input smaller than the dilated kernel: no output position, as in XLA) return the empty or
    all-zero result without running a kernel.
    ``impl``: "auto", one of `implementations()`, or a list of them that "auto" chooses among (e.g.
    ``["wstat", "dwrows", "direct"]``: the callback kernels only, which compile fastest).
    """
    kernel, problem, table, pads = _prepare(x, w, lut, stride, padding, dilation, groups, pad_code,
                                            signed, impl)
    if kernel is None:
        return jnp.zeros(_out_shape(problem), jnp.int32)
    if kernel.pads_inside:
        return kernel.fn(x, w, table, problem.spec, pads, pad_code)
    pad_width = ((0, 0), pads[0], pads[1], (0, 0))
    if kernel.jittable:
        xp = jnp.pad(jnp.asarray(x, jnp.int32), pad_width, constant_values=jnp.asarray(pad_code, jnp.int32))
        return kernel.fn(xp, jnp.asarray(w, jnp.int32), table, problem.spec)
    xp = np.pad(np.asarray(x, np.int32), pad_width, constant_values=int(pad_code))
    return jnp.asarray(kernel.fn(xp, np.asarray(w, np.int32), np.asarray(table), problem.spec))


def dense(x: Any, w: Any, lut: TableLike, *, signed: Optional[bool] = None, impl: ImplArg = "auto") -> jax.Array:
    """LUT matrix product of integer codes: x (N, I), w (I, O) -> int32 (N, O) (arrays or nested lists)."""
    x, w = (v if hasattr(v, "shape") else np.asarray(v) for v in (x, w))
    if len(np.shape(x)) != 2 or len(np.shape(w)) != 2:
        raise ValueError(f"dense expects x (N, I) and w (I, O), got {np.shape(x)} and {np.shape(w)}")
    if np.shape(x)[1] != np.shape(w)[0]:
        raise ValueError(f"x has {np.shape(x)[1]} features but w expects {np.shape(w)[0]}")
    out = conv2d(x[:, None, None, :], w[None, None], lut, signed=signed, impl=impl)
    return out[:, 0, 0, :]


def explain(x_shape: tuple[int, ...], w_shape: tuple[int, ...], lut: TableLike, *, stride: Any = 1,
            padding: PaddingArg = 0, dilation: Any = 1, groups: int = 1, traced: bool = False,
            impl: ImplArg = "auto") -> Choice:
    """Which kernel ``impl`` ("auto", "auto" among a list of kernels, or one forced kernel) would use for
    such a call, and why, as data: a `Choice` (``.kernel``, ``.estimates``, ``.skipped``; ``str()`` or
    ``.format()`` gives the one-line explanation). Raises as `conv2d` would on inconsistent shapes or when
    a forced kernel cannot run it. An empty call (N, C or O = 0, or no output position) runs no kernel
    (``kernel`` None, text "none: ...")."""
    table = lut.table if isinstance(lut, Multiplier) else check_table(lut)
    if is_traced(table):
        table, traced = None, True
    problem, _ = _problem(x_shape, w_shape, table, stride, padding, dilation, groups, traced)
    return _select(problem, impl)[1]
