"""Hand-off to hardware: a self-contained folder of C99 reference code and golden integer vectors.

    >>> from jaxdepth import export
    >>> result = export.export_layers(model, variables, image, "out/hw", layers=["decoder.*"])
    >>> # then, with only a C compiler:  cd out/hw && make check

For a model (with its plan), one image (H, W, 3) in [0, 1] and layer-name globs, the model runs with integer
requantization on every quantized layer (`jaxdepth.quant.requant`) and the folder gets

* ``layers/<layer>.h``: geometry, int8 / uint8 weights, int32 bias, requantization multipliers and shifts,
  zero points, the pad code, activation clamp; ``layers/<layer>.c`` binds it to the kernel of its kind;
* ``tables/jd_lut_<circuit>.{h,c}``: each product table used, once (``int32_t [256][256]``, weight byte first);
* ``include/``: ``jd_requant.h`` (the fixed-point requantization) and the three kernel templates
  (standard / grouped, depthwise, pointwise: any stride, padding with the pad code), HLS-style: static
  sizes, no allocation, no recursion;
* ``golden/<layer>.{in,out}.bin`` (raw codes, HWC) + ``golden/<layer>.h``: the layer's input and output
  codes for the image, from the JAX model;
* ``check.c`` + ``Makefile``: ``make check`` runs every layer on its golden input, prints PASS / FAIL per
  layer and exits non-zero on any mismatch; ``manifest.json``: what was exported, from what.

The folder is written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from .capture import ExportError, LayerCodes, capture, integer_plan, layer_infos, select_layers
from .csource import (MAKEFILE, c_ident, check_program, golden_header, layer_header, layer_source,
                      table_source)

__all__ = ["ExportError", "ExportResult", "LayerCodes", "capture", "check_output_dir", "export_layers",
           "integer_plan", "select_layers"]

C_FILES = ("jd_requant.h", "jd_conv_standard.h", "jd_conv_depthwise.h", "jd_conv_pointwise.h")


@dataclasses.dataclass
class ExportResult:
    folder: Path
    layers: list[str]                 # exported layer names, model order
    tables: list[str]                 # product tables written
    nonzero_pad_layers: list[str]     # layers whose pad code is not 0


def check_output_dir(out_dir: Any, overwrite: bool = False) -> Path:
    """The resolved folder, after checking it can be written, without creating anything: a temporary folder
    is made and removed in its parent, or in the nearest existing ancestor when the parent does not exist
    yet (`export_layers` creates the missing folders only when it writes). Raises `ExportError` otherwise."""
    out = Path(out_dir).expanduser().absolute()
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise ExportError(f"cannot write the output folder {out}: {p} is a file")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"output folder {out} is not empty (choose another or allow overwriting)")
    nearest = next(p for p in out.parents if p.exists())
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{out.name}.probe.", dir=nearest))
    except OSError as e:
        raise ExportError(f"cannot write the output folder {out}: {e.strerror or e}") from None
    return out


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_folder(folder: Path, codes: dict[str, LayerCodes], manifest: dict[str, Any]) -> ExportResult:
    """Write the export for ``codes`` (model order) into an existing empty ``folder``."""
    tables: dict[str, str] = {}      # table name -> C identifier
    idents = []
    for name, lc in codes.items():
        ident = c_ident(name)
        idents.append(ident)
        m = lc.multiplier
        if m.name not in tables:
            t_ident = c_ident(m.name)
            while t_ident in tables.values():
                t_ident += "_"
            tables[m.name] = t_ident
            header, source = table_source(t_ident, m)
            _write_text(folder / "tables" / f"jd_lut_{t_ident}.h", header)
            _write_text(folder / "tables" / f"jd_lut_{t_ident}.c", source)
        _write_text(folder / "layers" / f"{ident}.h", layer_header(ident, lc, tables[m.name]))
        _write_text(folder / "layers" / f"{ident}.c", layer_source(ident, lc))
        _write_text(folder / "golden" / f"{ident}.h", golden_header(ident, lc))
        dtype = np.int8 if lc.signed else np.uint8
        (folder / "golden" / f"{ident}.in.bin").write_bytes(lc.x_codes.astype(dtype).tobytes())
        (folder / "golden" / f"{ident}.out.bin").write_bytes(lc.y_codes.astype(dtype).tobytes())
    src = resources.files("jaxdepth.export") / "c"
    for name in C_FILES:
        _write_text(folder / "include" / name, (src / name).read_text())
    _write_text(folder / "check.c", check_program(idents, list(codes.values())))
    _write_text(folder / "Makefile", MAKEFILE)
    layers = []
    for ident, (name, lc) in zip(idents, codes.items()):
        i = lc.info
        layers.append({"name": name, "ident": ident, "kind": i.kind, "table": lc.multiplier.name,
                       "signed": lc.signed, "activation": i.activation, "input_hwc": list(lc.x_codes.shape),
                       "output_hwc": list(lc.y_codes.shape), "kernel_hwio": list(i.w_shape), "stride": i.stride,
                       "padding": i.padding, "groups": i.groups, "pad_code": lc.x_zero_point,
                       "y_zero_point": lc.y_zero_point, "x_scale": lc.x_scale, "y_scale": lc.y_scale})
    _write_text(folder / "manifest.json", json.dumps({**manifest, "layers": layers, "tables": list(tables)}, indent=1))
    return ExportResult(folder, list(codes), list(tables), [n for n, lc in codes.items() if lc.x_zero_point])


def export_layers(model: Any, variables: dict, image: np.ndarray, out_dir: Any, *,
                  layers: Optional[Sequence[str]] = None, calib_images: Any = None, overwrite: bool = False,
                  fast_compile: bool = True, compensate: bool = False,
                  source: Optional[dict] = None) -> ExportResult:
    """Export the layers matching the globs ``layers`` (default: every layer the plan quantizes) for
    ``image`` (H, W, 3) in [0, 1] into ``out_dir``.

    Checks first (image and ``calib_images`` (N, H, W, 3) float RGB in [0, 1]: a uint8 image raises
    `jaxdepth.io.images.ImageConventionError` saying to divide by 255; globs match, no float layer selected,
    folder writable), then calibrates (on ``calib_images`` if given, else the image), captures the integer
    data and writes the folder atomically (temporary sibling folder, then rename). ``compensate``: error
    compensation of the inexact layers (`capture`; the offsets are part of each layer's int32 bias).
    ``source``: extra facts for ``manifest.json`` (checkpoint...).
    """
    from ..io.images import as_unit_rgb
    image = as_unit_rgb(image, "export_layers' image")
    if calib_images is not None:
        calib_images = as_unit_rgb(calib_images, "export_layers' calib_images", batch=True)
    out = check_output_dir(out_dir, overwrite)
    selected = select_layers(layer_infos(model, image.shape[:2]), layers)
    codes = capture(model, variables, image, selected, calib_images=calib_images, fast_compile=fast_compile,
                    compensate=compensate)
    missing = [p for p in out.parents if not p.exists()]      # deepest first: removed again on failure
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        manifest = {"format": "jaxdepth-export", "version": 1, "plan": json.loads(model.plan.source),
                    "requant": "integer", "image_hw": list(image.shape[:2]), "compensated": bool(compensate),
                    **(source or {})}
        result = write_folder(tmp, codes, manifest)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for p in missing:
            try:
                p.rmdir()               # only succeeds on an empty folder
            except OSError:
                pass
        raise
    return dataclasses.replace(result, folder=out)
