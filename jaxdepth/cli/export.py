"""Export layers for hardware: C99 reference + golden integer codes for one image (`jaxdepth.export`).

    jaxdepth-export --multiplier mul8u_2AC --out hw/                      # every layer, bundled model
    jaxdepth-export room.png --model ckpt/d121 --multiplier mul8s_1L2J --layers 'decoder.*' --size 64 64
    jaxdepth-export --plan '{"encoder.*": "int8", "decoder.*": "mul8s_1KV8"}' --select 'decoder.up1.*'
    cd hw && make check                                                   # PASS / FAIL per layer

The plan comes from --multiplier (+ --layers globs, default every layer), or --plan (JSON text or a .json
file), or the checkpoint's stored plan. Every quantized layer of the plan runs with integer requantization
(`jaxdepth.quant.requant`); the exported layers are --select's globs (default: every quantized layer).
The model is calibrated on the image (or on --calib images); --compensate also measures each inexact layer's
mean table error there and folds it into the layer's int32 bias. Checked before any work: the globs match,
no selected layer is float, the images can be read, --size is at most 16.8 MP (4096 x 4096), --out can
be written (a non-empty --out needs --overwrite; nothing is created before the export is written). Exit
codes: 0 done (1 if --check found a mismatch), 2 bad usage, 130 interrupted (nothing half-written: the
folder is renamed into place when complete).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from . import common
from .common import SAMPLES_DIR, CliError

DEFAULT_IMAGE = SAMPLES_DIR / "synthetic_0.png"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="jaxdepth-export", description=__doc__.split("\n")[0],
        epilog="Folder layout and C conventions: README section 'Export for hardware'.",
        parents=[common.parent_parser("model", "multiplier", "out", "compile_cache",
                                      out_default="outputs/export", out_help="the folder to write")])
    ap.add_argument("image", nargs="?", default=str(DEFAULT_IMAGE),
                    help=f"the image whose codes become the golden vectors (default: {DEFAULT_IMAGE.name})")
    ap.add_argument("--plan", help="the whole plan as JSON text or a .json file (instead of --multiplier)")
    ap.add_argument("--select", nargs="+", metavar="PATTERN",
                    help="layer-name globs to export (default: every layer the plan quantizes)")
    ap.add_argument("--size", nargs=2, type=common.positive_int, metavar=("H", "W"),
                    help="input size (default: the model's native size, else the image's rounded to 32)")
    ap.add_argument("--calib", nargs="+", metavar="IMAGE", help="calibrate on these images (default: the image)")
    ap.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    ap.add_argument("--check", action="store_true", help="run `make check` in the folder afterwards (needs cc)")
    return ap


def _plan(args: argparse.Namespace, model: Any) -> Any:
    from ..models import Plan
    if args.plan and args.multiplier:
        raise CliError("give either --plan or --multiplier (with --layers), not both")
    if args.plan:
        text = Path(args.plan).read_text() if args.plan.endswith(".json") else args.plan
        try:
            return Plan.from_json(text)
        except (ValueError, TypeError, KeyError) as e:
            raise CliError(f"--plan: {common.error_line(e)}") from None
    plan = common.make_plan(args.multiplier, args.layers, args.signed)
    if plan is not None:
        return Plan.make(plan)
    if not model.plan.is_float:
        return model.plan
    raise CliError("nothing to export: the plan is all float; give --multiplier NAME (or --plan)")


def _check_size(hw: Sequence[int], what: str) -> None:
    """CliError when the input size ``hw`` (``what``, for the message) is above the synthetic renderer's
    16.8 MP limit (`frame_too_large`: the export holds the image and every layer's activations in memory)."""
    from ..data.synthetic import frame_too_large
    too_large = frame_too_large(int(hw[0]), int(hw[1]))
    if too_large:
        raise CliError(f"{what}: {too_large}")


def _image(path: str, size: Optional[Sequence[int]], native: Optional[Sequence[int]]) -> np.ndarray:
    from .. import inference
    from ..io import images
    frame = images.read_rgb(path)
    hw = tuple(size) if size else inference.run_size(native, frame.shape[:2])
    if not size:
        _check_size(hw, f"{path} (its size rounded to 32; choose a smaller --size)")
    return inference.resize_batch(frame[None], hw)[0].astype(np.float32) / 255.0


def _main(args: argparse.Namespace) -> int:
    from .. import export, inference
    from ..export.capture import layer_infos, select_layers
    if args.size:
        _check_size(args.size, f"--size {args.size[0]} {args.size[1]}")
    model, variables, info = common.load_model(args.model)
    model = model.clone(plan=_plan(args, model))
    native = inference.model_input_size(model, info)
    if args.multiplier:
        common.check_layers(model, args.layers, native)   # a --layers glob matching nothing, named as such
    if args.plan:
        common.check_plan_layers(model, model.plan, native)   # a mistyped --plan glob would stay float
    image = _image(args.image, args.size, native)           # the inputs first: nothing is created before
    out = export.check_output_dir(args.out, args.overwrite)
    infos = layer_infos(model, image.shape[:2])
    select = args.select
    select_layers(infos, select)          # the checks, before calibration and compilation
    calib = None
    if args.calib:
        calib = np.stack([_image(p, image.shape[:2], None) for p in args.calib])
    t0 = time.perf_counter()
    result = export.export_layers(model, variables, image, out, layers=select, calib_images=calib,
                                  overwrite=args.overwrite, compensate=args.compensate,
                                  source={"model": str(args.model or common.DEFAULT_MODEL), "image": args.image})
    seconds = time.perf_counter() - t0
    print(f"exported {len(result.layers)} layers ({', '.join(result.tables)}) to {result.folder} in "
          f"{seconds:.1f} s; run: make -C {result.folder} check")
    if args.check:
        return run_check(result.folder)
    return 0


def run_check(folder: Path) -> int:
    """``make check`` in ``folder``, output passed through; 1 if a layer fails, CliError without cc/make."""
    if shutil.which("make") is None or (shutil.which("cc") is None and shutil.which("gcc") is None):
        raise CliError("--check needs `make` and a C compiler (cc) on PATH")
    proc = subprocess.run(["make", "-s", "-C", str(folder), "check"], text=True, capture_output=True)
    print(proc.stdout, end="")
    if proc.returncode:
        print(proc.stderr, end="")
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.run(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
