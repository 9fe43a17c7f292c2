"""Bit-exact LUT convolution: every product ``w * x`` replaced by ``lut[w_byte, x_byte]``.

    >>> from jaxdepth import lutconv, multipliers
    >>> acc = lutconv.conv2d(x_codes, w_codes, multipliers.get("mul8s_1L2J"), padding=1)

Implementations (``impl=``) are listed by `implementations()`; ``"auto"`` picks the fastest one that
supports the call (a cost model per kernel), and `explain` says which and why.
"""
from . import (direct_kernel, dwrows_kernel, ffi_bridge, gather_kernel, lowrank, numpy_kernels, pallas_kernel,
               wstat_kernel, xla_kernels)
from .api import check_impl, conv2d, dense, explain, window_sums
from .registry import Choice, Kernel, Problem, choose, implementations, register_kernel
from .spec import ConvSpec

register_kernel(Kernel("loop", numpy_kernels.loop_conv,
                       "v1: plain Python loop per output value (readable definition, tiny shapes only)",
                       jittable=False, priority=0, reference=True))
register_kernel(Kernel("vectorized", numpy_kernels.vectorized_conv,
                       "v2: NumPy, one vectorised lookup per output channel", jittable=False, priority=1,
                       reference=True))
register_kernel(Kernel("xla_loop", xla_kernels.xla_loop_conv,
                       "v1 on XLA: lax.fori_loop over output values, one window lookup and sum per iteration "
                       "(reference, slow by design)", jittable=True, priority=2, reference=True))
register_kernel(Kernel("xla_vmap", xla_kernels.xla_vmap_conv,
                       "v2 on XLA: jax.vmap'd per-output-channel lookup over a chunk of channels, lax.map over "
                       "the chunks (bounded memory)", jittable=True, priority=5, estimate=xla_kernels.estimate_vmap))
register_kernel(Kernel("gather", gather_kernel.gather_conv,
                       "pure XLA: im2col + flat-table gather + int32 sum, lax.map over output channels",
                       jittable=True, priority=10, estimate=gather_kernel.estimate))
register_kernel(Kernel("pallas", pallas_kernel.pallas_conv,
                       "Pallas, for GPU/TPU: the whole table in on-chip memory, one block of output channels "
                       "(and positions) per program, a lookup per reduction step (interpreted on CPU; speed "
                       "unmeasured)", jittable=True, priority=3, platforms=("gpu", "tpu")))
register_kernel(Kernel("direct", direct_kernel.direct_conv,
                       "numba, both cores: per input byte the table column lut[:, x] (L1), every output "
                       "channel adds column[w_byte]; depthwise: vectorised over channels",
                       jittable=True, priority=20, estimate=direct_kernel.estimate, platforms=("cpu",)))
register_kernel(Kernel("wstat", wstat_kernel.wstat_conv,
                       "numba, both cores, weight-stationary: product rows T[c, v, pos] = lut[v, x] built "
                       "once per input element, output channels add contiguous rows",
                       jittable=True, priority=30, supports=wstat_kernel.supports, estimate=wstat_kernel.estimate,
                       platforms=("cpu",)))
register_kernel(Kernel("dwrows", dwrows_kernel.dwrows_conv,
                       "numba, both cores, depthwise only: per band of output rows, channel and tap, the "
                       "weight byte's table row looked up along whole input rows (register permutes), any stride",
                       jittable=True, priority=25, supports=dwrows_kernel.supports,
                       estimate=dwrows_kernel.estimate, pads_inside=True, platforms=("cpu",)))
register_kernel(Kernel("lowrank", lowrank.lowrank_conv,
                       "tables that are exactly a short sum of integer outer products: XLA's int8 x int8 -> "
                       "int32 convolution (VNNI) per int8 term, exact integer arithmetic",
                       jittable=True, priority=40,
                       supports=lambda p: lowrank.supports(p.table), estimate=lowrank.estimate))


def ffi_target_names() -> list[str]:
    """Every XLA FFI custom-call target the compiled kernels may use (a stored program refers to them so):
    per kernel, one per table operand dtype and one for traced tables."""
    kernels = (direct_kernel.FFI, wstat_kernel.FFI, dwrows_kernel.FFI)
    return sorted(name for kernel in kernels for name in kernel.kinds())


def register_ffi_targets(names) -> None:
    """Register the FFI handlers ``names`` (of `ffi_target_names`; others ignored) with XLA, loading them
    from numba's disk cache: needed before XLA compiles or loads a program that calls them but was not
    traced in this process (`jaxdepth.exec_cache`)."""
    ffi_bridge.register_targets(names)


def warmup() -> None:
    """Compile (or load from numba's on-disk cache) every compiled kernel and its XLA FFI handler on tiny
    inputs, so the first real call does not pay the compilation (seconds on a cold cache)."""
    for module in (direct_kernel, wstat_kernel, dwrows_kernel):
        module.warmup()


__all__ = ["Choice", "ConvSpec", "Kernel", "Problem", "check_impl", "choose", "conv2d", "dense", "explain",
           "ffi_target_names", "implementations", "register_ffi_targets", "register_kernel", "warmup", "window_sums"]
