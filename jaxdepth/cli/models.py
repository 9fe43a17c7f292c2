"""List the model presets, or print a model's resolved arithmetic plan (``jaxdepth-models``, ``python -m jaxdepth.models``)."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from . import common


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="jaxdepth-models", description=(__doc__ or "").split(" (``")[0],
        epilog="example: jaxdepth-models densenet161 --plan "
               "'{\"decoder.up1.convA\": \"mul8s_1L2J\", \"decoder.*\": \"mul8s_1KV8\", \"encoder.*\": \"int8\"}'")
    ap.add_argument("preset", nargs="?", help="preset name (omit to list the presets)")
    ap.add_argument("--plan", default=None, help="JSON dict: layer glob -> float / int8 / multiplier name "
                                                 "(first match wins)")
    ap.add_argument("--size", type=common.positive_int, nargs=2, metavar=("H", "W"), default=None,
                    help="input size (default: the preset's native size, else 480 640)")
    ap.add_argument("--verbose", action="store_true", help="full lutconv.explain reasons in the kernel column")
    return ap


def _main(args: argparse.Namespace) -> int:
    from ..models import PRESETS, build, count_params, init_variables, plan_table
    if args.preset is None:
        given = [flag for flag, value in (("--plan", args.plan), ("--size", args.size), ("--verbose", args.verbose))
                 if value]
        if given:
            verb = "describes" if len(given) == 1 else "describe"
            raise common.CliError(f"{' and '.join(given)} {verb} one model: name a preset (e.g. "
                                  f"jaxdepth-models mobilenetv2_lite {' '.join(given)} ...)")
        for name, p in PRESETS.items():
            n = count_params(init_variables(build(p), 0, (1, 32, 32, 3)))
            size = "x".join(map(str, p.input_size)) if p.input_size else "any"
            print(f"{name:18s} {n / 1e6:6.2f}M params  input {size:8s} {p.description}")
        return 0
    if args.preset not in PRESETS:
        raise common.CliError(f"unknown preset {args.preset!r}; known: {', '.join(PRESETS)}")
    plan = common.parse_plan(args.plan)
    model = build(args.preset, plan=plan)
    h, w = args.size or model.preset.input_size or (480, 640)
    common.check_plan_layers(model, plan, (h, w))
    print(plan_table(model, (1, h, w, 3), verbose=args.verbose))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.run(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
