"""Render a synthetic indoor RGB-D dataset (``jaxdepth-synthetic``, ``python -m jaxdepth.data.synthetic``).

Writes images.npy, depths.npy and meta.json into the output folder. Every option is checked before
anything is written. The arrays are rendered under temporary names and moved into place when complete,
meta.json last, so an interrupted run (or an error) leaves the folder's previous dataset intact, or no
dataset, never a half-written one.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Optional, Sequence

from . import common


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jaxdepth-synthetic", description=(__doc__ or "").split(" (``")[0] + ".",
                                 epilog=(__doc__ or "").split("\n\n", 1)[1],
                                 parents=[common.parent_parser("progress")])
    ap.add_argument("out", help="output folder")
    ap.add_argument("-n", type=common.positive_int, default=1000, help="number of frames (default 1000)")
    ap.add_argument("--seed", type=common.non_negative_int, default=0, help="random seed (a non-negative integer, default 0)")
    ap.add_argument("--height", type=_size, default=240, help="frame height (at least 8, default 240)")
    ap.add_argument("--width", type=_size, default=320, help="frame width (at least 8, default 320)")
    ap.add_argument("--no-shadows", action="store_true", help="skip shadow rays (faster)")
    return ap


def _size(text: str) -> int:
    v = common.positive_int(text)
    if v < 8:
        raise argparse.ArgumentTypeError(f"expected at least 8 pixels, got {v}")
    return v


def _main(args: argparse.Namespace, done: common.Done) -> int:
    from ..data.synthetic import BYTES_PER_PIXEL, frame_too_large, write_dataset
    too_large = frame_too_large(args.height, args.width)
    if too_large:
        raise common.CliError(f"--height {args.height} x --width {args.width}: {too_large}")
    out = common.check_out_dir(args.out, "output folder")
    need = args.n * args.height * args.width * BYTES_PER_PIXEL
    free = shutil.disk_usage(out).free
    if need > free:
        raise common.CliError(f"{args.n} frames of {args.height}x{args.width} need {need / 2**30:.1f} GiB; "
                              f"{out} has {free / 2**30:.1f} GiB free")
    done.what = "datasets"
    if (out / "meta.json").exists():
        done.note = f"the previous dataset in {out} is unchanged"
        print(f"note: replacing the dataset in {out}")
    else:
        done.note = f"no dataset written to {out}"
    write_dataset(out, args.n, args.seed, args.height, args.width, shadows=not args.no_shadows,
                  progress=not args.no_progress)
    print(f"wrote {args.n} frames to {Path(out)}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.run(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
