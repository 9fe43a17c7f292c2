"""The library's conversion entry: any supported checkpoint file -> a jaxdepth checkpoint directory.

The file type decides the reader: HDF5 files (by their signature, whatever the suffix) are Keras ``.h5``
saves (`keras_loading`), anything else is a PyTorch checkpoint (`torch_loading`, needs torch).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from ..models.presets import Preset
from .core import ConversionError, ConversionReport


#: suffixes that promise a Keras HDF5 file (a file without the HDF5 signature under one of them is an error,
#: not a PyTorch checkpoint to try)
KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")


def file_kind(src: Union[str, Path]) -> str:
    """"keras" (HDF5) or "pytorch"."""
    from .keras_h5 import is_hdf5

    path = Path(src)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, expected a checkpoint file (.h5 / .pth)")
    if is_hdf5(path):
        return "keras"
    if path.suffix.lower() in KERAS_SUFFIXES:
        from .core import ConversionError
        raise ConversionError(f"{path}: not an HDF5 file (a Keras {path.suffix} save starts with the HDF5 "
                              "signature): damaged, or another format under a Keras name")
    return "pytorch"


def convert(src: Union[str, Path], preset: Union[None, str, Preset] = None, *, seed: int = 0,
            trust_pickle: bool = False, **overrides: Any) -> tuple[Preset, dict, ConversionReport]:
    """(preset, Flax variables, report) of a Keras ``.h5`` or PyTorch checkpoint file, in memory
    (``trust_pickle``: PyTorch files only, see `torch_loading.load_state_dict`)."""
    if file_kind(src) == "keras":
        from .keras_loading import convert_keras_file
        return convert_keras_file(src, preset, seed=seed, **overrides)
    from .torch_loading import convert_torch_file
    return convert_torch_file(src, preset, seed=seed, trust_pickle=trust_pickle, **overrides)


def detect_file(src: Union[str, Path], *, trust_pickle: bool = False) -> tuple[Preset, str, str]:
    """(detected preset, layout "full" | "encoder", source "keras" | "pytorch") without converting."""
    if file_kind(src) == "keras":
        from .core import ConversionError
        from .keras_h5 import KerasFileError, read_keras_h5
        from .keras_loading import detect_keras_preset
        try:
            preset, layout, _ = detect_keras_preset(read_keras_h5(src))
        except KerasFileError as e:
            raise ConversionError(str(e)) from None
        return preset, layout, "keras"
    from .torch_loading import detect_preset, load_state_dict, normalize_keys
    preset, layout = detect_preset(normalize_keys(load_state_dict(src, trust_pickle=trust_pickle)))
    return preset, layout, "pytorch"


def convert_file(src: Union[str, Path], dst: Union[str, Path], preset: Union[None, str, Preset] = None, *,
                 plan: Any = None, seed: int = 0, trust_pickle: bool = False, overwrite: bool = False,
                 **overrides: Any) -> ConversionReport:
    """Convert a Keras ``.h5`` or PyTorch checkpoint file to a jaxdepth (orbax) checkpoint directory (an
    existing ``dst`` is replaced only with ``overwrite=True``)."""
    from ..io import checkpoint

    chosen, variables, report = convert(src, preset, seed=seed, trust_pickle=trust_pickle, **overrides)
    if plan is not None:
        _check_plan(chosen, plan)
    checkpoint.save(dst, chosen, variables, plan=plan, overwrite=overwrite,
                    extra={"converted_from": str(Path(src).absolute()), "source": report.source,
                           "layout": report.layout, "decoder_initialised": report.decoder_initialised,
                           "seed": seed, "settings": report.settings})
    return report


def _check_plan(preset: Preset, plan: Any) -> None:
    """ConversionError when a pattern of ``plan`` matches no multiplying layer of ``preset``'s model: the
    checkpoint would otherwise store a plan that silently leaves those layers float."""
    from ..models import build, layer_names
    from ..models.plan import unmatched_patterns
    problem = unmatched_patterns(plan, layer_names(build(preset)), where=f" of {preset.name}")
    if problem:
        raise ConversionError(f"plan {problem}")
