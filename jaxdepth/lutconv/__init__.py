"""Bit-exact LUT convolution: every product ``w * x`` replaced by ``lut[w_byte, x_byte]``.

    >>> from jaxdepth import lutconv, multipliers
    >>> acc = lutconv.conv2d(x_codes, w_codes, multipliers.get("mul8s_1L2J"), padding=1)

Implementations (``impl=``) are listed by `implementations()`; ``"auto"`` picks the fastest one that
supports the call, and `explain` says which and why.
"""
from . import gather_kernel, numpy_kernels
from .api import conv2d, dense, explain
from .registry import Kernel, Problem, choose, implementations, register_kernel
from .spec import ConvSpec

register_kernel(Kernel("loop", numpy_kernels.loop_conv,
                       "v1: plain Python loop per output value (readable definition, tiny shapes only)",
                       jittable=False, priority=0))
register_kernel(Kernel("vectorized", numpy_kernels.vectorized_conv,
                       "v2: NumPy, one vectorised lookup per output channel", jittable=False, priority=1))
register_kernel(Kernel("gather", gather_kernel.gather_conv,
                       "pure XLA: im2col + flat-table gather + int32 sum, lax.map over output channels",
                       jittable=True, priority=10))

__all__ = ["ConvSpec", "Kernel", "Problem", "choose", "conv2d", "dense", "explain", "implementations",
           "register_kernel"]
