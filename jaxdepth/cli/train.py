"""Train a DenseDepth model, or fine-tune a checkpoint for an approximate-multiplier plan.

    python -m jaxdepth.train --data /tmp/synth --size 120 160 --steps 900 --out runs/lite        # from scratch
    python -m jaxdepth.train --init ckpt --plan mul8s_1L2J --data /tmp/synth --val /tmp/val --out runs/ft
    python -m jaxdepth.train --init ckpt --plan '{"decoder.*": "mul8s_1L2J"}' --data photos/ --out runs/kd

Fine-tuning (``--plan``): the forward runs bit-exactly through the plan's LUT kernels, the backward is the
exact float layer's (straight-through estimator). With ground truth the target is the DenseDepth loss; a
folder of plain images (or ``--target teacher``) distils from the exact model (the float ``--init`` model,
or ``--teacher``). The run folder gets ``checkpoint/`` (records the plan: predict / evaluate use it as is),
``log.json``, ``loss.png`` and, with ``--val``, ``report.json`` + ``report.png`` (exact, approximate before
and after, vs ground truth and vs the exact model).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from . import common
from .common import CliError

DESCRIPTION = __doc__.split("\n\n")[0]


DEFAULT_PRESET = "mobilenetv2_lite"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jaxdepth.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 parents=[common.parent_parser("out", "progress", "compile_cache", out_default="runs/train",
                                                               out_help="run folder: checkpoint/, log.json, loss.png, report.*")])
    g = ap.add_argument_group("model")
    g.add_argument("--preset", default=None,
                   help=f"model preset to train from scratch (default {DEFAULT_PRESET}; not with --init)")
    g.add_argument("--init", help="start from this checkpoint folder (required with --plan)")
    g.add_argument("--plan", help="fine-tune for this plan: a multiplier name (every layer), a JSON object of "
                                  "layer glob -> multiplier (first match wins), or a .json file")
    g.add_argument("--trainable", choices=("all", "decoder", "bn"), default="all",
                   help="what is trained: every weight, the decoder only, or BatchNorm scales + biases only")
    g.add_argument("--ranges", choices=("keep", "calibrate", "learn"), default=None,
                   help="with --plan: activation ranges of the plan's layers: keep the checkpoint's, calibrate on "
                        "training frames (default), or calibrate then learn them (LSQ-style scale gradient)")
    g.add_argument("--range-lr", type=float, default=2e-3, help="Adam step for learned log-ranges")
    g.add_argument("--calib-frames", type=int, default=32, help="training frames used for calibration")
    d = ap.add_argument_group("data and targets")
    d.add_argument("--data", help="training data: a dataset jaxdepth.evaluate reads (synthetic folder, npz, NYU, "
                                  "RGB-D folder), a folder of plain images (distillation), or synthetic:N[:SEED] "
                                  "to render; omitted: --frames synthetic rooms rendered into --cache")
    d.add_argument("--frames", type=int, default=1000, help="frames rendered when --data is omitted")
    d.add_argument("--cache", default="/tmp/jaxdepth-synthetic", help="where omitted-data renders are cached")
    d.add_argument("--target", choices=("auto", "gt", "teacher", "both"), default="auto",
                   help="gt: DenseDepth loss vs ground truth; teacher: distil the exact model; both: sum; "
                        "auto: gt when the data has depth, else teacher")
    d.add_argument("--teacher", help="teacher checkpoint (default: the --init model in float)")
    d.add_argument("--teacher-weight", type=float, default=1.0, help="weight of the teacher term with --target both")
    d.add_argument("--val", help="held-out data for validation and the before/after report")
    d.add_argument("--val-limit", type=int, default=64, help="frames of --val used")
    d.add_argument("--val-every", type=int, default=0, help="validate every N steps (0: only at the end)")
    t = ap.add_argument_group("optimisation")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--minutes", type=float, help="stop after this many minutes (the checkpoint is still written)")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-4; 1e-4 with --plan)")
    t.add_argument("--warmup", type=int, default=200, help="warm-up steps (at most a tenth of --steps)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="training input size (default: the model's native size, else 240 320)")
    t.add_argument("--save-every", type=int, default=500)
    t.add_argument("--log-every", type=int, default=10, help="loss curve point every N steps (mean over them)")
    return ap


def _parse_plan(text: str) -> Any:
    """--plan: JSON object, a .json file, or a multiplier name for every layer."""
    s = text.strip()
    if s.startswith("{") or s.startswith("["):
        try:
            return json.loads(s)
        except json.JSONDecodeError as e:
            raise CliError(f"--plan is not valid JSON ({e.msg} at column {e.colno})") from None
    p = Path(s)
    if p.suffix == ".json":
        if not p.is_file():
            raise CliError(f"--plan file {s} does not exist")
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CliError(f"--plan file {s}: {e}") from None
    from .. import multipliers
    try:
        multipliers.get(s)
    except KeyError as e:
        raise CliError(str(e.args[0]) if e.args else str(e)) from None
    return {"*": s}


def _check_out(out: Path) -> Path:
    """--out: a writable folder that is empty or an earlier training run (never someone's other files)."""
    if out.is_dir() and any(out.iterdir()) and not (out / "log.json").exists() and not (out / "checkpoint").exists():
        raise CliError(f"--out {out} is a non-empty folder that is not a training run; choose another")
    return common.check_out_dir(out)


def _checkpoint_preset(path: str, flag: str) -> Any:
    from ..io import checkpoint
    from ..models import Preset
    if not Path(path).exists():
        raise CliError(f"{flag} {path} does not exist")
    try:
        return Preset.from_dict(checkpoint.read_info(path)["preset"])
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CliError(f"{flag} {path}: {e}") from None


#: Smallest --size side: the encoders downsample 32x (DenseNet-161 fails on 7x9 inputs).
MIN_SIDE = 32


def _check_numbers(args: argparse.Namespace) -> None:
    """The numeric options' ranges (CliError naming the option), by `train`'s own checks, before any work:
    rates finite and positive, counts >= 1, offsets >= 0; and --size sides >= MIN_SIDE."""
    from ..checks import check_counts, check_rates

    rates = {"--lr": args.lr, "--range-lr": args.range_lr, "--minutes": args.minutes}
    try:
        check_rates(**{flag: v for flag, v in rates.items() if v is not None})
        check_rates(0.0, **{"--teacher-weight": args.teacher_weight})
        check_counts(**{"--steps": args.steps, "--batch-size": args.batch_size, "--calib-frames": args.calib_frames,
                        "--frames": args.frames, "--val-limit": args.val_limit, "--save-every": args.save_every,
                        "--log-every": args.log_every})
        check_counts(0, **{"--warmup": args.warmup, "--val-every": args.val_every})
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.size and min(args.size) < MIN_SIDE:
        raise CliError(f"--size {args.size[0]} {args.size[1]}: each side must be >= {MIN_SIDE} pixels")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Check everything, then train; returns {"out", "log", "report"?}."""
    import numpy as np

    from .. import models
    from .. import training as T
    from ..io import checkpoint

    # ---- checks before any work -----------------------------------------------------------------------------
    _check_numbers(args)
    plan = _parse_plan(args.plan) if args.plan else None
    if plan is not None and not args.init:
        raise CliError("--plan fine-tunes a trained model: give the checkpoint with --init")
    if args.init and args.preset:
        raise CliError(f"--preset {args.preset} is for training from scratch; --init {args.init} brings its own")
    if args.ranges is not None and plan is None:
        raise CliError(f"--ranges {args.ranges} sets the activation ranges of a --plan; there is no --plan")
    if args.teacher and args.target == "gt":
        raise CliError("--teacher is used with --target teacher or both; the target is gt")
    args.preset = args.preset or DEFAULT_PRESET
    args.ranges = args.ranges or "calibrate"
    init_preset = _checkpoint_preset(args.init, "--init") if args.init else None
    teacher_preset = _checkpoint_preset(args.teacher, "--teacher") if args.teacher else None
    if teacher_preset is not None:
        try:
            T.check_teacher(init_preset or models.get_preset(args.preset), teacher_preset)
        except T.FinetuneError as e:
            raise CliError(str(e)) from None
    for flag, spec in (("--data", args.data), ("--val", args.val)):
        if spec:
            try:
                T.check_spec(spec)
            except T.TrainingDataError as e:
                raise CliError(str(e).replace("--data", flag)) from None
    if args.init:
        model, variables, info = checkpoint.load(args.init)
        preset = model.preset
        model = model.clone(plan=models.FLOAT_PLAN)
    else:
        try:
            preset = models.get_preset(args.preset)
        except (KeyError, ValueError) as e:
            raise CliError(str(e.args[0]) if e.args else str(e)) from None
        model, info = models.build(preset), {}
        variables = models.init_variables(model, args.seed)
    size = tuple(args.size) if args.size else (
        tuple(preset.input_size) if preset.input_size else
        tuple((info.get("extra") or {}).get("input_size") or (240, 320)))
    if preset.input_size is None or tuple(preset.input_size) != size:
        preset = models.get_preset(preset, input_size=size)   # the checkpoint records its native input size
        model = model.clone(preset=preset)
    if plan is not None:
        try:
            plan = T.check_plan(model, plan, (1, *size, 3))
        except T.FinetuneError as e:
            raise CliError(str(e)) from None
    if args.target in ("teacher", "both") and plan is None and not args.teacher:
        raise CliError(f"--target {args.target} needs a teacher: --plan (the float --init model teaches) or --teacher")
    out = _check_out(Path(args.out))

    # ---- data ------------------------------------------------------------------------------------------------
    try:
        data = (T.open_data(args.data, size) if args.data else T.render_default(args.frames, args.seed, size, args.cache))
        val = T.open_data(args.val, size, limit=args.val_limit) if args.val else None
    except T.TrainingDataError as e:
        raise CliError(str(e)) from None
    target = args.target if args.target != "auto" else ("gt" if data.has_depth else "teacher")
    if args.teacher and target == "gt":     # --target auto on data with depth (an explicit gt was refused above)
        raise CliError("--teacher is used with --target teacher or both; the target is gt (auto: the data has depth)")
    if target != "teacher" and not data.has_depth:
        raise CliError(f"--data {args.data} has no depth maps: use --target teacher (distillation)")

    # ---- models ------------------------------------------------------------------------------------------------
    teacher = teacher_vars = None
    if target != "gt":
        if args.teacher:
            tmodel, teacher_vars, _ = checkpoint.load(args.teacher, plan=models.FLOAT_PLAN)
            teacher = tmodel.clone(preset=preset)
        else:
            teacher, teacher_vars = model, {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    exact = (model, {k: v for k, v in variables.items() if k in ("params", "batch_stats")})
    student, svars = model, variables
    if plan is not None:
        n_cal = max(1, min(args.calib_frames, len(data)))
        calib = np.asarray(data.images[:n_cal], np.float32) / 255.0
        print(f"calibrating the plan's activation ranges on {n_cal} frames ({args.ranges}) ...", file=sys.stderr)
        try:
            student, svars = T.prepare_student(model, variables, plan, calib, args.ranges)
        except T.FinetuneError as e:
            raise CliError(str(e)) from None
    before = (student, svars)
    lr = args.lr if args.lr is not None else (1e-4 if plan is not None else 3e-4)
    what = f"fine-tuning {preset.name} for plan {plan.to_json()['rules']}" if plan is not None else f"training {preset.name}"
    print(f"{what} on {len(data)} frames at {size[0]}x{size[1]} (target {target}, trainable {args.trainable}, "
          f"{models.count_params(variables) / 1e6:.2f}M params) -> {out}")
    try:
        variables, log = T.train(student, svars, data, steps=args.steps, batch_size=args.batch_size, lr=lr,
                                 seed=args.seed, minutes=args.minutes, out=out, preset=preset,
                                 save_every=args.save_every, log_every=args.log_every,
                                 val=val if val is not None and val.has_depth else None,
                                 val_every=args.val_every, progress=not args.no_progress,
                                 trainable=args.trainable, learn_ranges=plan is not None and args.ranges == "learn",
                                 range_lr=args.range_lr, target=target, teacher=teacher,
                                 teacher_variables=teacher_vars, teacher_weight=args.teacher_weight,
                                 warmup=args.warmup,
                                 extra={"preset": preset.name, "data": args.data, "init": args.init,
                                        "teacher": args.teacher, "ranges": args.ranges if plan is not None else None})
    except FloatingPointError as e:     # a diverging run: the options' fault, said in one line
        raise CliError(f"training diverged ({e}): lower --lr (at {lr:g} now); checkpoints saved before it, if "
                       f"any, are in {out}") from None
    result: dict[str, Any] = {"out": out, "log": log}
    if log["config"]["interrupted"]:    # Ctrl-C: what was trained is saved; no held-out report after it
        return result
    if val is not None:
        if plan is not None:
            res = T.before_after(exact, before, (student, variables), val, input_size=size,
                                 progress=not args.no_progress)
            T.write_report(out, res, log, title=f"{preset.name}, plan {plan.to_json()['rules']}")
            result["report"] = res
        elif val.has_depth:
            r = T.validate(student, variables, val)
            log["val"].append({"step": log["config"]["steps_done"], **r})
            T.save_run(out, student, preset, variables, log)
            result["val"] = r
    return result


def _main(args: argparse.Namespace, done: common.Done) -> int:
    result = run(args)
    out = result["out"]
    config = result["log"]["config"]
    if config["interrupted"]:            # saved; reported as an interruption (exit 130), not as a finished run
        print(f"checkpoint: {out / 'checkpoint'}\nlog: {out / 'log.json'}")
        done.what, done.total, done.count = "training steps", args.steps, config["steps_done"]
        done.note = f"the checkpoint of step {config['steps_done']} is saved in {out / 'checkpoint'}"
        raise KeyboardInterrupt
    if "report" in result:
        from ..training import format_report
        print(format_report(result["report"]))
        print(f"report: {out / 'report.json'}, {out / 'report.png'}")
    if "val" in result:
        r = result["val"]
        print(f"held-out: delta1 {r['delta1']:.4f} abs_rel {r['abs_rel']:.4f} rmse {r['rmse']:.3f} m")
    print(f"checkpoint: {out / 'checkpoint'}\nlog: {out / 'log.json'}\nloss curve: {out / 'loss.png'}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    return common.run(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
