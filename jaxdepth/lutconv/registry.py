"""Kernel registry and automatic selection.

A kernel computes the normalised problem of `spec` (VALID convolution of int32 codes, padding already
applied, unless the kernel pads for itself: ``pads_inside``) and returns int32 accumulators. Kernels
register with a priority, a ``supports`` check and an optional ``estimate`` (predicted seconds from the
shape, a small cost model calibrated on this CPU);
``impl="auto"`` picks, among the kernels that support the call, the one with the lowest estimate (ties
and kernels without an estimate: highest priority), and `explain` says which and why, with the
estimates. A GPU kernel (e.g. Pallas) would register here the same way.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Collection, Optional

import numpy as np

from .spec import ConvSpec


@dataclasses.dataclass(frozen=True)
class Problem:
    """What a kernel is asked to do: shapes, spec, the table (None when traced) and tracing state."""

    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    spec: ConvSpec
    table: Optional[np.ndarray]
    traced: bool

    @property
    def macs(self) -> int:
        n, h, w, _ = self.x_shape
        kh, kw, cg, o = self.w_shape
        ho, wo = self.spec.output_hw((h, w), (kh, kw))
        return n * ho * wo * o * kh * kw * cg


KernelFn = Callable[[Any, Any, Any, ConvSpec], Any]


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A LUT convolution implementation.

    ``supports(problem)`` returns None when the kernel can run the problem, else the reason it cannot.
    ``jittable`` kernels accept traced inputs (inside `jax.jit`). ``estimate(problem)`` predicts the
    seconds the kernel needs (None: unknown); ``impl="auto"`` takes the lowest estimate, then ``priority``.
    A ``pads_inside`` kernel is called as ``fn(x, w, table, spec, pads, pad_code)`` with the caller's
    unpadded codes (any integer dtype) and pads them itself (no padded copy of the input).
    """

    name: str
    fn: KernelFn
    description: str
    jittable: bool
    priority: int
    supports: Callable[[Problem], Optional[str]] = lambda p: None
    estimate: Callable[[Problem], Optional[float]] = lambda p: None
    pads_inside: bool = False


_KERNELS: dict[str, Kernel] = {}


def register_kernel(kernel: Kernel) -> None:
    """Add (or replace) a kernel under ``kernel.name``."""
    _KERNELS[kernel.name] = kernel


def implementations() -> list[str]:
    """Names accepted by ``impl=``, fastest-preferred first (``auto`` picks among these)."""
    return [k.name for k in sorted(_KERNELS.values(), key=lambda k: -k.priority)]


def get_kernel(name: str) -> Kernel:
    if name not in _KERNELS:
        raise ValueError(f"unknown LUT convolution impl {name!r}; available: auto, "
                         f"{', '.join(implementations())}")
    return _KERNELS[name]


def choose(problem: Problem, allowed: Optional[Collection[str]] = None) -> tuple[Kernel, str]:
    """The kernel ``impl="auto"`` uses for ``problem`` and a one-line reason; ``allowed``: choose among
    these kernel names only (``impl=[...]``)."""
    skipped, candidates = [], []
    for kernel in sorted(_KERNELS.values(), key=lambda k: -k.priority):
        if allowed is not None and kernel.name not in allowed:
            continue
        if allowed is None and kernel.name in ("loop", "vectorized"):
            continue  # reference implementations are never chosen automatically
        if problem.traced and not kernel.jittable:
            skipped.append(f"{kernel.name}: not usable on traced inputs")
            continue
        why_not = kernel.supports(problem)
        if why_not is not None:
            skipped.append(f"{kernel.name}: {why_not}")
            continue
        est = kernel.estimate(problem)
        candidates.append((float("inf") if est is None else est, -kernel.priority, kernel))
    if not candidates:
        among = "" if allowed is None else f" among {sorted(allowed)}"
        error = RuntimeError if allowed is None else ValueError
        raise error(f"no LUT convolution kernel{among} supports this call: " + "; ".join(skipped))
    candidates.sort(key=lambda c: c[:2])
    kernel = candidates[0][2]
    reason = f"{kernel.name}: {kernel.description}"
    estimates = [f"{k.name} {e * 1e3:.3g} ms" for e, _, k in candidates if e != float("inf")]
    if estimates:
        reason += " [estimated: " + ", ".join(estimates) + "]"
    if skipped:
        reason += " (skipped " + "; ".join(skipped) + ")"
    return kernel, reason
