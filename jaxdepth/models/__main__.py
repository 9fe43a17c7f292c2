"""``python -m jaxdepth.models``: list the presets, or print a model's resolved arithmetic plan."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    from . import PRESETS, build, count_params, init_variables, plan_table

    ap = argparse.ArgumentParser(
        prog="python -m jaxdepth.models", description=__doc__.split("``: ")[-1],
        epilog="example: python -m jaxdepth.models densenet161 --plan "
               "'{\"decoder.up1.convA\": \"mul8s_1L2J\", \"decoder.*\": \"mul8s_1KV8\", \"encoder.*\": \"int8\"}'")
    ap.add_argument("preset", nargs="?", help="preset name (omit to list the presets)")
    ap.add_argument("--plan", default=None, help="JSON dict: layer glob -> float / int8 / multiplier name "
                                                 "(first match wins)")
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                    help="input size (default: the preset's native size, else 480 640)")
    ap.add_argument("--verbose", action="store_true", help="full lutconv.explain reasons in the kernel column")
    args = ap.parse_args(argv)
    if args.preset is None:
        for name, p in PRESETS.items():
            n = count_params(init_variables(build(p), 0, (1, 32, 32, 3)))
            size = "x".join(map(str, p.input_size)) if p.input_size else "any"
            print(f"{name:18s} {n / 1e6:6.2f}M params  input {size:8s} {p.description}")
        return 0
    if args.preset not in PRESETS:
        print(f"error: unknown preset {args.preset!r}; known: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    try:
        model = build(args.preset, plan=json.loads(args.plan) if args.plan else None)
    except (KeyError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    h, w = args.size or model.preset.input_size or (480, 640)
    print(plan_table(model, (1, h, w, 3), verbose=args.verbose))
    return 0


if __name__ == "__main__":
    sys.exit(main())
