"""Input / output: model checkpoints (`checkpoint`), images (`images`), atomic file writes (`atomic`).

Submodules load on first use, so reading an image or writing a file does not import JAX (a command line
that stops at a usage error answers in a second, not after JAX's import).
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["atomic", "checkpoint", "images", "load_checkpoint", "save_checkpoint"]
_ALIASES = {"load_checkpoint": ("checkpoint", "load"), "save_checkpoint": ("checkpoint", "save")}


def __getattr__(name: str) -> Any:
    if name in ("atomic", "checkpoint", "images"):
        return importlib.import_module(f".{name}", __name__)
    if name in _ALIASES:
        module, attr = _ALIASES[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
