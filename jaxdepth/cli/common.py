"""Shared by the predict / evaluate CLIs: model resolution, multiplier plans, calibration."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / "default_model"
SAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "samples"
DEFAULT_MODEL = DEFAULT_MODEL_DIR / "checkpoint"


class CliError(Exception):
    """A user error reported as ``error: ...`` with exit code 2."""


def load_model(spec: Optional[str]) -> tuple[Any, dict, dict]:
    """(model, variables, info) from a checkpoint folder, or a preset name (random weights, with a warning).

    ``spec=None``: the bundled default model.
    """
    from .. import models
    from ..io import checkpoint
    path = Path(spec) if spec else DEFAULT_MODEL
    if path.exists():
        try:
            return checkpoint.load(path)
        except (FileNotFoundError, ValueError) as e:
            raise CliError(str(e)) from None
    if spec and spec in models.list_presets():
        model = models.build(spec)
        return model, models.init_variables(model, 0), {"preset_name": spec, "random_weights": True}
    if spec is None:
        raise CliError(f"the bundled default model is missing ({DEFAULT_MODEL})")
    raise CliError(f"--model {spec!r} is neither a checkpoint folder nor a preset "
                   f"({', '.join(models.list_presets())}); convert PyTorch weights with python -m jaxdepth.convert")


def input_size(model: Any, info: dict) -> Optional[tuple[int, int]]:
    """The native (H, W) a checkpoint was trained at (preset ``input_size`` or ``extra.input_size``)."""
    size = getattr(getattr(model, "preset", None), "input_size", None) or (info.get("extra") or {}).get("input_size")
    return tuple(int(v) for v in size) if size else None


def make_plan(multiplier: Optional[str], layers: Sequence[str] = ("*",)) -> Optional[dict]:
    """{pattern: multiplier for each --layers pattern}, after checking the multiplier name (or .npy/.npz table file)."""
    if not multiplier:
        return None
    from .. import multipliers
    name: Any = multiplier
    p = Path(multiplier)
    if p.suffix in (".npy", ".npz") and p.exists():
        name = load_table_file(p)
    else:
        try:
            multipliers.get(multiplier)
        except KeyError as e:
            raise CliError(str(e.args[0]) if e.args else str(e)) from None
    return {pat: name for pat in (layers or ("*",))}


def load_table_file(path: Path) -> Any:
    """A Multiplier from a 256x256 int table file (.npy, or .npz with one array / 'lut'); signedness by name
    (``*_u*``/``unsigned`` in the file name -> unsigned, else signed)."""
    from ..multipliers import Multiplier
    arr = np.load(path)
    if isinstance(arr, np.lib.npyio.NpzFile):
        keys = list(arr.files)
        arr = arr["lut"] if "lut" in keys else arr[keys[0]]
    table = np.asarray(arr)
    if table.shape != (256, 256):
        raise CliError(f"{path}: a multiplier table must be 256x256, got {table.shape}")
    signed = not any(t in path.stem.lower() for t in ("unsigned", "_u8", "mul8u"))
    try:
        return Multiplier(path.stem, table.astype(np.int32), signed, {"source": str(path)})
    except (ValueError, TypeError) as e:
        raise CliError(f"{path}: not a valid multiplier table ({e})") from None


def quantized(model: Any, variables: dict, plan: dict, calib_images: np.ndarray) -> tuple[Any, dict]:
    """The model with ``plan`` and variables carrying input quantization for it.

    The checkpoint's stored ``quant`` collection is reused when it covers every planned layer and all planned
    multipliers are signed (it was calibrated for signed int8); otherwise the model is calibrated on
    ``calib_images`` (N, H, W, 3) in [0, 1].
    """
    from ..models import Plan, calibrate
    p = Plan.make(plan)
    qmodel = model.clone(plan=p)
    signed = all(a.multiplier is None or a.multiplier.signed for _, a in p.rules)
    if "quant" in variables and signed:
        try:
            import jax
            x = np.zeros((1, *calib_images.shape[1:]), np.float32)
            jax.eval_shape(lambda v, xx: qmodel.apply(v, xx), variables, x)
            return qmodel, variables
        except Exception:
            pass
    base = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    return qmodel, calibrate(qmodel, base, np.asarray(calib_images, np.float32))


def exact_and_plan(model: Any, plan: Optional[dict]) -> tuple[Any, Any]:
    """(the float model, the plan to compare against it): ``plan`` from --multiplier, else the checkpoint's
    stored plan when it is not all-float (converted with ``--plan``), else None."""
    stored = getattr(model, "plan", None)
    if stored is None:
        return model, plan
    from ..models import FLOAT_PLAN
    if plan is None and not stored.is_float:
        plan = stored
    return (model if stored.is_float else model.clone(plan=FLOAT_PLAN)), plan
