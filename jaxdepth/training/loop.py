"""The training loop: from-scratch training, fine-tuning for a plan, and distillation from a teacher.

One jitted step differentiates only what is trained (`select_trainable`: every weight, the decoder, or the
BatchNorm scales / biases) plus, with ``learn_ranges``, a log-factor on every quantised layer's input scale
(LSQ / PACT style: the forward stays bit-exact for whatever scale is current; the gradient of the scale
comes from `jaxdepth.quant`'s straight-through backward). LUT layers run their table forward and the exact
float layer's backward (straight-through estimator), so a plan's model trains like a float one.
"""
from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from ..checks import check_counts, check_rates
from ..models.calibrate import INPUT_SCALE_KEYS
from .data import ArrayData, augment
from .loss import clip_straight_through, depth_loss, depth_to_target, raw_range, teacher_target

TRAINABLE = ("all", "decoder", "bn")
TARGETS = ("gt", "teacher", "both")


def select_trainable(params: dict, which: str = "all") -> set[tuple[str, ...]]:
    """Flat parameter paths trained by ``which``: "all"; "decoder" (every parameter under ``decoder``);
    "bn" (BatchNorm scales and every bias: the per-channel affine parameters, weights frozen)."""
    if which not in TRAINABLE:
        raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {which!r}")
    flat = traverse_util.flatten_dict(params)
    if which == "all":
        keys = set(flat)
    elif which == "decoder":
        keys = {k for k in flat if k[0] == "decoder"}
    else:
        keys = {k for k in flat if k[-1] in ("scale", "bias")}
    if not keys:
        raise ValueError(f"trainable={which!r} selects no parameter of this model")
    return keys


def split_variables(variables: dict, keys: set[tuple[str, ...]], learn_ranges: bool) -> tuple[dict, dict]:
    """(trainable, frozen): flat dicts; trainable = {"params": {path: w}, "ranges": {path: log-factor}}."""
    flat = traverse_util.flatten_dict(variables["params"])
    trainable: dict[str, Any] = {"params": {k: v for k, v in flat.items() if k in keys}}
    frozen: dict[str, Any] = {"params": {k: v for k, v in flat.items() if k not in keys},
                              "batch_stats": variables.get("batch_stats", {})}
    if "quant" in variables:
        q = traverse_util.flatten_dict(variables["quant"])
        frozen["quant"] = q
        if learn_ranges:
            trainable["ranges"] = {k: jnp.zeros_like(v) for k, v in q.items() if k[-1] in INPUT_SCALE_KEYS}
    elif learn_ranges:
        raise ValueError("learn_ranges needs a calibrated model (variables['quant'])")
    return trainable, frozen


def _quant(frozen_quant: dict, ranges: dict) -> dict:
    """The quant collection with every learned scale ``s0 * exp(r)`` (exactly s0 while r == 0)."""
    q = dict(frozen_quant)
    for k, r in ranges.items():
        q[k] = frozen_quant[k] * jnp.exp(r)
    return traverse_util.unflatten_dict(q)


def assemble(trainable: dict, frozen: dict) -> dict:
    """Flax variables from the trainable and frozen parts."""
    v = {"params": traverse_util.unflatten_dict({**frozen["params"], **trainable["params"]}),
         "batch_stats": frozen["batch_stats"]}
    if "quant" in frozen:
        v["quant"] = _quant(frozen["quant"], trainable.get("ranges", {}))
    return v


def make_optimizer(lr: float, steps: int, warmup: int = 200, weight_decay: float = 0.0,
                   range_lr: Optional[float] = None) -> optax.GradientTransformation:
    """Adam with warm-up + cosine decay, global-norm clipping; learned ranges get their own Adam (``range_lr``)."""
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, min(warmup, max(1, steps // 10)), max(steps, 2), lr * 0.02)
    opt = optax.adamw(sched, weight_decay=weight_decay) if weight_decay else optax.adam(sched)
    weights = optax.chain(optax.clip_by_global_norm(5.0), opt)
    if range_lr is None:
        return optax.multi_transform({"w": weights, "r": optax.set_to_zero()},
                                     lambda t: {k: ("w" if k == "params" else "r") for k in t})
    ranges = optax.adam(optax.cosine_decay_schedule(range_lr, max(steps, 2), 0.05))
    return optax.multi_transform({"w": weights, "r": ranges}, lambda t: {k: ("w" if k == "params" else "r") for k in t})


def make_train_step(model: Any, tx: optax.GradientTransformation, *, target: str = "gt",
                    teacher: Optional[Any] = None, teacher_weight: float = 1.0,
                    update_bn_stats: bool = True, loss_kwargs: Optional[dict] = None) -> Callable:
    """jit-compiled ``(trainable, frozen, opt_state, x, y, teacher_vars) -> (trainable, frozen, opt_state, loss, parts)``.

    ``target``: "gt" (``y`` = depth-norm targets), "teacher" (``teacher``'s raw output on the same input,
    clipped to the metric range, is the target; ``y`` is None), "both" (sum, the teacher term weighted).
    ``update_bn_stats``: BatchNorm on batch statistics with running averages updated (training from
    scratch) or on the frozen running statistics (fine-tuning: what the deployed / folded model uses).
    Clipping and SSIM's range follow the model preset's depth range (`jaxdepth.models.depth_range`: raw
    1..max/min, 1..100 for NYU, 1..80 for densedepth_kitti); ``y`` must come from `depth_to_target` with it.
    """
    from ..models import depth_range
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if target != "gt" and teacher is None:
        raise ValueError(f"target={target!r} needs a teacher model")
    rr = raw_range(depth_range(model))
    loss_kwargs = {"val_range": rr[1], **(loss_kwargs or {})}

    def loss_fn(trainable, frozen, x, y, tvars):
        variables = assemble(trainable, frozen)
        if update_bn_stats:
            out, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
            new_bs = upd["batch_stats"]
        else:
            out, new_bs = model.apply(variables, x), frozen["batch_stats"]
        parts: dict[str, jax.Array] = {}
        loss = jnp.zeros((), jnp.float32)
        if target in ("gt", "both"):
            loss, parts = depth_loss(out, y, **loss_kwargs)
        if target in ("teacher", "both"):
            t = teacher_target(teacher.apply(tvars, x), rr)
            d_loss, d_parts = depth_loss(clip_straight_through(out, rr), t, **loss_kwargs)
            if target == "teacher":
                parts = d_parts
            parts = {**parts, "distill": d_loss}
            loss = loss + (teacher_weight if target == "both" else 1.0) * d_loss
        return loss, (parts, new_bs)

    @jax.jit
    def step(trainable, frozen, opt_state, x, y, tvars):
        (loss, (parts, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, frozen, x, y, tvars)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        return trainable, {**frozen, "batch_stats": new_bs}, opt_state, loss, parts

    return step


def train(model: Any, variables: dict, data: ArrayData, *, steps: int, batch_size: int = 8, lr: float = 3e-4,
          seed: int = 0, minutes: Optional[float] = None, out: Optional[Path] = None, preset: Any = None,
          log_every: int = 20, save_every: int = 500, val: Optional[ArrayData] = None, val_every: int = 0,
          progress: bool = True, extra: Optional[dict] = None, trainable: str = "all",
          learn_ranges: bool = False, range_lr: float = 1e-3, target: str = "gt", teacher: Optional[Any] = None,
          teacher_variables: Optional[dict] = None, teacher_weight: float = 1.0,
          update_bn_stats: Optional[bool] = None, warmup: int = 200) -> tuple[dict, dict]:
    """Train ``variables`` for ``steps`` (or until ``minutes`` pass): returns (variables, log).

    Training from scratch, fine-tuning a calibrated plan's model (``model.plan``; ``learn_ranges`` learns
    its activation ranges) or distilling (``target="teacher"``/``"both"`` with ``teacher`` and
    ``teacher_variables``, e.g. the exact model). ``update_bn_stats`` defaults to True for float models and
    False for quantised ones (their BatchNorms are folded with the running statistics).

    ``log``: {"steps", "loss", <loss parts>, "time", "val": [{"step", "delta1", ...}], "config"}; with ``out``:
    ``out/checkpoint`` (every ``save_every`` steps and at the end; records the plan), ``out/log.json``,
    ``out/loss.png``.
    """
    from tqdm import tqdm

    from ..models import depth_range
    check_counts(steps=steps, batch_size=batch_size, log_every=log_every, save_every=save_every)
    check_counts(0, val_every=val_every, warmup=warmup)
    check_rates(lr=lr, **({"range_lr": range_lr} if learn_ranges else {}),
                 **({"minutes": minutes} if minutes is not None else {}))
    if target == "both":
        check_rates(0.0, teacher_weight=teacher_weight)
    if val is not None and val_every and not val.has_depth:
        raise ValueError(f"val ({val.name}) has no depth maps: validation needs ground truth (or val_every=0)")
    if batch_size > len(data):
        warnings.warn(f"batch_size {batch_size} is more than the {len(data)} training frames: every step uses "
                      f"those {len(data)}", UserWarning, stacklevel=2)
    plan = getattr(model, "plan", None)
    d_range = depth_range(model)     # targets max / depth in the preset's range (NYU 0.1-10 m, KITTI 1-80 m)
    if update_bn_stats is None:
        update_bn_stats = plan is None or plan.is_float
    if target != "gt" and (teacher is None or teacher_variables is None):
        raise ValueError(f"target={target!r} needs teacher and teacher_variables")
    if target != "teacher" and not data.has_depth:
        raise ValueError(f"{data.name} has no depth maps: train with target='teacher' (distillation)")
    rng = np.random.default_rng(seed)
    keys = select_trainable(variables["params"], trainable)
    state, frozen = split_variables(variables, keys, learn_ranges)
    tx = make_optimizer(lr, steps, warmup, range_lr=range_lr if learn_ranges else None)
    opt_state = tx.init(state)
    step_fn = make_train_step(model, tx, target=target, teacher=teacher, teacher_weight=teacher_weight,
                              update_bn_stats=update_bn_stats)
    h, w = data.size
    frame = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)   # targets at the model's own output size
    out_hw = tuple(jax.eval_shape(model.apply, variables, frame).shape[1:3])  # (DenseDepth: half, rounded up)
    n_train = sum(int(np.size(v)) for v in state["params"].values())
    log: dict[str, Any] = {"steps": [], "loss": [], "time": [], "val": [],
                           "config": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                                      "train_frames": len(data), "input_size": [h, w], "trainable": trainable,
                                      "trained_parameters": n_train, "learn_ranges": learn_ranges,
                                      "range_lr": range_lr if learn_ranges else None, "target": target,
                                      "update_bn_stats": update_bn_stats, "depth_range": list(d_range),
                                      "plan": plan.to_json() if plan is not None else None, **(extra or {})}}
    t0 = time.time()
    acc: dict[str, float] = {}
    n_acc = 0
    bar = tqdm(total=steps, desc="training", unit="step", disable=not progress, dynamic_ncols=True)
    order = rng.permutation(len(data))
    pos = 0
    step = 0
    completed = 0       # steps whose update is in ``state`` (an interrupt may land inside the next one)
    unmeasured = 0      # steps whose batch had no measured depth pixel
    interrupted = False
    try:
        for step in range(1, steps + 1):
            if pos + batch_size > len(order):
                order, pos = rng.permutation(len(data)), 0
            idx = order[pos:pos + batch_size]
            pos += batch_size
            imgs, deps = data.batch(idx)
            x, d = augment(imgs, deps if target != "teacher" else None, rng)
            y = None if d is None else depth_to_target(d, out_hw, d_range)
            if y is not None and not np.isfinite(y).any():
                unmeasured += 1             # no depth pixel in the batch: its gt loss is 0
            y = None if y is None else jnp.asarray(y)
            state, frozen, opt_state, loss, parts = step_fn(state, frozen, opt_state, jnp.asarray(x), y,
                                                            teacher_variables)
            completed = step
            vals = {"loss": float(loss), **{k: float(v) for k, v in parts.items()}}
            if step == 1:
                log["config"]["first_step_seconds"] = time.time() - t0     # includes compiling the step
            if not math.isfinite(vals["loss"]):
                raise FloatingPointError(f"loss became {vals['loss']} at step {step}")
            for k, v in vals.items():
                acc[k] = acc.get(k, 0.0) + v
            n_acc += 1
            bar.update(1)
            if step % log_every == 0 or step == steps:
                _log_mean(log, step, acc, n_acc, t0)
                bar.set_postfix(loss=f"{acc['loss'] / n_acc:.4f}")
                acc, n_acc = {}, 0
            if val is not None and val_every and step % val_every == 0:
                r = validate(model, assemble(state, frozen), val)
                log["val"].append({"step": step, **r})
                bar.write(f"step {step}: val delta1 {r['delta1']:.4f} abs_rel {r['abs_rel']:.4f} rmse {r['rmse']:.3f}")
            if out is not None and step % save_every == 0:
                save_run(out, model, preset, assemble(state, frozen), log)
            if minutes is not None and time.time() - t0 > 60 * minutes:
                bar.write(f"time budget of {minutes} min reached at step {step}")
                break
    except KeyboardInterrupt:
        interrupted = True
        bar.write(f"interrupted after step {completed}: saving what was trained")
    bar.close()
    if unmeasured:
        warnings.warn(f"{unmeasured} of {step} batches had no measured depth pixel (all 0 / NaN): their ground-truth "
                      f"loss was 0", UserWarning, stacklevel=2)
    if n_acc:
        _log_mean(log, completed, acc, n_acc, t0)
    log["config"]["steps_done"] = completed
    log["config"]["seconds"] = time.time() - t0
    log["config"]["interrupted"] = interrupted
    variables = assemble(state, frozen)
    variables = {k: v for k, v in variables.items() if k != "quant" or v}
    if out is not None:
        save_run(out, model, preset, variables, log)
    return variables, log


def _log_mean(log: dict, step: int, acc: dict[str, float], n: int, t0: float) -> None:
    log["steps"].append(step)
    for k, v in acc.items():
        log.setdefault(k, []).append(v / n)
    log["time"].append(time.time() - t0)


_APPLY_CACHE: dict[int, Callable] = {}


def validate(model: Any, variables: dict, val: ArrayData, batch_size: int = 8) -> dict[str, float]:
    """Metrics of the model's predictions (input resized to the preset's native size, output upsampled to the
    gt size, no flip; metres and the ground-truth cap / PSNR peak in the preset's depth range) on ``val``."""
    from .. import metrics
    from ..inference import resize_batch, upsample_depth
    check_counts(batch_size=batch_size)
    if not val.has_depth:
        raise ValueError(f"val ({val.name}) has no depth maps: validation needs ground truth")
    from ..models import depth_range, to_metres
    preset = getattr(model, "preset", None)
    size = getattr(preset, "input_size", None)
    if id(model) not in _APPLY_CACHE:
        _APPLY_CACHE[id(model)] = jax.jit(lambda v, x: to_metres(model.apply(v, x, train=False), preset)[..., 0])
    apply = _APPLY_CACHE[id(model)]
    hi = depth_range(model)[1]
    acc = metrics.Accumulator(max_depth=hi, peak=hi)
    for s in range(0, len(val), batch_size):
        imgs, deps = val.batch(np.arange(s, min(s + batch_size, len(val))))
        pred = np.asarray(apply(variables, jnp.asarray(resize_batch(imgs, size), jnp.float32) / 255.0))
        acc.add(upsample_depth(pred, deps.shape[1:]), deps)
    return acc.result()


def save_run(out: Path, model: Any, preset: Any, variables: dict, log: dict) -> None:
    """The run folder: ``checkpoint/`` (with the model's plan), ``log.json``, ``loss.png``."""
    from ..io import atomic, checkpoint
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.save(out / "checkpoint", preset if preset is not None else model.preset, variables,
                    plan=getattr(model, "plan", None),
                    extra={"trained_by": "jaxdepth.train", "steps": log["steps"][-1] if log["steps"] else 0,
                           "input_size": log["config"]["input_size"], "config": log["config"]})
    atomic.write_json(out / "log.json", log)
    try:
        from .. import viz
        with atomic.replacing(out / "loss.png") as tmp:
            viz.loss_curve(log, tmp)
    except Exception as e:  # a figure must not kill a training run
        print(f"warning: loss curve not written: {e}", file=sys.stderr)
