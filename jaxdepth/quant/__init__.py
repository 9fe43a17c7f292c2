"""Quantisation: the reference integer semantics every LUT kernel and model layer reproduces.

See `params` (codes <-> reals), `layers` (conv / dense through a table), `observers` (calibration),
`requant` (integer requantization of the int32 accumulators, TFLite / gemmlowp fixed point).
"""
from .layers import lut_conv2d, lut_conv2d_requant, lut_dense, table_error_mean
from .observers import Observer
from .params import QParams, activation_qparams, dequantize, fake_quantize, quantize, weight_qparams

__all__ = ["Observer", "QParams", "activation_qparams", "dequantize", "fake_quantize", "lut_conv2d",
           "lut_conv2d_requant", "lut_dense", "quantize", "table_error_mean", "weight_qparams"]
