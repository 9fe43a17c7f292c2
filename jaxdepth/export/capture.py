"""Golden integer data of a model's layers for one image: run the model with integer requantization and
collect each selected layer's input codes, weight codes, requantization parameters and output codes."""
from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Optional, Sequence

import jax
import numpy as np

from ..models import Plan, calibrate, describe
from ..models.calibrate import qparam_keys
from ..models.plan import Arithmetic, LayerInfo, unmatched_patterns
from ..multipliers import Multiplier


class ExportError(ValueError):
    """A user error found before the export does any work (bad glob, float layer, unwritable folder)."""


@dataclasses.dataclass
class LayerCodes:
    """One layer's integer view: everything its C reference needs and must reproduce."""

    info: LayerInfo
    multiplier: Multiplier
    x_codes: np.ndarray        # (H, W, C) input codes (batch 1)
    w_codes: np.ndarray        # (KH, KW, C / groups, O)
    y_codes: np.ndarray        # (HO, WO, O) output codes
    x_zero_point: int          # = the pad code
    w_zero_point: np.ndarray   # (O,) int32
    bias: np.ndarray           # (O,) int32, in the accumulator's scale
    multiplier_pos: np.ndarray  # (O,) int32
    shift_pos: np.ndarray
    multiplier_neg: np.ndarray
    shift_neg: np.ndarray
    y_zero_point: int
    act_min: int
    act_max: int
    x_scale: float
    y_scale: float

    @property
    def signed(self) -> bool:
        return self.multiplier.signed


def _integer(arith: Arithmetic) -> Arithmetic:
    return arith if arith.is_float else dataclasses.replace(arith, requant="integer")


def integer_plan(plan: Plan) -> Plan:
    """``plan`` with integer requantization on every quantized layer (float layers stay float)."""
    return Plan(tuple((p, _integer(a)) for p, a in plan.rules), _integer(plan.default), plan.source)


def select_layers(infos: Sequence[LayerInfo], patterns: Optional[Sequence[str]] = None) -> list[LayerInfo]:
    """The layers matching any glob, in model order; every glob must match and no match may be float.
    ``patterns=None``: every layer the plan quantizes."""
    if not patterns:
        chosen = [i for i in infos if not i.arith.is_float and i.kind != "dense"]
        if not chosen:
            raise ExportError("nothing to export: the plan runs every layer in float")
        return chosen
    problem = unmatched_patterns(patterns, [i.name for i in infos])
    if problem:
        raise ExportError(problem)
    chosen = [i for i in infos if any(fnmatch.fnmatchcase(i.name, p) for p in patterns)]
    dense = [i.name for i in chosen if i.kind == "dense"]
    if dense:
        raise ExportError(f"dense layers are not exported (convolutions only): {', '.join(dense[:5])}")
    floats = [i.name for i in chosen if i.arith.is_float]
    if floats:
        shown = ", ".join(floats[:5]) + (f" and {len(floats) - 5} more" if len(floats) > 5 else "")
        raise ExportError(f"{len(floats)} selected layer(s) run in float under the plan, so they have no integer "
                          f"codes to export: {shown}; give them a multiplier in the plan or narrow the layer globs")
    return chosen


def capture(model: Any, variables: dict, image: np.ndarray, selected: Sequence[LayerInfo], *,
            calib_images: Any = None, fast_compile: bool = False, compensate: bool = False) -> dict[str, LayerCodes]:
    """Calibrate (on ``calib_images``, default the image), run the model with integer requantization on
    ``image`` (H, W, 3) in [0, 1] and return the selected layers' integer data by name. ``compensate``: give
    the layers with inexact tables error-compensation offsets (`jaxdepth.models.compensate`, measured on the
    calibration images), folded into their int32 bias."""
    imodel = model.clone(plan=integer_plan(model.plan))
    base = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    batch = np.asarray(image, np.float32)[None]
    calib = batch if calib_images is None else np.asarray(calib_images, np.float32)
    qvars = calibrate(imodel, base, calib, fast_compile=fast_compile)
    if compensate:
        from ..models.compensate import compensate as add_offsets
        qvars = add_offsets(imodel, qvars, calib)
    fn = jax.jit(lambda v, x: imodel.apply(v, x, mutable=["export"])[1]["export"])
    lowered = fn.lower(qvars, batch)
    if fast_compile:
        from ..models.densedepth import FAST_COMPILE_OPTIONS
        state = lowered.compile(compiler_options=FAST_COMPILE_OPTIONS)(qvars, batch)
    else:
        state = lowered.compile()(qvars, batch)
    state = jax.device_get(state)
    out: dict[str, LayerCodes] = {}
    for info in selected:
        node = state
        for p in info.path:
            node = node[p]
        d = node["details"][0]
        rp = d["requant"]
        n_out = info.w_shape[-1]
        per_channel = lambda a: np.broadcast_to(np.asarray(a, np.int32), (n_out,)).copy()  # noqa: E731
        x_codes = np.asarray(d["x_codes"])[0]
        multiplier = imodel.plan.resolve(info.name).multiplier
        out[info.name] = LayerCodes(
            info=info, multiplier=multiplier,
            x_codes=x_codes, w_codes=np.asarray(d["w_codes"]).reshape(info.w_shape),
            y_codes=np.asarray(d["codes"])[0].reshape(*info.out_hw, n_out),
            x_zero_point=int(d["x_zero_point"]), w_zero_point=per_channel(d["w_zero_point"]),
            bias=per_channel(rp.bias), multiplier_pos=per_channel(rp.multiplier), shift_pos=per_channel(rp.shift),
            multiplier_neg=per_channel(rp.neg_multiplier), shift_neg=per_channel(rp.neg_shift),
            y_zero_point=int(rp.out_zero_point), act_min=int(rp.act_min), act_max=int(rp.act_max),
            x_scale=float(_node(qvars["quant"], info.path)[qparam_keys("x", multiplier.signed)[0]]),
            y_scale=float(rp.out_scale))
    return out


def _node(tree: dict, path: tuple[str, ...]) -> dict:
    for p in path:
        tree = tree[p]
    return tree


def layer_infos(model: Any, input_hw: tuple[int, int]) -> list[LayerInfo]:
    """Every multiplying layer of ``model`` for a batch-1 input of ``input_hw`` (nothing computed)."""
    return describe(model, (1, *input_hw, 3))
