"""``python -m jaxdepth.convert``: Keras DenseDepth .h5 / PyTorch DenseDepth or torchvision file -> jaxdepth checkpoint."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Optional, Sequence

from ..models.presets import PRESETS

EPILOG = """\
examples:
  python -m jaxdepth.convert nyu.h5 ckpt/nyu                     # the authors' published Keras weights
  python -m jaxdepth.convert nyu.pth ckpt/densenet169            # detect the preset
  python -m jaxdepth.convert model_2019.pth ckpt/d161 --preset densenet161 --set conv2_padding=0
  python -m jaxdepth.convert mobilenet_v2.pth ckpt/mnv2          # torchvision encoder weights alone:
                                                                 # the decoder is freshly initialised
  python -m jaxdepth.convert nyu.pth ckpt/d169 --plan '{"decoder.*": "mul8s_1KV8"}'

Keras inputs (read with h5py, no TensorFlow/Keras needed): whole-model or weights-only .h5 saves of Keras 2
(the published nyu.h5 / kitti.h5) or Keras 3 (legacy HDF5); decoder width, LeakyReLU after convA and BatchNorm
epsilon are read from the file's model_config (weights-only files: the matching registered preset).
PyTorch inputs: a whole pickled model or a state dict (optionally under "state_dict" / "model"), with or without the
"module." prefix, DenseDepth keys (encoder.original_model.features.*, decoder.*) or torchvision keys alone
(features.*, classifier.*), legacy DenseNet names (denselayerN.norm.1.weight). Settings that the weights do
not show (conv2_padding, leakyrelu_a, bottleneck, bottleneck_relu, input_size) come from the preset.
presets: """ + ", ".join(PRESETS)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        return text


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        value = _parse_value(value)
        out[key.strip()] = tuple(value) if isinstance(value, list) else value
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jaxdepth.convert", description=__doc__.split("``: ")[-1],
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="Keras .h5 file or PyTorch checkpoint (.pth / .pt / .tar)")
    ap.add_argument("output", help="output checkpoint directory (orbax + jaxdepth.json)")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="use this preset instead of the detected one")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a preset setting, e.g. conv2_padding=0, leakyrelu_a=false, "
                         "input_size=[480,640] (repeatable)")
    ap.add_argument("--plan", default=None, help="arithmetic plan to store with the checkpoint (JSON dict of "
                                                 "layer glob -> float / int8 / multiplier)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the decoder init for encoder-only inputs")
    ap.add_argument("--detect-only", action="store_true", help="print the detected preset and exit")
    args = ap.parse_args(argv)

    from .core import ConversionError
    from .files import convert_file, detect_file

    try:
        if args.detect_only:
            preset, layout, source = detect_file(args.input)
            print(f"{source} {layout} checkpoint, preset {preset.name}: {json.dumps(preset.to_dict())}")
            return 0
        plan = json.loads(args.plan) if args.plan else None
        report = convert_file(args.input, args.output, args.preset, plan=plan, seed=args.seed,
                              **parse_overrides(args.overrides))
    except (ConversionError, OSError, TypeError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
