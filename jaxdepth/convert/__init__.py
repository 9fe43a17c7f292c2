"""PyTorch -> Flax conversion of DenseDepth checkpoints (``python -m jaxdepth.convert --help``).

torch is imported lazily: `keymap` needs no torch; `torch_loading.load_state_dict` and
`torch_reference` (PyTorch reference modules with torchvision key names) do.
"""
from . import keymap
from .torch_loading import (ConversionError, ConversionReport, convert_file, convert_state_dict, detect_preset,
                            load_state_dict, normalize_keys)

__all__ = ["ConversionError", "ConversionReport", "convert_file", "convert_state_dict", "detect_preset", "keymap",
           "load_state_dict", "normalize_keys"]
