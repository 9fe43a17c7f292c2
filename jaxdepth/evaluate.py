"""Evaluate depth models: accuracy against ground truth and fidelity of an approximate model to the exact one.

Protocol (DenseDepth's NYU Depth v2 evaluation, generalised to any size):

1. the RGB frame is resized to the model's native input size (when the checkpoint records one);
2. prediction = mean of the prediction and the flipped prediction of the horizontally flipped input
   (in metres, after ``clip(10 / raw, 0.1, 10)``);
3. bilinear upsampling (x2 for DenseDepth at native size) to the ground-truth size;
4. metrics inside the evaluation crop (Eigen crop [20:459, 24:615] for NYU) over pixels with valid
   ground truth, pooled over all pixels of all images (``--mean images`` averages per image instead).

Fidelity: the same metrics with the EXACT model's depth map as the reference (every pixel of the crop),
plus depth PSNR (peak 10 m). Batches are sharded over all JAX devices (1-D mesh on the batch axis; the
last batch is padded), so ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` or several accelerators
split the work.

    python -m jaxdepth.evaluate --data nyu_test.zip --model ckpt --multiplier mul8s_1L2J --out results/
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import metrics as M

Predictor = Callable[[np.ndarray], np.ndarray]


def upsample_depth(depth: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Model-resolution depth (N, h, w) -> (N, H, W), bilinear with half-pixel centres."""
    from .data.transforms import resize_depth
    return resize_depth(depth, tuple(size))


def resize_batch(images: np.ndarray, size: Optional[Sequence[int]]) -> np.ndarray:
    """uint8 (N, H, W, 3) -> uint8 (N, h, w, 3) (PIL bilinear); unchanged when ``size`` is None or equal."""
    from .data.transforms import resize_image
    if size is None or tuple(images.shape[1:3]) == tuple(size):
        return images
    return np.stack([resize_image(im, tuple(size)) for im in images])


def make_predictor(model: Any, variables: dict, *, flip: bool = True, devices: Optional[list] = None,
                   input_size: Optional[Sequence[int]] = None) -> Predictor:
    """``predict(images uint8 (N, H, W, 3)) -> metres float32 (N, h, w)`` at the model's output resolution.

    Inputs are resized to ``input_size`` (when given), scaled to [0, 1] and run with ``flip`` averaging.
    The batch is sharded over ``devices`` (default: all JAX devices) with a `NamedSharding` over a 1-D
    mesh ("batch"); variables are replicated; a batch that does not divide is padded (and the padding
    dropped from the result). One compilation per input shape.
    """
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from .models import to_metres

    devices = list(devices if devices is not None else jax.devices())
    mesh = Mesh(np.array(devices), ("batch",))
    data_sharding = NamedSharding(mesh, P("batch"))
    replicated = NamedSharding(mesh, P())
    variables = jax.device_put(variables, replicated)

    def run(v, x):
        x = x.astype(jnp.float32) / 255.0
        if flip:
            both = jnp.concatenate([x, x[:, :, ::-1]], axis=0)
            m = to_metres(model.apply(v, both))[..., 0]
            n = x.shape[0]
            return 0.5 * (m[:n] + m[n:, :, ::-1])
        return to_metres(model.apply(v, x))[..., 0]

    fn = jax.jit(run, in_shardings=(replicated, data_sharding), out_shardings=data_sharding)
    n_dev = len(devices)

    def predict(images: np.ndarray) -> np.ndarray:
        images = resize_batch(np.asarray(images, np.uint8), input_size)
        n = len(images)
        pad = (-n) % n_dev
        if pad:
            images = np.concatenate([images, np.repeat(images[-1:], pad, axis=0)])
        x = jax.device_put(images, data_sharding)
        return np.asarray(fn(variables, x))[:n]

    predict.n_devices = n_dev  # type: ignore[attr-defined]
    return predict


def evaluate(predict: Predictor, dataset: Any, *, reference: Optional[Predictor] = None, batch_size: int = 8,
             limit: Optional[int] = None, mean: str = "pixels", max_depth: Optional[float] = 10.0,
             progress: bool = False, keep: int = 0) -> dict[str, Any]:
    """Metrics of ``predict`` on ``dataset`` (a `jaxdepth.data.Dataset` or an iterable of (rgb, depth, crop)).

    Returns ``{"accuracy": metrics vs gt, "frames": n, "seconds": s}``; with ``reference`` (the exact model)
    also ``"reference_accuracy"`` (its metrics vs gt) and ``"fidelity"`` (``predict`` vs ``reference``,
    PSNR included). ``keep`` > 0 also returns the first ``keep`` (rgb, gt, pred, ref) frames under
    ``"examples"`` for figures.
    """
    from tqdm import tqdm
    it = dataset.batches(batch_size, limit) if hasattr(dataset, "batches") else dataset
    total = (min(limit, len(dataset)) if limit else len(dataset)) if hasattr(dataset, "__len__") else None
    acc = M.Accumulator(mean, max_depth=max_depth)
    ref_acc = M.Accumulator(mean, max_depth=max_depth) if reference is not None else None
    fid = M.Accumulator(mean) if reference is not None else None
    examples: list[tuple] = []
    n = 0
    t0 = time.time()
    bar = tqdm(total=total, desc="evaluating", unit="img", disable=not progress, dynamic_ncols=True)
    for rgb, gt, crop in it:
        gt = np.asarray(gt, np.float32)
        cmask = M.crop_mask(gt.shape, crop)
        pred = upsample_depth(predict(rgb), gt.shape[1:])
        acc.add(pred, gt, cmask)
        ref = None
        if reference is not None:
            ref = upsample_depth(reference(rgb), gt.shape[1:])
            ref_acc.add(ref, gt, cmask)
            fid.add(pred, ref, cmask)
        for i in range(len(rgb)):
            if len(examples) < keep:
                examples.append((rgb[i], gt[i], pred[i], None if ref is None else ref[i]))
        n += len(rgb)
        bar.update(len(rgb))
    bar.close()
    if n == 0:
        raise ValueError("the dataset yielded no frames")
    out: dict[str, Any] = {"accuracy": acc.result(), "frames": n, "seconds": time.time() - t0}
    if reference is not None:
        out["reference_accuracy"] = ref_acc.result()
        out["fidelity"] = fid.result()
    if keep:
        out["examples"] = examples
    return out


# ---------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m jaxdepth.evaluate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Depth metrics (delta1/2/3, abs_rel, sq_rel, rmse, rmse_log, log10, PSNR) of a model on "
                    "an RGB-D dataset, and of an approximate-multiplier model against the exact one.",
        epilog="data formats (auto-detected): DenseDepth nyu_test.zip or its folder of eigen_test_*.npy; the\n"
               "NYU Depth v2 labeled .mat; an .npz with images/depths; a folder of NAME.png + NAME_depth.png\n"
               "(16-bit mm) / NAME_depth.npy (metres) or rgb/ + depth/; a synthetic dataset folder; or\n"
               "synthetic:N[:SEED[:HxW]] to render N held-out rooms (default synthetic:32:1000).")
    ap.add_argument("--data", default="synthetic:32:1000", help="dataset path or synthetic:N[:SEED[:HxW]]")
    ap.add_argument("--format", default="auto", help="force a format: nyu_test, nyu_mat, npz, folder, synthetic")
    ap.add_argument("--model", help="checkpoint folder or preset name (default: the bundled model)")
    ap.add_argument("--multiplier", help="approximate multiplier name (python -m jaxdepth.multipliers lists "
                                         "them) or a 256x256 table .npy; compared with the exact model")
    ap.add_argument("--layers", nargs="+", default=["*"], metavar="PATTERN",
                    help="layer-name globs that use the multiplier (e.g. 'decoder.*')")
    ap.add_argument("--limit", type=int, help="evaluate only the first N frames")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--no-flip", action="store_true", help="skip flip averaging")
    ap.add_argument("--mean", choices=("pixels", "images"), default="pixels",
                    help="pool all valid pixels, or average per-image metrics")
    ap.add_argument("--calib-frames", type=int, default=8,
                    help="frames of the data used to calibrate quantization when the checkpoint has none")
    ap.add_argument("--out", help="folder for metrics.json and metrics.png (+ an example comparison figure)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def run(args: argparse.Namespace) -> dict[str, Any]:
    from .cli.common import exact_and_plan, input_size, load_model, make_plan, quantized
    from .data import load
    from .data.loaders import DataError
    plan = make_plan(args.multiplier, args.layers)
    try:
        ds = load(args.data, args.format)
    except (DataError, FileNotFoundError, OSError) as e:
        from .cli.common import CliError
        raise CliError(str(e)) from None
    model, variables, info = load_model(args.model)
    model, plan = exact_and_plan(model, plan)
    size = input_size(model, info)
    if info.get("random_weights"):
        print(f"warning: {args.model} has random weights (a preset name, not a checkpoint)", file=sys.stderr)
    exact = make_predictor(model, variables, flip=not args.no_flip, input_size=size)
    predict, reference = exact, None
    if plan is not None:
        calib = np.concatenate([b[0] for b in ds.batches(args.calib_frames, args.calib_frames)])
        calib = resize_batch(calib, size).astype(np.float32) / 255.0
        qmodel, qvars = quantized(model, variables, plan, calib)
        predict, reference = make_predictor(qmodel, qvars, flip=not args.no_flip, input_size=size), exact
    res = evaluate(predict, ds, reference=reference, batch_size=args.batch_size, limit=args.limit, mean=args.mean,
                   progress=not args.no_progress, keep=1 if args.out else 0)
    res["config"] = {"data": args.data, "format": ds.format, "model": args.model or "default",
                     "preset": getattr(getattr(model, "preset", None), "name", type(model).__name__), "input_size": size, "multiplier": args.multiplier,
                     "layers": args.layers if plan else None, "flip": not args.no_flip, "mean": args.mean,
                     "crop": ds.crop, "devices": getattr(exact, "n_devices", 1)}
    return res


def report(res: dict[str, Any], out: Optional[str]) -> str:
    rows = {("approximate" if "fidelity" in res else "model") + " vs gt": res["accuracy"]}
    if "fidelity" in res:
        rows = {"exact vs gt": res["reference_accuracy"], **rows, "approx vs exact": res["fidelity"]}
    table = M.format_table(rows)
    if out:
        from . import viz
        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        ex = res.pop("examples", [])
        (o / "metrics.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
        viz.metrics_bars(rows, o / "metrics.png", title=f"{res['config']['data']} ({res['frames']} frames)")
        if ex:
            rgb, gt, pred, ref = ex[0]
            if ref is not None:
                viz.comparison(rgb, ref, pred, o / "example.png")
            else:
                viz.comparison(rgb, gt, pred, o / "example.png", titles=("input", "ground truth", "prediction",
                                                                          "|difference|"))
        table += f"\n\nwrote {o / 'metrics.json'}, {o / 'metrics.png'}"
    return table


def main(argv: Optional[list[str]] = None) -> int:
    from .cli.common import CliError
    args = build_parser().parse_args(argv)
    try:
        res = run(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{res['frames']} frames in {res['seconds']:.1f} s on {res['config']['devices']} device(s)")
    print(report(res, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
