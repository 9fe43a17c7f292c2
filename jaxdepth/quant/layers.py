"""Quantised convolution and dense layers through a multiplier table: the reference layer semantics.

    signed table:   acc = sum lut[w & 0xFF, x & 0xFF]                      (int32)
                    y   = s_x * s_w[o] * acc + bias[o]
    unsigned table: acc = sum lut[w, x] - z_x * sum w - z_w[o] * sum x + K * z_x * z_w[o]
                    y   = s_x * s_w[o] * acc + bias[o]
    compensated:    acc - acc_offset[o] in place of acc (int32; `table_error_mean` measures the offset)

The table replaces only the code product; the zero-point corrections are exact integer arithmetic
(int32, wrapping: the final value fits, so intermediate wrap-around cancels). K is the reduction length
(KH * KW * C / groups). Padded positions hold the activation code of real 0 (0 signed, z_x unsigned)
and go through the table like every other operand, as on a zero-padded accelerator buffer.

With ``straight_through=True`` the forward value is the table result and the gradient is that of the
exact float layer (straight-through estimator), for approximation-aware fine-tuning; the per-tensor
activation scale gets the LSQ gradient (`_scale_cotangent`), so training can learn activation ranges.

Non-finite values. NaN has no code (and code 0 is not even real 0 for unsigned layers), so it is never
quantised silently: concrete NaN inputs, non-finite weights or bias, or a non-finite / non-positive
input scale raise ValueError with a count; inside jit (where values cannot be inspected) every output of
a sample whose input holds a NaN, and every output when a weight is non-finite, is NaN, as in the float
layer. +-infinity in the input is meaningful (it saturates to the end codes, as on the accelerator):
a RuntimeWarning with the count, and the saturated result.

Parameters are checked against the layer (`_prepare`): activation and output QParams per tensor, weight
QParams per tensor or per output channel, a bias per output channel (shapes: also under jit); concrete
scales finite and positive, zero points integer codes of the range (0 for signed activations: the signed
formula has no zero-point term); a concrete runtime table as `lutconv.conv2d` checks it.
"""
from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .. import lutconv
from ..lutconv.api import ImplArg, check_table
from ..lutconv.spec import as_pair, check_groups, normalize_padding
from ..multipliers import Multiplier
from ..multipliers import exact as exact_multiplier
from .params import QParams, check_finite, quantize, weight_qparams
from .requant import apply_activation, dequantize_output, requant_params, requantize


def _exact_conv(x, w, bias, cfg) -> jax.Array:
    """The float layer the table approximates (its gradient is the straight-through gradient)."""
    _, stride, pads, dilation, groups, _, _ = cfg
    y = jax.lax.conv_general_dilated(x, w, stride, pads, rhs_dilation=dilation,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    return y + bias


def _codes(x, w, x_qp: QParams, w_qp: Optional[QParams], cfg):
    """(x_codes, w_codes, w_qp): the layer's integer codes (weights per output channel unless ``w_qp``)."""
    multiplier, per_channel = cfg[0], cfg[5]
    if w_qp is None:
        w_qp = weight_qparams(w, multiplier.signed, per_channel)
    return quantize(x, x_qp), quantize(w, w_qp), w_qp


def _table_sum(x_codes, w_codes, lut, x_qp: QParams, cfg) -> jax.Array:
    """``sum lut[w, x]`` over each window (int32), padding with the code of real 0."""
    multiplier, stride, pads, dilation, groups, _, impl = cfg
    return lutconv.conv2d(x_codes, w_codes, lut, signed=multiplier.signed, stride=stride, padding=pads,
                          dilation=dilation, groups=groups, pad_code=jnp.asarray(x_qp.zero_point, jnp.int32),
                          impl=impl)


def _table_acc(x, w, x_qp: QParams, w_qp: Optional[QParams], table, cfg):
    """Integer codes and the int32 accumulators through the table (the reference semantics above); ``table``
    (None: the multiplier's own) is a runtime (256, 256) table, possibly traced, used with the multiplier's
    signedness. Returns (acc, x_codes, w_codes, w_qp)."""
    multiplier, stride, pads, dilation, groups, per_channel, impl = cfg
    x_codes, w_codes, w_qp = _codes(x, w, x_qp, w_qp, cfg)
    acc = _table_sum(x_codes, w_codes, multiplier if table is None else table, x_qp, cfg)
    if not multiplier.signed:
        kernel_hw = tuple(w.shape[:2])
        z_x = jnp.asarray(x_qp.zero_point, jnp.int32)
        n_out = w.shape[-1]
        reduction = kernel_hw[0] * kernel_hw[1] * w.shape[2]
        z_w = jnp.broadcast_to(jnp.asarray(w_qp.zero_point, jnp.int32), (n_out,))
        sum_w = w_codes.sum(axis=(0, 1, 2), dtype=jnp.int32)
        sum_x = lutconv.window_sums(x_codes, kernel_hw, groups, stride, dilation, pads=pads, pad_value=z_x)
        sum_x = jnp.repeat(sum_x, n_out // groups, axis=-1)
        acc = acc - z_x * sum_w - z_w * sum_x + reduction * z_x * z_w
    return acc, x_codes, w_codes, w_qp


def _table_conv(x, w, bias, x_qp: QParams, w_qp: Optional[QParams], table, acc_offset, cfg) -> jax.Array:
    """The table forward pass with the float rescale ``s_x * s_w[o] * (acc - acc_offset[o]) + bias``."""
    acc, _, _, w_qp = _table_acc(x, w, x_qp, w_qp, table, cfg)
    if acc_offset is not None:
        acc = acc - acc_offset
    scale = jnp.asarray(x_qp.scale, jnp.float32) * jnp.asarray(w_qp.scale, jnp.float32)
    y = acc.astype(jnp.float32) * scale + bias
    poisoned = jnp.isnan(x).any(axis=(1, 2, 3)) | ~jnp.isfinite(w).all()   # NaN has no code: propagate it
    return jnp.where(poisoned[:, None, None, None], jnp.nan, y)


def _check_multiplier(multiplier: Any) -> None:
    """``multiplier`` must be a `Multiplier` (it gives the signedness, and the table unless ``table=``)."""
    if isinstance(multiplier, Multiplier):
        return
    if isinstance(multiplier, str):
        raise TypeError(f"multiplier must be a jaxdepth.multipliers.Multiplier, got the name {multiplier!r}: pass "
                        f"multipliers.get({multiplier!r})")
    raise TypeError(f"multiplier must be a jaxdepth.multipliers.Multiplier (it gives the signedness), got "
                    f"{type(multiplier).__name__}: pass multipliers.get(name); a bare (256, 256) table goes in "
                    "table=, with a multiplier of its signedness (e.g. multipliers.get('exact_s8')) as multiplier")


def _check_qparams(qp: Any, what: str, multiplier: Multiplier, n_out: Optional[int]) -> None:
    """``qp`` against the layer: a `QParams` of the multiplier's signedness; per tensor (scalar scale and zero
    point; ``n_out`` None) or per tensor / per output channel (``n_out`` entries). Concrete values also: a
    finite positive scale, an integer zero point in the code range, 0 for signed (symmetric) activations.
    Shapes are static, so that part holds under jit too."""
    if not isinstance(qp, QParams):
        raise TypeError(f"{what} must be a jaxdepth.quant.QParams, got {type(qp).__name__}")
    if qp.signed != multiplier.signed:
        raise ValueError(f"{what} are {'signed' if qp.signed else 'unsigned'} but multiplier "
                         f"{multiplier.name} is {'signed' if multiplier.signed else 'unsigned'}")
    allowed = [()] if n_out is None else [(), (n_out,)]
    for field in ("scale", "zero_point"):
        shape = tuple(jnp.shape(getattr(qp, field)))
        if shape not in allowed:
            if n_out is None:
                raise ValueError(f"{what} must be per tensor (a scalar scale and zero point), got {field} of "
                                 f"shape {shape}; compute them over the whole tensor, e.g. "
                                 "quant.activation_qparams(x.min(), x.max(), signed) (per-channel parameters "
                                 "are for weights: w_qp)")
            raise ValueError(f"{what} {field} must be a scalar or one per output channel ({n_out},), got shape "
                             f"{shape}; e.g. quant.weight_qparams(w, signed)")
    if not isinstance(qp.scale, jax.core.Tracer):
        scale = np.asarray(qp.scale, np.float64)
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise ValueError(f"{what} scale {scale} must be finite and positive")
    if not isinstance(qp.zero_point, jax.core.Tracer):
        lo, hi = qp.code_range
        zero = np.asarray(qp.zero_point)
        if np.any((zero < lo) | (zero > hi)) or not np.all(zero == np.round(zero)):
            raise ValueError(f"{what} zero point {zero} must be an integer in the code range [{lo}, {hi}]")
        if what.startswith("activation") and qp.signed and np.any(zero != 0):
            raise ValueError(f"{what} zero point {zero} must be 0: signed tables use symmetric int8 activations "
                             "(the layer applies no zero-point correction for them); use an unsigned multiplier "
                             "for affine activations")


def _check_inputs(x, w, bias, x_qp: QParams) -> None:
    """The concrete-value checks of the module docstring (nothing to check for traced values)."""
    check_finite(w, "lut_conv2d weights")
    if bias is not None:
        check_finite(bias, "lut_conv2d bias")
    if isinstance(x, jax.core.Tracer):
        return
    a = np.asarray(x)
    nan = int(np.count_nonzero(np.isnan(a)))
    if nan:
        raise ValueError(f"lut_conv2d input holds {nan} NaN value(s) of {a.size}: NaN has no quantised code")
    inf = int(np.count_nonzero(np.isinf(a)))
    if inf:
        warnings.warn(f"lut_conv2d input holds {inf} infinite value(s) of {a.size}: they saturate to the "
                      f"end codes {x_qp.code_range}", RuntimeWarning, stacklevel=3)


def _int_table_conv(x, w, bias, x_qp: QParams, w_qp: Optional[QParams], y_qp: QParams, table, acc_offset,
                    activation: str, cfg) -> tuple[jax.Array, dict]:
    """The table forward pass with integer requantization (`jaxdepth.quant.requant`): (dequantised output
    codes, details = the integer tensors and parameters an accelerator would hold). An ``acc_offset`` is
    folded into the int32 bias (``bias_q - acc_offset``), where an accelerator would hold it."""
    acc, x_codes, w_codes, w_qp = _table_acc(x, w, x_qp, w_qp, table, cfg)
    rp = requant_params(x_qp.scale, w_qp.scale, bias, y_qp.scale, y_qp.zero_point,
                        signed=cfg[0].signed, activation=activation)
    if acc_offset is not None:
        rp = dataclasses.replace(rp, bias=rp.bias - acc_offset)      # int32, wrapping as the accumulator does
    codes = requantize(acc, rp)
    details = {"x_codes": x_codes, "w_codes": w_codes, "w_zero_point": w_qp.zero_point,
               "x_zero_point": x_qp.zero_point, "acc": acc, "codes": codes, "requant": rp}
    poisoned = jnp.isnan(x).any(axis=(1, 2, 3)) | ~jnp.isfinite(w).all()   # as _table_conv: NaN propagates
    return jnp.where(poisoned[:, None, None, None], jnp.nan, dequantize_output(codes, rp)), details


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _straight_through_conv(x, w, bias, x_qp, w_qp, table, acc_offset, cfg):
    """Forward: the table result, bit for bit. Backward: the exact float layer's gradient."""
    return _table_conv(x, w, bias, x_qp, w_qp, table, acc_offset, cfg)


def _ste_forward(x, w, bias, x_qp, w_qp, table, acc_offset, cfg):
    return _table_conv(x, w, bias, x_qp, w_qp, table, acc_offset, cfg), (x, w, bias, x_qp, w_qp, table, acc_offset)


def _zero_cotangent(leaf: Any) -> Any:
    leaf = jnp.asarray(leaf)
    if jnp.issubdtype(leaf.dtype, jnp.floating):
        return jnp.zeros_like(leaf)
    return np.zeros(leaf.shape, dtype=jax.dtypes.float0)


def _scale_cotangent(x, x_qp: QParams, dx):
    """LSQ gradient of a per-tensor activation scale: the layer sees ``fq(x) = s * (c - z)`` with
    ``c = clip(round(x / s) + z)``; with a straight-through round ``d fq / d s = (c - z) - x / s`` inside the
    code range and ``c - z`` (the clip bound) outside. Lets training learn activation ranges (PACT / LSQ)."""
    s = jnp.asarray(x_qp.scale, jnp.float32)   # per tensor (`_check_qparams`)
    lo, hi = x_qp.code_range
    z = jnp.asarray(x_qp.zero_point, jnp.float32)
    v = x / s + z
    c = jnp.clip(jnp.round(v), lo, hi)
    inside = (v >= lo) & (v <= hi)
    return jnp.sum(dx * ((c - z) - jnp.where(inside, x / s, 0.0)))


def _ste_backward(cfg, residuals, g):
    x, w, bias, x_qp, w_qp, table, acc_offset = residuals
    _, vjp = jax.vjp(lambda x, w, b: _exact_conv(x, w, b, cfg), x, w, bias)
    dx, dw, db = vjp(g)
    d_xqp = jax.tree_util.tree_map(_zero_cotangent, x_qp)
    d_xqp = QParams(_scale_cotangent(x, x_qp, dx), d_xqp.zero_point, x_qp.signed)
    return (dx, dw, db, d_xqp, *(jax.tree_util.tree_map(_zero_cotangent, t) for t in (w_qp, table, acc_offset)))


_straight_through_conv.defvjp(_ste_forward, _ste_backward)


def _prepare(x, w, bias, multiplier: Multiplier, qps: dict, w_qp: Optional[QParams], stride, padding, dilation,
             groups, per_channel, impl, table, acc_offset=None):
    """What both table convolutions check and normalise first: the multiplier, the qparams against it (``qps``:
    role -> per-tensor QParams, "activation" first; ``w_qp`` per tensor or channel), the bias length, finite
    inputs, float32 operands, a zero bias when none, the padding pairs, the static config tuple and an int32
    runtime table (a concrete one validated as `lutconv.conv2d` does), and ``acc_offset`` as int32 (O,) (None:
    no compensation)."""
    _check_multiplier(multiplier)
    x = jnp.asarray(x, jnp.float32)
    w = jnp.asarray(w, jnp.float32)
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"lut_conv2d expects x NHWC and w HWIO (rank 4), got shapes {x.shape} and {w.shape}")
    n_out = w.shape[-1]
    for what, qp in qps.items():
        _check_qparams(qp, f"{what} qparams", multiplier, None)
    if w_qp is not None:
        _check_qparams(w_qp, "w_qp (weight qparams)", multiplier, n_out)
    if bias is not None and jnp.shape(bias) not in ((), (n_out,)):
        raise ValueError(f"bias must have one value per output channel ({n_out},) (w.shape[-1]), got shape "
                         f"{jnp.shape(bias)}")
    _check_inputs(x, w, bias, qps["activation"])
    bias = jnp.zeros((n_out,), jnp.float32) if bias is None else jnp.broadcast_to(jnp.asarray(bias, jnp.float32),
                                                                                  (n_out,))
    stride_p, dilation_p = as_pair(stride, "stride"), as_pair(dilation, "dilation")
    pads = normalize_padding(padding, tuple(x.shape[1:3]), tuple(w.shape[:2]), stride_p, dilation_p)
    cfg = (multiplier, stride_p, tuple(pads), dilation_p, check_groups(groups), bool(per_channel), impl)
    table = None if table is None else jnp.asarray(check_table(table, "table"), jnp.int32)
    return x, w, bias, table, _check_acc_offset(acc_offset, n_out), cfg


def _check_acc_offset(acc_offset: Any, n_out: int) -> Optional[jax.Array]:
    """``acc_offset`` as int32 (n_out,): one integer per output channel (concrete values: integral)."""
    if acc_offset is None:
        return None
    if jnp.shape(acc_offset) not in ((), (n_out,)):
        raise ValueError(f"acc_offset must have one value per output channel ({n_out},), got shape "
                         f"{jnp.shape(acc_offset)}")
    if not isinstance(acc_offset, jax.core.Tracer):
        a = np.asarray(acc_offset)
        if a.dtype.kind not in "iu" and not np.all(np.isfinite(a) & (a == np.round(a))):
            raise ValueError("acc_offset must hold integers (accumulator units), got non-integer values; "
                             "round a float offset first")
    return jnp.broadcast_to(jnp.asarray(acc_offset, jnp.int32), (n_out,))


def lut_conv2d(x: Any, w: Any, bias: Optional[Any], multiplier: Multiplier, x_qp: QParams, *,
               stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
               w_qp: Optional[QParams] = None, per_channel: bool = True, impl: ImplArg = "auto",
               straight_through: bool = False, table: Optional[Any] = None,
               acc_offset: Optional[Any] = None) -> jax.Array:
    """A float NHWC convolution (HWIO weights) computed in integer codes through ``multiplier``.

    Weights are quantised per output channel (``per_channel=False``: per tensor) unless ``w_qp`` is given.
    ``straight_through=True`` keeps the forward value bit-identical and gives the exact layer's gradient.
    ``table``: a (256, 256) int32 product table (may be traced: a runtime operand of a jitted function, so one
    compilation serves many tables) used instead of ``multiplier.table``; ``multiplier`` then only gives
    the signedness. ``acc_offset``: int32 (O,) subtracted from the accumulators before the rescale (error
    compensation: the table's mean error on the layer's codes, `table_error_mean`).
    NaN / infinity: see the module docstring (concrete NaN raises; under jit it propagates).
    """
    x, w, bias, table, acc_offset, cfg = _prepare(x, w, bias, multiplier, {"activation": x_qp}, w_qp, stride,
                                                  padding, dilation, groups, per_channel, impl, table, acc_offset)
    if straight_through:
        return _straight_through_conv(x, w, bias, x_qp, w_qp, table, acc_offset, cfg)
    return _table_conv(x, w, bias, x_qp, w_qp, table, acc_offset, cfg)


def lut_dense(x: Any, w: Any, bias: Optional[Any], multiplier: Multiplier, x_qp: QParams, *,
              w_qp: Optional[QParams] = None, per_channel: bool = True, impl: ImplArg = "auto",
              straight_through: bool = False) -> jax.Array:
    """A float dense layer (N, I) @ (I, O) computed in integer codes through ``multiplier``."""
    x = jnp.asarray(x)
    if x.ndim != 2 or jnp.ndim(w) != 2:
        raise ValueError(f"lut_dense expects x (N, I) and w (I, O), got {x.shape} and {jnp.shape(w)}")
    if x.shape[1] != jnp.shape(w)[0]:
        raise ValueError(f"lut_dense: x has {x.shape[1]} features but w (I, O) expects {jnp.shape(w)[0]}")
    y = lut_conv2d(x[:, None, None, :], jnp.asarray(w)[None, None], bias, multiplier, x_qp, w_qp=w_qp,
                   per_channel=per_channel, impl=impl, straight_through=straight_through)
    return y[:, 0, 0, :]


@functools.partial(jax.custom_vjp, nondiff_argnums=(8, 9))
def _straight_through_int_conv(x, w, bias, x_qp, w_qp, y_qp, table, acc_offset, activation, cfg):
    return _int_table_conv(x, w, bias, x_qp, w_qp, y_qp, table, acc_offset, activation, cfg)[0]


def _ste_int_forward(x, w, bias, x_qp, w_qp, y_qp, table, acc_offset, activation, cfg):
    y = _int_table_conv(x, w, bias, x_qp, w_qp, y_qp, table, acc_offset, activation, cfg)[0]
    return y, (x, w, bias, x_qp, w_qp, y_qp, table, acc_offset)


def _ste_int_backward(activation, cfg, residuals, g):
    x, w, bias, x_qp, w_qp, y_qp, table, acc_offset = residuals
    _, vjp = jax.vjp(lambda x, w, b: apply_activation(_exact_conv(x, w, b, cfg), activation), x, w, bias)
    dx, dw, db = vjp(g)
    return (dx, dw, db, *(jax.tree_util.tree_map(_zero_cotangent, t)
                          for t in (x_qp, w_qp, y_qp, table, acc_offset)))


_straight_through_int_conv.defvjp(_ste_int_forward, _ste_int_backward)


def lut_conv2d_requant(x: Any, w: Any, bias: Optional[Any], multiplier: Multiplier, x_qp: QParams,
                       y_qp: QParams, *, activation: str = "none", stride: Any = 1, padding: Any = 0,
                       dilation: Any = 1, groups: int = 1, w_qp: Optional[QParams] = None,
                       per_channel: bool = True, impl: ImplArg = "auto", straight_through: bool = False,
                       table: Optional[Any] = None, acc_offset: Optional[Any] = None,
                       return_details: bool = False) -> Any:
    """`lut_conv2d` with integer requantization: the output is ``s_y * (code - z_y)`` for the int8 / uint8
    codes that `jaxdepth.quant.requant.requantize` makes from the int32 accumulators (activation fused).

    ``y_qp``: the output's per-tensor parameters (same signedness as the table). ``return_details=True``
    returns ``(y, details)`` with the integer tensors (input / weight / output codes, accumulators) and the
    `RequantParams` (no gradient). ``straight_through``: gradient of the exact float layer + activation.
    ``table``: a runtime table, as in `lut_conv2d`. ``acc_offset``: as in `lut_conv2d`, folded into the
    requantization's int32 bias (``details["requant"].bias``). NaN / infinity: as `lut_conv2d`. The
    quantization parameters get no gradient here (activation ranges are learned with the float rescale).
    """
    x, w, bias, table, acc_offset, cfg = _prepare(x, w, bias, multiplier, {"activation": x_qp, "output": y_qp},
                                                  w_qp, stride, padding, dilation, groups, per_channel, impl, table,
                                                  acc_offset)
    args = (x, w, bias, x_qp, w_qp, y_qp, table, acc_offset, activation, cfg)
    if return_details:
        return _int_table_conv(*args)
    if straight_through:
        return _straight_through_int_conv(*args)
    return _int_table_conv(*args)[0]


def table_error_mean(x: Any, w: Any, multiplier: Multiplier, x_qp: QParams, *, stride: Any = 1, padding: Any = 0,
                     dilation: Any = 1, groups: int = 1, w_qp: Optional[QParams] = None, per_channel: bool = True,
                     impl: ImplArg = "auto", table: Optional[Any] = None) -> jax.Array:
    """The table's mean error on this layer's codes: float32 (O,), the mean over the batch and output
    positions of ``sum lut[w, x] - sum w * x`` (codes and padding as in `lut_conv2d`; the zero-point terms
    are exact and the same in both, so they cancel). Rounded, it is the ``acc_offset`` that makes the layer
    unbiased on these inputs (`jaxdepth.models.compensate`). ``table``: a runtime table, as in `lut_conv2d`."""
    x, w, _, table, _, cfg = _prepare(x, w, None, multiplier, {"activation": x_qp}, w_qp, stride, padding,
                                      dilation, groups, per_channel, impl, table)
    x_codes, w_codes, _ = _codes(x, w, x_qp, w_qp, cfg)
    approx = _table_sum(x_codes, w_codes, multiplier if table is None else table, x_qp, cfg)
    exact = _table_sum(x_codes, w_codes, exact_multiplier(multiplier.signed), x_qp, cfg)
    return jnp.mean((approx - exact).astype(jnp.float32), axis=(0, 1, 2))
