"""Keras .h5 / PyTorch DenseDepth checkpoint -> jaxdepth checkpoint (``jaxdepth-convert``, ``python -m jaxdepth.convert``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from ..models.family import families
from ..models.presets import PRESETS, SETTINGS, PresetError, UnknownSettingError, check_setting
from . import common
from .common import CliError

EPILOG = """\
examples:
  jaxdepth-convert nyu.h5 ckpt/nyu                     # the authors' published Keras weights
  jaxdepth-convert nyu.pth ckpt/densenet169            # detect the preset
  jaxdepth-convert model_2019.pth ckpt/d161 --preset densenet161 --set conv2_padding=0
  jaxdepth-convert mobilenet_v2.pth ckpt/mnv2          # torchvision encoder weights alone:
                                                       # the decoder is freshly initialised
  jaxdepth-convert nyu.pth ckpt/d169 --plan '{"decoder.*": "mul8s_1KV8"}'

Keras inputs (read with h5py: no TensorFlow or Keras needed): whole-model or weights-only .h5 saves of
Keras 2 (the published nyu.h5 / kitti.h5) or Keras 3 (legacy HDF5). Decoder width, LeakyReLU after convA,
bottleneck ReLU and BatchNorm epsilon are read from the file's model_config; weights-only files get the
registered preset with their shapes (densedepth_nyu for full width). kitti.h5 holds nothing that tells it
from nyu.h5 (same network, input size free): pass --preset densedepth_kitti (input 384x1248, metres =
80 / output in [1, 80] m); without it the NYU depth range is used.
Keras ResNet50 / MobileNetV2 DenseDepth files (keras.applications encoders) convert to keras_resnet50 /
keras_mobilenetv2.
PyTorch inputs: a state dict (optionally under "state_dict" / "model"), with or without the "module." prefix,
DenseDepth keys (encoder.original_model.features.*, decoder.*) or torchvision keys alone (features.*,
classifier.*), legacy DenseNet names (denselayerN.norm.1.weight). A whole pickled model is read only with
--trust-pickle (unpickling can run code from the file). Settings that the weights do not show
(conv2_padding, leakyrelu_a, bottleneck, bottleneck_relu, input_size) come from the preset.
An existing output folder is replaced only with --overwrite. Exit codes: 0 done, 2 bad input (nothing
written), 130 interrupted.
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
    """``["key=value", ...]`` -> {key: value} (values as JSON when they parse, else strings), each checked
    against the preset setting's type and range (CliError naming --set and the accepted values if not)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise CliError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        try:
            out[key] = check_setting(key, _parse_value(value))
        except UnknownSettingError:
            raise CliError(f"--set {item}: unknown preset setting {key!r}; known: "
                           f"{', '.join(sorted(SETTINGS))}") from None
        except PresetError as e:
            raise CliError(f"--set {e}") from None
        if key == "encoder" and out[key] not in families():
            raise CliError(f"--set {item}: unknown encoder family; known: {', '.join(sorted(families()))}")
    return out


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(prog="jaxdepth-convert", description=doc.split("(``")[0].strip(),
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="Keras .h5 file or PyTorch checkpoint (.pth / .pt / .tar)")
    ap.add_argument("output", help="output checkpoint folder (orbax + jaxdepth.json)")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="use this preset instead of the detected one")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a preset setting, e.g. conv2_padding=0, leakyrelu_a=false, "
                         "input_size=[480,640] (repeatable)")
    ap.add_argument("--plan", default=None, help="arithmetic plan to store with the checkpoint (JSON dict of "
                                                 "layer glob -> float / int8 / multiplier)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the decoder init for encoder-only inputs")
    ap.add_argument("--detect-only", action="store_true", help="print the detected preset and exit")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output checkpoint")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="allow full unpickling of a whole pickled model (runs code from the file: only for "
                         "files from a source you trust)")
    return ap


def _main(args: argparse.Namespace, done: common.Done) -> int:
    done.what, done.total = "conversions", 1
    done.note = f"{args.output} unchanged (a checkpoint is swapped in only when complete)"
    from ..convert.files import convert_file, detect_file
    import sys
    if args.preset is None and "kitti" in Path(args.input).name.lower():
        print(f"note: {Path(args.input).name}: a Keras / DenseDepth file's contents do not say KITTI; the detected "
              f"preset uses NYU's depth range (10 m). For the published kitti.h5 pass --preset densedepth_kitti",
              file=sys.stderr)
    if not Path(args.input).is_file():
        raise CliError(f"{args.input}: no such file" if not Path(args.input).exists()
                       else f"{args.input}: is a folder, not a checkpoint file")
    if args.detect_only:
        preset, layout, source = detect_file(args.input, trust_pickle=args.trust_pickle)
        print(f"{source} {layout} checkpoint, preset {preset.name}: {json.dumps(preset.to_dict())}")
        return 0
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CliError(f"{out} is a file, not a checkpoint folder (an existing file is never replaced, even "
                       f"with --overwrite: choose another output folder)")
    if out.exists() and not args.overwrite:
        raise CliError(f"{out} exists; pass --overwrite to replace it (or choose another output folder)")
    common.check_out_dir(out.parent, "output folder in")
    plan = common.parse_plan(args.plan)
    overrides = parse_overrides(args.overrides)
    try:
        report = convert_file(args.input, out, args.preset, plan=plan, seed=args.seed,
                              trust_pickle=args.trust_pickle, overwrite=args.overwrite, **overrides)
    except PresetError as e:   # e.g. --set min_depth above the preset's max_depth: found once the preset is known
        if not overrides:
            raise
        raise CliError(f"--set: {e}") from None
    done.add(str(out))
    print(report.summary())
    print(f"saved {out}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.run(build_parser(), _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
