"""Train a DenseDepth model on RGB-D data (by default the procedural synthetic rooms).

    python -m jaxdepth.train --preset mobilenetv2_lite --data /tmp/synth --out runs/lite --minutes 45

Loss (DenseDepth, Alhashim & Wonka 2018, Keras code): on the depth-norm target ``y = 10 / depth_m``
(the network's raw output convention) at the output resolution (half the input),

    loss = 0.1 * mean|y_hat - y| + clip((1 - SSIM(y_hat, y)) / 2, 0, 1) + mean(|dx y_hat - dx y| + |dy y_hat - dy y|)

with SSIM over an 11x11 Gaussian window (sigma 1.5) and ``L = 100`` (= the target range, as in the
reference code). Optimiser: optax Adam with warm-up + cosine decay. Augmentation: horizontal flip (p 0.5),
RGB channel permutation (p 0.25), brightness / contrast jitter. Checkpoints go through
`jaxdepth.io.checkpoint` (orbax); the run folder also gets ``log.json`` and ``loss.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

# ---------------------------------------------------------------------------------------------- loss


def _gaussian(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float32) - size // 2
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).astype(np.float32)


def _blur(x: jax.Array, g: np.ndarray) -> jax.Array:
    """Separable 'valid' Gaussian filter of (N, H, W, 1)."""
    k = len(g)
    kh = jnp.asarray(g.reshape(k, 1, 1, 1))
    kw = jnp.asarray(g.reshape(1, k, 1, 1))
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn)
    return jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn)


def ssim(a: jax.Array, b: jax.Array, val_range: float = 100.0) -> jax.Array:
    """Mean SSIM of two (N, H, W, 1) maps (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03)."""
    g = _gaussian()
    c1, c2 = (0.01 * val_range) ** 2, (0.03 * val_range) ** 2
    mu_a, mu_b = _blur(a, g), _blur(b, g)
    saa = _blur(a * a, g) - mu_a ** 2
    sbb = _blur(b * b, g) - mu_b ** 2
    sab = _blur(a * b, g) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return s.mean()


def image_gradients(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(dy, dx) forward differences of (N, H, W, C), zero in the last row / column (tf.image.image_gradients)."""
    dy = jnp.pad(x[:, 1:] - x[:, :-1], ((0, 0), (0, 1), (0, 0), (0, 0)))
    dx = jnp.pad(x[:, :, 1:] - x[:, :, :-1], ((0, 0), (0, 0), (0, 1), (0, 0)))
    return dy, dx


def depth_loss(pred: jax.Array, target: jax.Array, w_l1: float = 0.1, w_ssim: float = 1.0,
               w_grad: float = 1.0, val_range: float = 100.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DenseDepth loss of raw predictions vs depth-norm targets, both (N, h, w, 1): (total, parts)."""
    l1 = jnp.abs(pred - target).mean()
    l_ssim = jnp.clip((1.0 - ssim(pred, target, val_range)) * 0.5, 0.0, 1.0)
    pdy, pdx = image_gradients(pred)
    tdy, tdx = image_gradients(target)
    l_grad = (jnp.abs(pdy - tdy) + jnp.abs(pdx - tdx)).mean()
    total = w_l1 * l1 + w_ssim * l_ssim + w_grad * l_grad
    return total, {"l1": l1, "ssim": l_ssim, "grad": l_grad}


def depth_to_target(depth_m: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Metres (N, H, W) -> depth-norm targets ``10 / depth`` (N, h, w, 1) at the output size (block mean in metres)."""
    d = np.clip(np.asarray(depth_m, np.float32), 0.1, 10.0)
    n, h, w = d.shape
    oh, ow = out_hw
    if (h, w) != (oh, ow):
        if h % oh == 0 and w % ow == 0:
            d = d.reshape(n, oh, h // oh, ow, w // ow).mean(axis=(2, 4))
        else:
            from .data.transforms import resize_depth
            d = resize_depth(d, (oh, ow))
    return (10.0 / d)[..., None].astype(np.float32)


# ---------------------------------------------------------------------------------------------- data


def augment(images: np.ndarray, depths: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random horizontal flip (p 0.5), channel permutation (p 0.25), brightness/contrast jitter.

    ``images`` uint8 (N, H, W, 3) -> float32 in [0, 1]; ``depths`` (N, H, W) flipped alongside.
    """
    x = images.astype(np.float32) / 255.0
    d = np.array(depths, np.float32, copy=True)
    for i in range(len(x)):
        if rng.random() < 0.5:
            x[i], d[i] = x[i, :, ::-1], d[i, :, ::-1]
        if rng.random() < 0.25:
            x[i] = x[i][..., rng.permutation(3)]
        if rng.random() < 0.5:
            gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-0.08, 0.08)
            x[i] = np.clip((x[i] - 0.5) * gain + 0.5 + bias, 0.0, 1.0)
    return x, d


class ArrayData:
    """Random batches from arrays (memory-mapped ``.npy`` is fine): images uint8 (N,H,W,3), depths (N,H,W)."""

    def __init__(self, images: np.ndarray, depths: np.ndarray):
        if len(images) != len(depths):
            raise ValueError(f"{len(images)} images but {len(depths)} depth maps")
        self.images, self.depths = images, depths

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.sort(idx)
        return np.asarray(self.images[idx]), np.asarray(self.depths[idx])


def load_training_data(path: Optional[str], n: int, seed: int, size: tuple[int, int],
                       cache: Optional[str] = None) -> ArrayData:
    """A synthetic dataset folder (made with `jaxdepth.data.synthetic.write_dataset` when missing)."""
    from .data import synthetic
    folder = Path(path) if path else Path(cache or "/tmp/jaxdepth-synthetic") / f"train_s{seed}_n{n}_{size[0]}x{size[1]}"
    if not (folder / "meta.json").exists():
        print(f"rendering {n} synthetic frames into {folder} ...", file=sys.stderr)
        synthetic.write_dataset(folder, n, seed, *size, progress=True)
    from .data import load
    ds = load(str(folder))
    images, depths = ds.arrays()
    return ArrayData(images, depths)


# ---------------------------------------------------------------------------------------------- training


def make_train_step(model: Any, tx: optax.GradientTransformation, loss_kwargs: Optional[dict] = None) -> Callable:
    """jit-compiled ``(params, batch_stats, opt_state, x, y) -> (params, batch_stats, opt_state, loss, parts)``."""
    loss_kwargs = loss_kwargs or {}

    def loss_fn(params, batch_stats, x, y):
        out, upd = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                               mutable=["batch_stats"])
        loss, parts = depth_loss(out, y, **loss_kwargs)
        return loss, (parts, upd["batch_stats"])

    @jax.jit
    def step(params, batch_stats, opt_state, x, y):
        (loss, (parts, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, new_bs, opt_state, loss, parts

    return step


def make_optimizer(lr: float, steps: int, warmup: int = 200, weight_decay: float = 0.0) -> optax.GradientTransformation:
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, min(warmup, max(1, steps // 10)), max(steps, 2), lr * 0.02)
    opt = optax.adamw(sched, weight_decay=weight_decay) if weight_decay else optax.adam(sched)
    return optax.chain(optax.clip_by_global_norm(5.0), opt)


def train(model: Any, variables: dict, data: ArrayData, *, steps: int, batch_size: int = 8, lr: float = 3e-4,
          seed: int = 0, minutes: Optional[float] = None, out: Optional[Path] = None, preset: Any = None,
          log_every: int = 20, save_every: int = 500, val: Optional[ArrayData] = None, val_every: int = 0,
          progress: bool = True, extra: Optional[dict] = None) -> tuple[dict, dict]:
    """Train ``variables`` for ``steps`` (or until ``minutes`` pass): returns (variables, log).

    ``log``: {"steps": [...], "loss": [...], "l1": [...], "ssim": [...], "grad": [...], "time": [...],
    "val": [{"step", "delta1", ...}], "config": {...}}; written to ``out/log.json`` with ``out/loss.png``
    and checkpoints ``out/checkpoint`` (every ``save_every`` steps and at the end) when ``out`` is given.
    """
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    tx = make_optimizer(lr, steps)
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    step_fn = make_train_step(model, tx)
    h, w = data.images.shape[1:3]
    out_hw = (h // 2, w // 2)
    log: dict[str, Any] = {"steps": [], "loss": [], "l1": [], "ssim": [], "grad": [], "time": [], "val": [],
                           "config": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                                      "train_frames": len(data), "input_size": [h, w], **(extra or {})}}
    t0 = time.time()
    acc: dict[str, float] = {}
    n_acc = 0
    bar = tqdm(total=steps, desc="training", unit="step", disable=not progress, dynamic_ncols=True)
    order = rng.permutation(len(data))
    pos = 0
    step = 0
    for step in range(1, steps + 1):
        if pos + batch_size > len(order):
            order, pos = rng.permutation(len(data)), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        imgs, deps = data.batch(idx)
        x, d = augment(imgs, deps, rng)
        y = depth_to_target(d, out_hw)
        params, batch_stats, opt_state, loss, parts = step_fn(params, batch_stats, opt_state, jnp.asarray(x),
                                                              jnp.asarray(y))
        vals = {"loss": float(loss), **{k: float(v) for k, v in parts.items()}}
        if not math.isfinite(vals["loss"]):
            raise FloatingPointError(f"loss became {vals['loss']} at step {step}")
        for k, v in vals.items():
            acc[k] = acc.get(k, 0.0) + v
        n_acc += 1
        bar.update(1)
        if step % log_every == 0 or step == steps:
            log["steps"].append(step)
            for k in ("loss", "l1", "ssim", "grad"):
                log[k].append(acc[k] / n_acc)
            log["time"].append(time.time() - t0)
            bar.set_postfix(loss=f"{acc['loss'] / n_acc:.4f}")
            acc, n_acc = {}, 0
        cur = {"params": params, "batch_stats": batch_stats}
        if val is not None and val_every and step % val_every == 0:
            r = validate(model, cur, val)
            log["val"].append({"step": step, **r})
            bar.write(f"step {step}: val delta1 {r['delta1']:.4f} abs_rel {r['abs_rel']:.4f} rmse {r['rmse']:.3f}")
        if out is not None and (step % save_every == 0):
            _save(out, model, preset, cur, log)
        if minutes is not None and time.time() - t0 > 60 * minutes:
            bar.write(f"time budget of {minutes} min reached at step {step}")
            break
    bar.close()
    log["config"]["steps_done"] = step
    log["config"]["seconds"] = time.time() - t0
    variables = {"params": params, "batch_stats": batch_stats}
    if out is not None:
        _save(out, model, preset, variables, log)
    return variables, log


_APPLY_CACHE: dict[int, Callable] = {}


def validate(model: Any, variables: dict, val: ArrayData, batch_size: int = 8) -> dict[str, float]:
    """Metrics of the model's predictions (input resized to the preset's native size, output upsampled to the
    gt size, no flip) on ``val``."""
    from . import metrics
    from .evaluate import resize_batch, upsample_depth
    from .models import to_metres
    size = getattr(getattr(model, "preset", None), "input_size", None)
    if id(model) not in _APPLY_CACHE:
        _APPLY_CACHE[id(model)] = jax.jit(lambda v, x: to_metres(model.apply(v, x, train=False))[..., 0])
    apply = _APPLY_CACHE[id(model)]
    acc = metrics.Accumulator()
    for s in range(0, len(val), batch_size):
        imgs, deps = val.batch(np.arange(s, min(s + batch_size, len(val))))
        pred = np.asarray(apply(variables, jnp.asarray(resize_batch(imgs, size), jnp.float32) / 255.0))
        acc.add(upsample_depth(pred, deps.shape[1:]), deps)
    return acc.result()


def _save(out: Path, model: Any, preset: Any, variables: dict, log: dict) -> None:
    from .io import checkpoint
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.save(out / "checkpoint", preset if preset is not None else model.preset, variables,
                    extra={"trained_by": "jaxdepth.train", "steps": log["steps"][-1] if log["steps"] else 0,
                           "input_size": log["config"]["input_size"], "config": log["config"]})
    (out / "log.json").write_text(json.dumps(log, indent=1))
    try:
        from . import viz
        viz.loss_curve(log, out / "loss.png")
    except Exception as e:  # a figure must not kill a training run
        print(f"warning: loss curve not written: {e}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jaxdepth.train", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--preset", default="mobilenetv2_lite", help="model preset to train from scratch")
    ap.add_argument("--init", help="start from this checkpoint instead of a fresh preset")
    ap.add_argument("--data", help="synthetic dataset folder (images.npy, depths.npy, meta.json); "
                                   "rendered into --cache when omitted")
    ap.add_argument("--frames", type=int, default=1000, help="frames to render when --data is omitted")
    ap.add_argument("--cache", default="/tmp/jaxdepth-synthetic", help="where rendered datasets are cached")
    ap.add_argument("--val", help="held-out dataset folder for periodic validation")
    ap.add_argument("--val-every", type=int, default=0, help="validate every N steps (0: only at the end)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--minutes", type=float, help="stop after this many minutes (checkpoint is still written)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                    help="training input size (default: the preset's native size, else 240 320)")
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--out", default="runs/train", help="run folder: checkpoint/, log.json, loss.png")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from . import models
    from .io import checkpoint
    if args.init:
        model, variables, _ = checkpoint.load(args.init)
        preset = model.preset
    else:
        try:
            preset = models.get_preset(args.preset)
        except (KeyError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        model = models.build(preset)
        variables = models.init_variables(model, args.seed)
    size = tuple(args.size) if args.size else (tuple(preset.input_size) if preset.input_size else (240, 320))
    if preset.input_size is None or tuple(preset.input_size) != size:
        preset = models.get_preset(preset, input_size=size)   # the checkpoint records its native input size
        model = model.clone(preset=preset)
    try:
        data = load_training_data(args.data, args.frames, args.seed, size, args.cache)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if data.images.shape[1:3] != size:
        print(f"error: dataset frames are {data.images.shape[1:3]}, training size is {size}", file=sys.stderr)
        return 2
    val = None
    if args.val:
        from .data import load
        vi, vd = load(args.val).arrays()
        val = ArrayData(vi, vd)
    out = Path(args.out)
    print(f"training {preset.name} on {len(data)} frames at {size[0]}x{size[1]}, "
          f"{models.count_params(variables) / 1e6:.2f}M params -> {out}")
    variables, log = train(model, variables, data, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                           seed=args.seed, minutes=args.minutes, out=out, preset=preset,
                           save_every=args.save_every, val=val, val_every=args.val_every,
                           progress=not args.no_progress, extra={"preset": preset.name, "data": args.data, "init": args.init})
    if val is not None:
        r = validate(model, variables, val)
        log["val"].append({"step": log["config"]["steps_done"], **r})
        _save(out, model, preset, variables, log)
        print(f"held-out: delta1 {r['delta1']:.4f} abs_rel {r['abs_rel']:.4f} rmse {r['rmse']:.3f} m")
    print(f"checkpoint: {out / 'checkpoint'}\nlog: {out / 'log.json'}\nloss curve: {out / 'loss.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
