"""Checkpoint conversion to Flax: PyTorch DenseDepth / torchvision files and Keras ``.h5`` files
(``python -m jaxdepth.convert --help``).

`convert_file` / `convert` / `detect_file` pick the reader from the file type. torch is imported lazily (only
for PyTorch files); Keras files are read with h5py alone. `keymap` holds the explicit key maps,
`torch_reference` PyTorch reference modules (needs torch).
"""
from . import keymap
from .core import ConversionError, ConversionReport
from .files import convert, convert_file, detect_file, file_kind
from .keras_loading import convert_keras_file, detect_keras_preset
from .torch_loading import convert_state_dict, detect_preset, load_state_dict, normalize_keys

__all__ = ["ConversionError", "ConversionReport", "convert", "convert_file", "convert_keras_file",
           "convert_state_dict", "detect_file", "detect_keras_preset", "detect_preset", "file_kind", "keymap",
           "load_state_dict", "normalize_keys"]
