"""Depth maps for images, from the exact model and (optionally) an approximate-multiplier model.

    python -m jaxdepth.predict                                   # bundled model on the bundled samples
    python -m jaxdepth.predict photos/ a.jpg --multiplier mul8s_1L2J --layers 'decoder.*' --out out/

Per image ``NAME`` in ``--out``:

- ``NAME_depth.npy`` (float32 metres, the input's size) and ``NAME_depth.png`` (plasma, 0-10 m, colour bar);
- with ``--multiplier``: those are the APPROXIMATE model's; the exact model's are ``NAME_exact_depth.npy`` /
  ``.png``, and ``NAME_compare.png`` shows input | exact | approximate | |difference|.

Images are resized to the model's native input size (recorded in the checkpoint; otherwise the image size
rounded down to a multiple of 32), and the depth is resized back to the image size. Unreadable images are
reported and skipped; the exit code is 1 when any image failed, 2 on usage errors (unknown model or
multiplier).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .cli.common import SAMPLES_DIR, CliError


@dataclass
class PredictResult:
    outputs: dict[str, list[Path]] = field(default_factory=dict)   # image -> files written
    failed: dict[str, str] = field(default_factory=dict)           # image -> error message
    seconds: dict[str, float] = field(default_factory=dict)        # image -> model time


def _model_size(native: Optional[tuple[int, int]], shape: Sequence[int]) -> tuple[int, int]:
    if native:
        return tuple(native)  # type: ignore[return-value]
    return max(32, shape[0] // 32 * 32), max(32, shape[1] // 32 * 32)


def predict_images(paths: Sequence[Path], out: Path, *, model_spec: Optional[str] = None,
                   multiplier: Optional[str] = None, layers: Sequence[str] = ("*",), flip: bool = False,
                   progress: bool = True, log=print) -> PredictResult:
    """Run the model on every image in ``paths`` and write the files listed in the module docstring."""
    from tqdm import tqdm

    from . import viz
    from .cli.common import exact_and_plan, input_size, load_model, make_plan, quantized
    from .data.transforms import resize_depth, resize_image
    from .evaluate import make_predictor
    from .io.images import ImageError, read_rgb

    plan = make_plan(multiplier, layers)      # fails early on unknown multipliers
    model, variables, info = load_model(model_spec)
    model, plan = exact_and_plan(model, plan)
    label = f"{multiplier} on {', '.join(layers)}" if multiplier else "stored plan"
    if info.get("random_weights"):
        log(f"warning: {model_spec} is a preset with random weights, not a trained checkpoint")
    native = input_size(model, info)
    res = PredictResult()
    images: dict[str, np.ndarray] = {}
    for p in paths:
        try:
            images[str(p)] = read_rgb(p)
        except ImageError as e:
            res.failed[str(p)] = str(e)
            log(f"error: {e}")
    if not images:
        return res
    exact_fns: dict[tuple[int, int], Any] = {}
    approx_fns: dict[tuple[int, int], Any] = {}
    qmodel = qvars = None
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(list(images.items()), desc="predicting", unit="img", disable=not progress, dynamic_ncols=True)
    for name, rgb in bar:
        try:
            size = _model_size(native, rgb.shape[:2])
            x = resize_image(rgb, size)[None]
            if size not in exact_fns:
                exact_fns[size] = make_predictor(model, variables, flip=flip, devices=None)
            t0 = time.time()
            exact = exact_fns[size](x)[0]
            if plan is not None:
                if qmodel is None:
                    calib = np.stack([resize_image(im, size) for im in images.values()]).astype(np.float32) / 255
                    qmodel, qvars = quantized(model, variables, plan, calib)
                if size not in approx_fns:
                    approx_fns[size] = make_predictor(qmodel, qvars, flip=flip)
                approx = approx_fns[size](x)[0]
            res.seconds[name] = time.time() - t0
            stem = Path(name).stem
            exact_full = resize_depth(exact, rgb.shape[:2])
            files: list[Path] = []
            main_depth = exact_full
            if plan is not None:
                main_depth = resize_depth(approx, rgb.shape[:2])
                np.save(out / f"{stem}_exact_depth.npy", exact_full.astype(np.float32))
                files += [out / f"{stem}_exact_depth.npy",
                          viz.depth_png(exact_full, out / f"{stem}_exact_depth.png", title=f"{stem}: exact"),
                          viz.comparison(rgb, exact_full, main_depth, out / f"{stem}_compare.png",
                                         titles=("input", "exact", label, "|difference| (m)"))]
            np.save(out / f"{stem}_depth.npy", main_depth.astype(np.float32))
            title = f"{stem}" + (f": {label}" if plan is not None else "")
            files = [out / f"{stem}_depth.npy", viz.depth_png(main_depth, out / f"{stem}_depth.png", title=title)] + files
            res.outputs[name] = files
            bar.write(f"{name}: {res.seconds[name]:.2f} s (model{', exact + approximate' if plan else ''}"
                      f"{', first call compiles' if len(res.seconds) == 1 else ''}), depth "
                      f"{float(main_depth.min()):.2f}-{float(main_depth.max()):.2f} m")
        except (ImageError, ValueError) as e:
            res.failed[name] = str(e)
            bar.write(f"error: {name}: {e}")
    return res


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jaxdepth.predict", formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("inputs", nargs="*", help="image files and/or folders (default: the bundled sample images)")
    ap.add_argument("--model", help="checkpoint folder or preset name (default: the bundled trained model)")
    ap.add_argument("--multiplier", help="approximate multiplier name or 256x256 table file (.npy/.npz)")
    ap.add_argument("--layers", nargs="+", default=["*"], metavar="PATTERN",
                    help="layer-name globs that use the multiplier (default: all layers)")
    ap.add_argument("--flip", action="store_true", help="average with the flipped image's prediction")
    ap.add_argument("--out", default="outputs/predict", help="output folder")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    from .io.images import find_images
    args = build_parser().parse_args(argv)
    inputs = args.inputs or [str(SAMPLES_DIR)]
    paths = find_images(inputs)
    if not paths:
        print(f"error: no images found in {', '.join(inputs)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        res = predict_images(paths, out, model_spec=args.model, multiplier=args.multiplier, layers=args.layers,
                             flip=args.flip, progress=not args.no_progress,
                             log=lambda m: print(m, file=sys.stderr))
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(res.outputs)} of {len(paths)} images done; outputs in {out.resolve()}")
    for name, files in res.outputs.items():
        print(f"  {name}: " + ", ".join(f.name for f in files))
    if res.failed:
        print(f"{len(res.failed)} failed:", file=sys.stderr)
        for name, err in res.failed.items():
            print(f"  {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
