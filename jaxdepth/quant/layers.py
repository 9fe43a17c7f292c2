"""Quantised convolution and dense layers through a multiplier table: the reference layer semantics.

    signed table:   acc = sum lut[w & 0xFF, x & 0xFF]                      (int32)
                    y   = s_x * s_w[o] * acc + bias[o]
    unsigned table: acc = sum lut[w, x] - z_x * sum w - z_w[o] * sum x + K * z_x * z_w[o]
                    y   = s_x * s_w[o] * acc + bias[o]

The table replaces only the code product; the zero-point corrections are exact integer arithmetic
(int32, wrapping: the final value fits, so intermediate wrap-around cancels). K is the reduction length
(KH * KW * C / groups). Padded positions hold the activation code of real 0 (0 signed, z_x unsigned)
and go through the table like every other operand, as on a zero-padded accelerator buffer.

With ``straight_through=True`` the forward value is the table result and the gradient is that of the
exact float layer (straight-through estimator), for approximation-aware fine-tuning.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from .. import lutconv
from ..lutconv.spec import as_pair, normalize_padding
from ..multipliers import Multiplier
from .params import QParams, quantize, weight_qparams


def _window_sums(x_codes: jax.Array, kernel_hw: tuple[int, int], groups: int, pads, stride, dilation) -> jax.Array:
    """sum of x codes over each output's receptive field, per group: (N, Ho, Wo, groups), int32."""
    n, h, w, c = x_codes.shape
    per_group = x_codes.reshape(n, h, w, groups, c // groups).sum(axis=-1, dtype=jnp.int32)
    return jax.lax.reduce_window(per_group, jnp.int32(0), jax.lax.add, (1, *kernel_hw, 1), (1, *stride, 1),
                                 ((0, 0), *pads, (0, 0)), window_dilation=(1, *dilation, 1))


def lut_conv2d(x: Any, w: Any, bias: Optional[Any], multiplier: Multiplier, x_qp: QParams, *,
               stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
               w_qp: Optional[QParams] = None, per_channel: bool = True, impl: str = "auto",
               straight_through: bool = False) -> jax.Array:
    """A float NHWC convolution (HWIO weights) computed in integer codes through ``multiplier``."""
    if x_qp.signed != multiplier.signed:
        raise ValueError(f"activation qparams are {'signed' if x_qp.signed else 'unsigned'} but multiplier "
                         f"{multiplier.name} is {'signed' if multiplier.signed else 'unsigned'}")
    x = jnp.asarray(x, jnp.float32)
    w = jnp.asarray(w, jnp.float32)
    if w_qp is None:
        w_qp = weight_qparams(w, multiplier.signed, per_channel)
    xs, ws = jax.lax.stop_gradient(x), jax.lax.stop_gradient(w)
    x_codes, w_codes = quantize(xs, x_qp), quantize(ws, w_qp)
    stride_p, dilation_p = as_pair(stride, "stride"), as_pair(dilation, "dilation")
    kernel_hw = tuple(w.shape[:2])
    pads = normalize_padding(padding, tuple(x.shape[1:3]), kernel_hw, stride_p, dilation_p)
    z_x = jnp.asarray(x_qp.zero_point, jnp.int32)
    acc = lutconv.conv2d(x_codes, w_codes, multiplier, stride=stride_p, padding=pads, dilation=dilation_p,
                         groups=groups, pad_code=z_x, impl=impl)
    if not multiplier.signed:
        n_out = w.shape[-1]
        reduction = kernel_hw[0] * kernel_hw[1] * w.shape[2]
        z_w = jnp.broadcast_to(jnp.asarray(w_qp.zero_point, jnp.int32), (n_out,))
        sum_w = w_codes.reshape(-1, n_out).sum(axis=0, dtype=jnp.int32)
        x_padded = jnp.pad(x_codes, ((0, 0), *pads, (0, 0)), constant_values=z_x)
        sum_x = _window_sums(x_padded, kernel_hw, groups, ((0, 0), (0, 0)), stride_p, dilation_p)
        sum_x = jnp.repeat(sum_x, n_out // groups, axis=-1)
        acc = acc - z_x * sum_w - z_w * sum_x + reduction * z_x * z_w
    y = acc.astype(jnp.float32) * (jnp.asarray(x_qp.scale, jnp.float32) * jnp.asarray(w_qp.scale, jnp.float32))
    if bias is not None:
        y = y + jnp.asarray(bias, jnp.float32)
    if not straight_through:
        return y
    exact = jax.lax.conv_general_dilated(x, w, stride_p, pads, rhs_dilation=dilation_p,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         feature_group_count=groups)
    if bias is not None:
        exact = exact + bias
    return exact + jax.lax.stop_gradient(y - exact)


def lut_dense(x: Any, w: Any, bias: Optional[Any], multiplier: Multiplier, x_qp: QParams, *,
              w_qp: Optional[QParams] = None, per_channel: bool = True, impl: str = "auto",
              straight_through: bool = False) -> jax.Array:
    """A float dense layer (N, I) @ (I, O) computed in integer codes through ``multiplier``."""
    x = jnp.asarray(x)
    if x.ndim != 2 or jnp.ndim(w) != 2:
        raise ValueError(f"lut_dense expects x (N, I) and w (I, O), got {x.shape} and {jnp.shape(w)}")
    y = lut_conv2d(x[:, None, None, :], jnp.asarray(w)[None, None], bias, multiplier, x_qp, w_qp=w_qp,
                   per_channel=per_channel, impl=impl, straight_through=straight_through)
    return y[:, 0, 0, :]
