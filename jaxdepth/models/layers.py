"""One convolution / dense layer type whose arithmetic comes from the plan.

`QConv` (standard, depthwise, pointwise) and `QDense` run as

* float: ``lax.conv_general_dilated`` in float32 (exact reference arithmetic);
* quantized: integer codes through a multiplier's product table with `jaxdepth.quant` semantics
  (``"int8"`` = the exact signed table, which the fast kernels run natively; any other multiplier through
  its LUT with the `jaxdepth.lutconv` kernel ``impl="auto"`` picks).

A `QConv` may own the BatchNorm that follows it (``norm=True``). In float mode it is applied as a separate
op (batch statistics when ``train=True``, running statistics otherwise). In the quantized modes it is
folded into the convolution, as accelerators do: ``w' = w * g / sqrt(v + eps)`` per output channel,
``b' = (b - m) * g / sqrt(v + eps) + beta`` with the running statistics; the folded weights are then
quantized per output channel. (BatchNorms that do not follow a convolution -- DenseNet's pre-activation
``norm1`` / ``transition.norm`` / ``norm5`` -- stay float per-channel affine ops.)

Quantized layers read their input quantization (per-tensor ``x_scale_int8``, ``x_zero_point_int8`` for a
signed table, ``..._uint8`` for an unsigned one: `jaxdepth.models.calibrate.qparam_keys`) from the
``"quant"`` variable collection, which `jaxdepth.models.calibrate` fills; a calibration made only for the
other signedness raises. A plan rule with ``"requant": "integer"`` makes the layer requantize its
accumulators in integer arithmetic (`jaxdepth.quant.requant`) to output codes with the calibrated output
parameters (``y_scale_<int8|uint8>``, ``y_zero_point_<int8|uint8>``), the layer's ``activation`` fused;
its output is the dequantised value of those codes. Error compensation (`jaxdepth.models.compensate`): a layer
whose ``quant`` entry holds ``acc_offset_<table digest>`` for its table (``variables["lut"][<path>]
["acc_offset"]`` for a runtime table) subtracts it from its accumulators; with the ``"compensation"``
collection mutable, every layer with an inexact table sows its table's mean error on the codes it sees
(`jaxdepth.quant.table_error_mean`), under that key. Gradients of quantized layers use the straight-through
estimator: the forward value is the table result, bit for bit; the backward pass is the exact float layer's
(so approximation-aware fine-tuning works).
"""
from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .. import quant
from ..quant import requant
from .calibrate import LEGACY_KEYS, qparam_keys
from .plan import FLOAT_PLAN, LayerInfo, Plan, record

BN_EPS = 1e-5
BN_MOMENTUM = 0.1           # PyTorch convention: running = (1 - m) * running + m * batch
CALIB_SAMPLE = 1 << 16      # values per layer kept for percentile / MSE calibration


def kernel_initializer(kind: str, fan_in: int):
    """Flax initializer for a conv kernel: "torch" (PyTorch default), "he_fan_in" / "he_fan_out" (kaiming
    normal, torchvision's DenseNet / MobileNetV2 choice)."""
    if kind == "torch":
        return torch_default_uniform(fan_in)
    if kind in ("he_fan_in", "he_fan_out"):
        return nn.initializers.variance_scaling(2.0, kind[3:], "normal")
    raise ValueError(f"unknown kernel init {kind!r}")


def numpy_init(kind: str, shape: tuple[int, ...], fan_in: int, rng: np.random.Generator) -> np.ndarray:
    """The same distributions drawn with NumPy (fast: no per-shape XLA compilation), for `init_variables`."""
    if kind == "torch":
        bound = 1.0 / np.sqrt(max(fan_in, 1))
        return rng.uniform(-bound, bound, shape).astype(np.float32)
    if kind in ("he_fan_in", "he_fan_out"):
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan = receptive * (shape[-2] if kind == "he_fan_in" else shape[-1])
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan)).astype(np.float32)
    raise ValueError(f"unknown kernel init {kind!r}")


def torch_default_uniform(fan_in: int):
    """PyTorch's default Conv2d / Linear init bound 1/sqrt(fan_in) (kaiming_uniform with a=sqrt(5))."""
    bound = 1.0 / np.sqrt(max(fan_in, 1))

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


class BatchNorm(nn.Module):
    """BatchNorm2d with PyTorch semantics (eps 1e-5, momentum 0.1, unbiased running variance)."""

    features: int
    eps: float = BN_EPS
    momentum: float = BN_MOMENTUM

    def setup(self) -> None:
        self.scale = self.param("scale", nn.initializers.ones, (self.features,))
        self.bias = self.param("bias", nn.initializers.zeros, (self.features,))
        self.mean = self.variable("batch_stats", "mean", jnp.zeros, (self.features,))
        self.var = self.variable("batch_stats", "var", jnp.ones, (self.features,))

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axes)
            var = jnp.mean(jnp.square(x - mean), axes)
            if not self.is_initializing() and self.is_mutable_collection("batch_stats"):
                n = x.size // x.shape[-1]
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                self.mean.value = (1 - m) * self.mean.value + m * jax.lax.stop_gradient(mean)
                self.var.value = (1 - m) * self.var.value + m * jax.lax.stop_gradient(unbiased)
        else:
            mean, var = self.mean.value, self.var.value
        mul = self.scale * jax.lax.rsqrt(var + self.eps)
        return (x - mean) * mul + self.bias

    def fold(self) -> tuple[jax.Array, jax.Array]:
        """(mul, add) with ``bn(y) == y * mul + add`` under the running statistics."""
        mul = self.scale * jax.lax.rsqrt(self.var.value + self.eps)
        return mul, self.bias - self.mean.value * mul


# ---- the quantized forward with a straight-through backward ----------------------------------------------------
def _exact_conv(x, w, b, cfg):
    _, _, stride, padding, groups = cfg
    y = jax.lax.conv_general_dilated(x, w, (stride, stride), ((padding, padding), (padding, padding)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    return y + b


def ste_lut_conv(x, w, b, x_scale, x_zero, cfg, table=None, acc_offset=None):
    """LUT convolution forward (bit-exact), exact-convolution gradient (straight-through estimator).

    ``cfg = (multiplier, impl, stride, padding, groups)``; the semantics live in `jaxdepth.quant`.
    ``table``: a runtime table replacing the multiplier's (plans with ``runtime_table``). ``acc_offset``:
    the layer's error compensation (None: none).
    """
    multiplier, impl, stride, padding, groups = cfg
    qp = quant.QParams(x_scale, x_zero, multiplier.signed)
    return quant.lut_conv2d(x, w, b, multiplier, qp, stride=stride, padding=padding, groups=groups, impl=impl,
                            straight_through=True, table=table, acc_offset=acc_offset)


#: the error-compensation key of a runtime table (in ``variables["lut"][<path>]``, beside ``"table"``)
RUNTIME_OFFSET_KEY = "acc_offset"
#: the start of a fixed table's error-compensation key in ``variables["quant"][<path>]`` (`offset_key`)
OFFSET_PREFIX = "acc_offset_"


def offset_key(multiplier) -> str:
    """The ``quant`` key of a layer's error-compensation offset for ``multiplier``'s table: named by the
    table's content (`Multiplier.digest`), so an offset is never applied to another table."""
    return OFFSET_PREFIX + multiplier.digest


def layer_name(module: nn.Module) -> str:
    return ".".join(str(p) for p in module.scope.path)


class _Quantized:
    """Calibration observation and input quantization parameters shared by QConv and QDense."""

    def _observe(self, x: jax.Array) -> None:
        """During calibration, record the input's range (and a sample of its values)."""
        if self.is_mutable_collection("calib") and not self.is_initializing():
            self.sow("calib", "min", jnp.min(x))
            self.sow("calib", "max", jnp.max(x))
            if self.is_mutable_collection("calib_sample"):
                flat = x.reshape(-1)
                step = max(1, flat.size // CALIB_SAMPLE)
                self.sow("calib_sample", "values", flat[::step])

    def _observe_output(self, y: jax.Array) -> None:
        """During calibration, record the output's range (after the fused activation), for integer requant."""
        if self.is_mutable_collection("calib") and not self.is_initializing():
            self.sow("calib", "y_min", jnp.min(y))
            self.sow("calib", "y_max", jnp.max(y))
            if self.is_mutable_collection("calib_sample"):
                flat = y.reshape(-1)
                step = max(1, flat.size // CALIB_SAMPLE)
                self.sow("calib_sample", "y_values", flat[::step])

    def _output_qparams(self, signed: bool) -> quant.QParams:
        scale, zero = self._calibration(
            "y", signed, f"layer {layer_name(self)} uses integer requantization but the variables have no output "
                         f"calibration (quant {qparam_keys('y', signed)[0]}) for it: run jaxdepth.models.calibrate("
                         f"model, variables, images) with this plan (or layers='all')")
        return quant.QParams(scale, zero, signed)

    def _input_qparams(self, signed: bool) -> tuple[jax.Array, jax.Array]:
        return self._calibration(
            "x", signed, f"layer {layer_name(self)} is quantized by the plan but the variables have no 'quant' entry "
                         f"for it: run jaxdepth.models.calibrate(model, variables, images) first (or load a "
                         f"calibrated checkpoint)")

    def _calibration(self, side: str, signed: bool, missing: str) -> tuple[jax.Array, jax.Array]:
        """(scale, zero point) of the layer's input (``side`` "x") or output ("y") for a table of signedness
        ``signed``; raises ValueError (``missing`` when the entry holds no other calibration)."""
        scale_key, zero_key = qparam_keys(side, signed)
        if not self.has_variable("quant", scale_key):
            raise ValueError(self._calibration_missing(side, signed) or missing)
        return self.get_variable("quant", scale_key), self.get_variable("quant", zero_key)

    def _is_calibrated(self, signed: bool) -> bool:
        return self.has_variable("quant", qparam_keys("x", signed)[0])

    def _calibration_missing(self, side: str, signed: bool) -> str:
        """Why the layer's calibration for a table of signedness ``signed`` is missing when the ``quant``
        entry holds another one ('' when it holds none)."""
        what = "input" if side == "x" else "output"
        kind, other = (("signed (int8 codes)", "unsigned (uint8)") if signed
                       else ("unsigned (uint8 codes)", "signed (int8)"))
        fix = ("recalibrate for this plan: jaxdepth.models.calibrate(model, variables, images) (layers='all' "
               "calibrates every layer for both kinds of table)")
        if self.has_variable("quant", qparam_keys(side, not signed)[0]):
            return (f"layer {layer_name(self)}: its table is {kind} but its {what} calibration (variables['quant']) "
                    f"was made for {other} tables only; {fix}")
        if any(self.has_variable("quant", k) for k in LEGACY_KEYS if k[0] == side):
            return (f"layer {layer_name(self)}: variables['quant'] holds an {what} calibration of unknown signedness "
                    f"(keys {side}_scale, {side}_zero_point, from an older jaxdepth); load the checkpoint with "
                    f"jaxdepth.io.checkpoint.load (it reads the signedness from the checkpoint's plan) or {fix}")
        return ""

    def _acc_offset(self, arith):
        """The layer's error-compensation offset for its table (int32 (O,)), None when it has none."""
        if arith.runtime_table:
            return self.get_variable("lut", RUNTIME_OFFSET_KEY) if self.has_variable("lut", RUNTIME_OFFSET_KEY) \
                else None
        key = offset_key(arith.multiplier)
        return self.get_variable("quant", key) if self.has_variable("quant", key) else None

    def _observe_table_error(self, x, kernel, arith, x_scale, x_zero, table, stride=1, padding=0, groups=1):
        """With the ``"compensation"`` collection mutable, sow the table's mean error on this layer's codes
        (under the layer's offset key; tables equal to the exact product are skipped: their error is 0)."""
        if not self.is_mutable_collection("compensation") or self.is_initializing():
            return
        if table is None and arith.multiplier.is_exact:
            return
        qp = quant.QParams(x_scale, x_zero, arith.multiplier.signed)
        error = quant.table_error_mean(x, kernel, arith.multiplier, qp, stride=stride, padding=padding,
                                       groups=groups, impl=arith.impl, table=table)
        self.sow("compensation", RUNTIME_OFFSET_KEY if arith.runtime_table else offset_key(arith.multiplier),
                 jax.lax.stop_gradient(error))

    def _runtime_table(self, arith):
        """The layer's table from ``variables["lut"]`` when the plan makes it a runtime operand, else None."""
        if not arith.runtime_table:
            return None
        if not self.has_variable("lut", "table"):
            raise ValueError(f"layer {layer_name(self)} reads its table at run time (plan runtime_table) but the "
                             f"variables have no 'lut' entry for it (variables['lut'][<layer path>]['table'])")
        return self.get_variable("lut", "table")


class QConv(_Quantized, nn.Module):
    """Conv2d (NHWC, HWIO kernel, symmetric explicit padding) + optional following BatchNorm."""

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 0
    groups: int = 1
    use_bias: bool = False
    norm: bool = False
    plan: Plan = FLOAT_PLAN
    weight_init: str = "torch"   # kernel init: "torch" (PyTorch Conv2d default), "he_fan_in", "he_fan_out"
    bn_eps: float = BN_EPS       # epsilon of the owned BatchNorm (Keras applications use 1.001e-5)
    activation: str = "none"     # applied after the (BatchNorm'd) output; fused in integer requantization

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, return_pre_norm: bool = False):
        c_in = x.shape[-1]
        if c_in % self.groups or self.features % self.groups:
            raise ValueError(f"{layer_name(self)}: channels {c_in} -> {self.features} not divisible by "
                             f"groups {self.groups}")
        k = self.kernel_size
        fan_in = k * k * c_in // self.groups
        kernel = self.param("kernel", kernel_initializer(self.weight_init, fan_in),
                            (k, k, c_in // self.groups, self.features))
        bias = (self.param("bias", torch_default_uniform(fan_in), (self.features,)) if self.use_bias
                else jnp.zeros((self.features,), jnp.float32))
        bn = BatchNorm(self.features, eps=self.bn_eps, name="bn") if self.norm else None
        name = layer_name(self)
        arith = self.plan.resolve(name)
        kind = ("depthwise" if self.groups > 1 and self.groups == c_in else
                "pointwise" if k == 1 and self.groups == 1 else "conv")
        record(LayerInfo(name, kind, tuple(x.shape), tuple(kernel.shape), self.stride, self.padding, self.groups,
                         arith, self.norm, self.weight_init, self.use_bias, self.activation))
        self._observe(x)
        cfg = (arith.multiplier, arith.impl, self.stride, self.padding, self.groups)
        if arith.is_float or (self.is_initializing() and not self._is_calibrated(arith.multiplier.signed)):
            y = _exact_conv(x, kernel, bias, cfg)
            pre = y
            if bn is not None:
                y = bn(y, train)
            y = requant.apply_activation(y, self.activation)
            self._observe_output(y)
            return (y, pre) if return_pre_norm else y
        if bn is not None:  # fold the BatchNorm (running statistics) into the convolution
            mul, add = bn.fold()
            kernel = kernel * mul
            bias = bias * mul + add
        x_scale, x_zero = self._input_qparams(arith.multiplier.signed)
        table = self._runtime_table(arith)
        offset = self._acc_offset(arith)
        self._observe_table_error(x, kernel, arith, x_scale, x_zero, table, self.stride, self.padding, self.groups)
        if arith.requant == "integer":
            y = self._integer_requant(x, kernel, bias, x_scale, x_zero, cfg, table, offset)
        else:
            y = requant.apply_activation(ste_lut_conv(x, kernel, bias, x_scale, x_zero, cfg, table, offset),
                                         self.activation)
        return (y, None) if return_pre_norm else y

    def _integer_requant(self, x, kernel, bias, x_scale, x_zero, cfg, table, offset) -> jax.Array:
        """The layer with integer requantization; with the ``"export"`` collection mutable, also sows the
        integer tensors and parameters (`jaxdepth.export` reads them: golden codes and C headers)."""
        multiplier, impl, stride, padding, groups = cfg
        x_qp = quant.QParams(x_scale, x_zero, multiplier.signed)
        y_qp = self._output_qparams(multiplier.signed)
        kw = dict(activation=self.activation, stride=stride, padding=padding, groups=groups, impl=impl, table=table,
                  acc_offset=offset)
        if self.is_mutable_collection("export"):
            y, details = quant.lut_conv2d_requant(x, kernel, bias, multiplier, x_qp, y_qp, return_details=True,
                                                  **kw)
            self.sow("export", "details", details)
            return y
        return quant.lut_conv2d_requant(x, kernel, bias, multiplier, x_qp, y_qp, straight_through=True, **kw)



class QDense(_Quantized, nn.Module):
    """Dense layer (N, I) @ (I, O) with the plan's arithmetic (computed as a 1x1 convolution)."""

    features: int
    use_bias: bool = True
    plan: Plan = FLOAT_PLAN

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 2:
            raise ValueError(f"QDense expects (N, I) inputs, got {x.shape}")
        fan_in = x.shape[-1]
        kernel = self.param("kernel", torch_default_uniform(fan_in), (fan_in, self.features))
        bias = (self.param("bias", torch_default_uniform(fan_in), (self.features,)) if self.use_bias
                else jnp.zeros((self.features,), jnp.float32))
        name = layer_name(self)
        arith = self.plan.resolve(name)
        x4, w4 = x[:, None, None, :], kernel[None, None]
        record(LayerInfo(name, "dense", tuple(x4.shape), tuple(w4.shape), 1, 0, 1, arith, False, "torch",
                         self.use_bias))
        self._observe(x)
        cfg = (arith.multiplier, arith.impl, 1, 0, 1)
        if arith.is_float or (self.is_initializing() and not self._is_calibrated(arith.multiplier.signed)):
            y = x @ kernel + bias
            self._observe_output(y)
            return y
        x_scale, x_zero = self._input_qparams(arith.multiplier.signed)
        table = self._runtime_table(arith)
        offset = self._acc_offset(arith)
        self._observe_table_error(x4, w4, arith, x_scale, x_zero, table)
        if arith.requant == "integer":
            x_qp = quant.QParams(x_scale, x_zero, arith.multiplier.signed)
            y_qp = self._output_qparams(arith.multiplier.signed)
            return quant.lut_conv2d_requant(x4, w4, bias, arith.multiplier, x_qp, y_qp, impl=arith.impl,
                                            straight_through=True, table=table, acc_offset=offset)[:, 0, 0, :]
        return ste_lut_conv(x4, w4, bias, x_scale, x_zero, cfg, table, offset)[:, 0, 0, :]
