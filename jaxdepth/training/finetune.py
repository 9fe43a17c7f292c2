"""Fine-tuning a checkpoint for a plan: the checks and the set-up done before any training step.

    student, variables = prepare_student(model, variables, plan, calib_images, ranges="learn")

`check_plan` rejects plans that match no layer (a typo would otherwise fine-tune the float model),
`check_teacher` a teacher of another preset; `prepare_student` builds the plan's model and its activation
quantisation: kept from the checkpoint, calibrated on training frames, or calibrated as the start of learned
ranges.
"""
from __future__ import annotations

from typing import Any

import numpy as np

RANGES = ("keep", "calibrate", "learn")


class FinetuneError(ValueError):
    """A fine-tuning set-up that cannot work (plan, teacher, ranges)."""


def check_plan(model: Any, plan: Any, input_shape: tuple[int, ...] = (1, 64, 64, 3)) -> Any:
    """The `Plan` for ``model``'s layers; raises `FinetuneError` when a pattern matches no layer (listing
    the layer names) or the plan leaves every layer float."""
    from ..models import Plan, describe
    from ..models.plan import unmatched_patterns
    try:
        p = Plan.make(plan)
    except (ValueError, TypeError, KeyError) as e:
        raise FinetuneError(f"bad plan: {e.args[0] if e.args else e}") from None
    names = [i.name for i in describe(model.clone(plan=p), input_shape)]
    problem = unmatched_patterns(p, names)
    if problem:
        raise FinetuneError(f"plan {problem}")
    if p.is_float:
        raise FinetuneError("the plan leaves every layer float: nothing approximate to fine-tune for")
    return p


def check_teacher(student_preset: Any, teacher_preset: Any) -> None:
    """Teacher and student must be the same architecture (same preset settings), so outputs align."""
    s, t = student_preset.to_dict(), teacher_preset.to_dict()
    s.pop("input_size", None)
    t.pop("input_size", None)
    if s != t:
        diff = sorted(k for k in set(s) | set(t) if s.get(k) != t.get(k))
        raise FinetuneError(f"teacher preset {teacher_preset.name!r} differs from the student's "
                            f"{student_preset.name!r} ({', '.join(diff)}): distill from the same architecture")


def prepare_student(model: Any, variables: dict, plan: Any, calib_images: np.ndarray, ranges: str = "calibrate",
                    *, method: str = "minmax") -> tuple[Any, dict]:
    """(the plan's model, variables with activation quantisation for it).

    ``ranges``: "keep" the checkpoint's ``quant`` (it must serve the plan: a calibration for every quantized
    layer, for its table's signedness, `jaxdepth.models.uncalibrated_layers`); "calibrate" or "learn": calibrate on ``calib_images`` (N, H, W, 3) in
    [0, 1] ("learn" then trains the scales, see `jaxdepth.training.train`). Error-compensation offsets are
    not kept (training changes the weights they were measured with; compensate the trained model again)."""
    from ..models import Plan, calibrate, uncalibrated_layers
    from ..models.compensate import strip_compensation
    if ranges not in RANGES:
        raise FinetuneError(f"ranges must be one of {', '.join(RANGES)}, got {ranges!r}")
    p = Plan.make(plan)
    student = model.clone(plan=p)
    base = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    if ranges == "keep":
        missing = uncalibrated_layers(student, variables, np.shape(calib_images)[1:3])
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise FinetuneError(f"ranges='keep': the checkpoint's activation calibration does not serve this plan "
                                f"(no calibration for the signedness of their table: {shown}); use "
                                f"ranges='calibrate' or 'learn'")
        # error-compensation offsets are only right for the weights they were measured with: not kept
        return student, strip_compensation({**base, "quant": variables["quant"]})
    return student, calibrate(student, base, np.asarray(calib_images, np.float32), method)
