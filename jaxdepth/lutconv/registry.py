"""Kernel registry and automatic selection.

A kernel computes the normalised problem of `spec` (VALID convolution of int32 codes, padding already
applied, unless the kernel pads for itself: ``pads_inside``) and returns int32 accumulators. Kernels
register with a priority, a ``supports`` check and an optional ``estimate`` (predicted seconds from the
shape, a small cost model calibrated on this CPU); reference kernels (``reference=True``) run only when
named. ``impl="auto"`` picks, among the other kernels that support the call, the one with the lowest
estimate (ties and kernels without an estimate: highest priority). The choice is data (`Choice`: the
kernel, every estimate, the reasons others were skipped) that `explain`, `models.plan_table` and the
benchmark read. A GPU kernel (e.g. Pallas) would register here the same way.
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
    ``reference`` kernels (the readable definitions) are never chosen by ``impl="auto"``, only by name.
    ``platforms``: the JAX backends the kernel runs on (None: wherever XLA runs); ``impl="auto"`` skips a
    kernel that does not run on the default backend (the numba kernels are CPU code).
    """

    name: str
    fn: KernelFn
    description: str
    jittable: bool
    priority: int
    supports: Callable[[Problem], Optional[str]] = lambda p: None
    estimate: Callable[[Problem], Optional[float]] = lambda p: None
    pads_inside: bool = False
    reference: bool = False
    platforms: Optional[tuple[str, ...]] = None


@dataclasses.dataclass(frozen=True)
class Choice:
    """Which kernel runs a call and why: ``kernel`` (None: an empty call, no kernel runs), ``how``
    ("auto", "auto among [...]", "forced" or "empty"), ``estimates`` (seconds per candidate kernel with a
    cost model, ascending), ``skipped`` (kernel -> why it cannot run this call) and ``description`` (the
    kernel's, or why no kernel runs). ``str(choice)`` is the one-line explanation."""

    kernel: Optional[str]
    how: str
    estimates: tuple[tuple[str, float], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    description: str = ""

    @property
    def estimate(self) -> Optional[float]:
        """The chosen kernel's estimated seconds (None when it has no cost model)."""
        return dict(self.estimates).get(self.kernel) if self.kernel else None

    def format(self) -> str:
        if self.kernel is None:
            return f"none: {self.description}"
        text = f"{self.kernel}: " + (f"forced ({self.description})" if self.how == "forced" else self.description)
        if self.estimates:
            text += " [estimated: " + ", ".join(f"{k} {e * 1e3:.3g} ms" for k, e in self.estimates) + "]"
        if self.skipped:
            text += " (skipped " + "; ".join(f"{k}: {why}" for k, why in self.skipped) + ")"
        return text

    __str__ = format


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


def choose(problem: Problem, allowed: Optional[Collection[str]] = None,
           platform: Optional[str] = None) -> tuple[Kernel, Choice]:
    """The kernel ``impl="auto"`` uses for ``problem`` and the `Choice` (estimates, skipped kernels);
    ``allowed``: choose among these kernel names only (``impl=[...]``, references included then);
    ``platform``: the JAX backend the call runs on (default: ``jax.default_backend()``)."""
    if problem.macs <= 0:
        raise ValueError(f"an empty problem (x {problem.x_shape}, w {problem.w_shape}) needs no kernel: "
                         "lutconv.conv2d / lutconv.explain return its zero result without choosing one")
    if platform is None:
        import jax
        platform = jax.default_backend()
    skipped, candidates = [], []
    for kernel in sorted(_KERNELS.values(), key=lambda k: -k.priority):
        if allowed is not None and kernel.name not in allowed:
            continue
        if allowed is None and kernel.reference:
            continue  # reference implementations are never chosen automatically
        if problem.traced and not kernel.jittable:
            skipped.append((kernel.name, "not usable on traced inputs"))
            continue
        if kernel.platforms is not None and platform not in kernel.platforms:
            skipped.append((kernel.name, f"runs on {'/'.join(kernel.platforms)} only, not {platform}"))
            continue
        why_not = kernel.supports(problem)
        if why_not is not None:
            skipped.append((kernel.name, why_not))
            continue
        est = kernel.estimate(problem)
        candidates.append((float("inf") if est is None else est, -kernel.priority, kernel))
    if not candidates:
        among = "" if allowed is None else f" among {sorted(allowed)}"
        error = RuntimeError if allowed is None else ValueError
        raise error(f"no LUT convolution kernel{among} supports this call: "
                    + "; ".join(f"{k}: {why}" for k, why in skipped))
    candidates.sort(key=lambda c: c[:2])
    kernel = candidates[0][2]
    how = "auto" if allowed is None else f"auto among {sorted(allowed)}"
    estimates = tuple((k.name, e) for e, _, k in candidates if e != float("inf"))
    return kernel, Choice(kernel.name, how, estimates, tuple(skipped), kernel.description)
