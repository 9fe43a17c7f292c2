"""Depth maps for images, from the exact model and (optionally) an approximate-multiplier model.

    jaxdepth-predict                                    # bundled model on the bundled samples
    jaxdepth-predict photos/ a.jpg --multiplier mul8s_1L2J --layers 'decoder.*' --out out/
    jaxdepth-predict a.jpg --multiplier my_table.npy --unsigned      (same as python -m jaxdepth.predict)

Per image NAME in --out:

- NAME_depth.npy (float32 metres, the input's size) and NAME_depth.png (plasma, 0 to the model's maximum
  depth: 10 m for NYU models, 80 m for densedepth_kitti; colour bar);
- with --multiplier: those are the APPROXIMATE model's; the exact model's are NAME_exact_depth.npy /
  .png, and NAME_compare.png shows input | exact | approximate | |difference|. Files of an earlier run
  that this run does not write for NAME (e.g. NAME_compare.png without --multiplier) are removed.

Images are resized to the model's native input size (recorded in the checkpoint; otherwise the image size
rounded down to a multiple of 32), and the depth is resized back to the image size (--max-side caps it).
Every file is written atomically, and one image's files are replaced together. Exit codes: 0 done; 1 some
images failed (unreadable, NaN depth; the others are still done); 2 bad usage (unknown model, multiplier or
layer pattern, unwritable --out, an input that does not exist, no readable image among the inputs, two
inputs with the same name stem ...), nothing written (the same file given twice is predicted once); 130 interrupted (finished images are complete).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .. import inference
from . import common
from .common import SAMPLES_DIR, CliError

#: Inputs above this many pixels get a warning (an 8000x8000 image makes a 256 MB depth .npy).
LARGE_IMAGE_PIXELS = 4096 * 4096
#: Every file predict may write for an image NAME (the stale ones among them are removed).
OUTPUT_SUFFIXES = ("_depth.npy", "_depth.png", "_exact_depth.npy", "_exact_depth.png", "_compare.png")


@dataclass
class PredictResult:
    outputs: dict[str, list[Path]] = field(default_factory=dict)   # image -> files written
    failed: dict[str, str] = field(default_factory=dict)           # image -> error message
    seconds: dict[str, float] = field(default_factory=dict)        # image -> model time
    warnings: list[str] = field(default_factory=list)


def downscale(rgb: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    """``rgb`` shrunk (aspect kept) so its longer side is at most ``max_side`` (unchanged when None / fits)."""
    if not max_side or max(rgb.shape[:2]) <= max_side:
        return rgb
    from ..data.transforms import resize_image
    s = max_side / max(rgb.shape[:2])
    return resize_image(rgb, (max(1, round(rgb.shape[0] * s)), max(1, round(rgb.shape[1] * s))))


def predict_images(paths: Sequence[Path], out: Path, *, model_spec: Optional[str] = None,
                   multiplier: Optional[str] = None, layers: Optional[Sequence[str]] = None,
                   signed: Optional[bool] = None, flip: bool = False, max_side: Optional[int] = None,
                   compensate: bool = False, progress: bool = True, log=print,
                   done: Optional[common.Done] = None) -> PredictResult:
    """Run the model on every image in ``paths`` and write the files listed in the module docstring.

    Usage errors (CliError) are raised before any file is written; per-image failures are collected.
    ``compensate``: error compensation of the approximate model (`jaxdepth.models.compensate`, measured on
    the images being predicted, which are also its calibration images)."""
    plan = common.make_plan(multiplier, layers, signed)      # fails early on unknown multipliers / tables
    common.check_compensate(compensate, plan, stored_plan_possible=bool(model_spec))   # before any work
    out = common.check_out_dir(out)
    from tqdm import tqdm

    from .. import viz
    from ..io.atomic import replacing_all
    from ..models import depth_range
    from ..io.images import ImageError, read_rgb
    res = PredictResult()
    images: dict[str, np.ndarray] = {}
    for p in paths:
        try:
            rgb = read_rgb(p)
        except ImageError as e:
            res.failed[str(p)] = str(e)
            continue
        h, w = rgb.shape[:2]
        if h * w > LARGE_IMAGE_PIXELS and not max_side:
            msg = (f"warning: {p} is {w}x{h} ({h * w / 1e6:.0f} MP): its depth .npy alone is "
                   f"{h * w * 4 / 2**20:.0f} MB; --max-side 2048 downscales it first")
            res.warnings.append(msg)
            log(msg)
        images[str(p)] = downscale(rgb, max_side)
    if not images:                   # nothing to predict: a usage error, before the model is loaded
        first = next(iter(res.failed.values()))
        more = f" (and {len(res.failed) - 1} more unreadable)" if len(res.failed) > 1 else ""
        raise CliError(f"{first}{more}")
    for problem in res.failed.values():
        log(f"error: {problem}")
    model, variables, info = common.load_model(model_spec)
    model, plan = inference.exact_and_plan(model, plan)
    common.check_compensate(compensate, plan)
    native = inference.model_input_size(model, info)
    if multiplier:
        common.check_layers(model, layers, native)
    if plan is not None:
        inference.compile_kernels_ahead(plan, variables)  # a first run: numba compiles meanwhile
    label = f"{Path(multiplier).name if common.is_table_file(multiplier) else multiplier} on " \
            f"{', '.join(layers or ['*'])}" if multiplier else "stored plan"
    if compensate:
        label += ", compensated"
    if info.get("random_weights"):
        log(f"warning: {model_spec} is a preset with random weights, not a trained checkpoint")
    if done is not None:
        done.what, done.total, done.where = "images", len(paths), out.resolve()
    exact_fns: dict[tuple[int, int], Any] = {}
    approx_fns: dict[tuple[int, int], Any] = {}
    qmodel = qvars = None
    bar = tqdm(list(images.items()), desc="predicting", unit="img", disable=not progress, dynamic_ncols=True)
    for name, rgb in bar:
        size = inference.run_size(native, rgb.shape[:2])
        x = inference.resize_batch(rgb[None], size)
        if size not in exact_fns:
            exact_fns[size] = inference.make_predictor(model, variables, flip=flip)
        t0 = time.time()
        exact = exact_fns[size](x)[0]
        approx = None
        if plan is not None:
            if qmodel is None:
                calib = np.stack([inference.resize_batch(im[None], size)[0] for im in images.values()])
                qmodel, qvars = inference.quantized(model, variables, plan, calib.astype(np.float32) / 255,
                                                    compensate=compensate)
            if size not in approx_fns:
                approx_fns[size] = inference.make_predictor(qmodel, qvars, flip=flip)
            approx = approx_fns[size](x)[0]
        res.seconds[name] = time.time() - t0
        exact_full = inference.upsample_depth(exact, rgb.shape[:2])
        main_depth = exact_full if approx is None else inference.upsample_depth(approx, rgb.shape[:2])
        warn = lambda m: bar.write(m, file=sys.stderr)  # noqa: E731
        problem = _depth_problem(name, exact_full, "exact" if plan is not None else "", res, warn,
                                 depth_range(model))
        if plan is not None:
            problem = _depth_problem(name, main_depth, "approximate", res, warn, depth_range(model)) or problem
        if problem:
            res.failed[name] = problem
            warn(f"error: {problem}")
            continue
        files = _write_set(out, Path(name).stem, rgb, exact_full, main_depth if plan is not None else None,
                           label, viz, replacing_all, vmax=depth_range(model)[1])
        res.outputs[name] = files
        if done is not None:
            done.add(name)
        bar.write(f"{name}: {res.seconds[name]:.2f} s (model{', exact + approximate' if plan else ''}"
                  f"{', first call compiles' if len(res.seconds) == 1 else ''}), depth "
                  f"{float(np.nanmin(main_depth)):.2f}-{float(np.nanmax(main_depth)):.2f} m")
    return res


def _depth_problem(name: str, depth: np.ndarray, which: str, res: PredictResult, write,
                   depth_range: tuple[float, float] = (0.1, 10.0)) -> Optional[str]:
    """Warn about a degenerate depth (issue 10); an all-NaN one is an error for the image (returned)."""
    check = inference.check_depth(depth, depth_range=depth_range)   # clipped at the model's own range
    if not check.problems:
        return None
    what = f"{which} depth" if which else "depth"
    if "all_nan" in check.problems:
        return f"{name}: the {what} is NaN everywhere (corrupt weights or inputs?); no files written"
    msg = f"warning: {name}: the {what} looks degenerate: {check.describe()}"
    res.warnings.append(msg)
    write(msg)
    return None


def _write_set(out: Path, stem: str, rgb: np.ndarray, exact: np.ndarray, approx: Optional[np.ndarray],
               label: str, viz: Any, replacing_all: Any, vmax: float = 10.0) -> list[Path]:
    """One image's files, replaced together; stale files of an earlier run for ``stem`` are removed."""
    main = exact if approx is None else approx
    names = [f"{stem}_depth.npy", f"{stem}_depth.png"]
    if approx is not None:
        names += [f"{stem}_exact_depth.npy", f"{stem}_exact_depth.png", f"{stem}_compare.png"]
    paths = [out / n for n in names]
    with replacing_all(paths) as tmp:
        _save_npy(tmp[0], main)
        viz.depth_png(main, tmp[1], title=stem + (f": {label}" if approx is not None else ""), vmax=vmax)
        if approx is not None:
            _save_npy(tmp[2], exact)
            viz.depth_png(exact, tmp[3], title=f"{stem}: exact", vmax=vmax)
            viz.comparison(rgb, exact, approx, tmp[4], titles=("input", "exact", label, "|difference| (m)"),
                           vmax=vmax)
    for suffix in OUTPUT_SUFFIXES:
        stale = out / f"{stem}{suffix}"
        if stale not in paths and stale.exists():
            stale.unlink()
    return paths


def _save_npy(path: Path, depth: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.asarray(depth, np.float32), allow_pickle=False)


def distinct_outputs(paths: Sequence[Path]) -> list[Path]:
    """``paths`` without repeats of the same file, checked before any work: every path exists, and no two
    files share a name stem (their outputs NAME_* would overwrite each other in --out). CliError if not."""
    seen: dict[Path, Path] = {}
    by_stem: dict[str, Path] = {}
    for p in paths:
        if not p.exists():
            raise CliError(f"{p}: no such file or folder")
        key = p.resolve()
        if key in seen:
            continue
        other = by_stem.get(p.stem)
        if other is not None:
            raise CliError(f"{other} and {p} would both write {p.stem}_* in the output folder: rename one, or "
                           "predict them in separate runs with different --out folders")
        seen[key], by_stem[p.stem] = p, p
    return list(seen.values())


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(prog="jaxdepth-predict", formatter_class=argparse.RawDescriptionHelpFormatter,
                                 description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 2)[2],
                                 parents=[common.parent_parser(out_default="outputs/predict")])
    ap.add_argument("inputs", nargs="*", help="image files and/or folders (default: the bundled sample images)")
    ap.add_argument("--flip", action="store_true", help="average with the flipped image's prediction")
    ap.add_argument("--max-side", type=common.positive_int, metavar="PIXELS",
                    help="downscale inputs whose longer side exceeds PIXELS first (outputs at that size)")
    return ap


def _main(args: argparse.Namespace, done: common.Done) -> int:
    from ..io.images import find_images
    inputs = args.inputs or [str(SAMPLES_DIR)]
    paths = distinct_outputs(find_images(inputs))
    if not paths:
        raise CliError(f"no images found in {', '.join(inputs)}")
    out = Path(args.out)
    res = predict_images(paths, out, model_spec=args.model, multiplier=args.multiplier, layers=args.layers,
                         signed=args.signed, flip=args.flip, max_side=args.max_side, compensate=args.compensate,
                         progress=not args.no_progress, log=lambda m: print(m, file=sys.stderr), done=done)
    print(f"{len(res.outputs)} of {len(paths)} images done; outputs in {out.resolve()}")
    for name, files in res.outputs.items():
        print(f"  {name}: " + ", ".join(f.name for f in files))
    if res.failed:
        print(f"{len(res.failed)} failed:", file=sys.stderr)
        for err in res.failed.values():
            print(f"  {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.run(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
