"""DenseDepth models in Flax (NHWC) with per-layer approximate multipliers.

    >>> from jaxdepth import models
    >>> model = models.build("mobilenetv2_lite")
    >>> variables = models.init_variables(model, 0)
    >>> raw = model.apply(variables, images)            # images (N, H, W, 3) in [0, 1]
    >>> metres = models.to_metres(raw, model.preset)     # (N, H/2, W/2, 1); the preset's depth range

Quantized / approximate inference: ``build(preset, plan={"decoder.*": "mul8s_1KV8", "encoder.*": "int8"})``,
then ``variables = calibrate(model, variables, images)``; ``print(plan_table(model, (1, 480, 640, 3)))``.
"""
from .densedepth import (DenseDepth, build, compile_apply, count_params, depth_range, init_variables,
                         make_encoder, to_metres)
from .layers import BatchNorm, QConv, QDense
from .calibrate import calibrate, uncalibrated_layers
from .compensate import compensate, strip_compensation, uncompensated_layers
from .family import EncoderFamily, families, get_family, register
from .plan import FLOAT_PLAN, Arithmetic, LayerInfo, Plan, describe, format_table, layer_names, plan_table
from .presets import PRESETS, Preset, UpBlock, get_preset, list_presets

__all__ = ["EncoderFamily", "families", "get_family", "register", "Arithmetic", "BatchNorm", "DenseDepth", "FLOAT_PLAN", "LayerInfo", "PRESETS", "Plan", "Preset",
           "QConv", "QDense", "UpBlock", "build", "calibrate", "compensate", "compile_apply", "count_params", "depth_range", "describe", "format_table", "layer_names", "get_preset",
           "init_variables", "list_presets", "make_encoder", "plan_table", "strip_compensation", "to_metres", "uncalibrated_layers",
           "uncompensated_layers"]
