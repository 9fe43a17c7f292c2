"""Load a user's product table from a file or a Python function.

Formats (by file suffix):

* ``.npy``: one (256, 256) integer array.
* ``.npz``: the only array in the archive, or a named one as ``"file.npz:key"``; a boolean ``signed``
  entry beside it stores the signedness (`save` writes one).
* ``.csv``: 256 lines of 256 comma-separated integers (no header).
* anything else (``.txt``, ``.dat``, ...): 256 lines of 256 whitespace-separated integers;
  ``#`` starts a comment.

A callable ``f(a, b)`` is evaluated once, vectorised, on (256, 256) arrays of operand VALUES:
``a[w, x]`` is the weight value (row), ``b[w, x]`` the activation value (column); ``0..255`` when
unsigned, ``-128..127`` (two's complement bytes ``w, x``) when signed. It must return the products
as integers (an array broadcastable to (256, 256)).

Tables are indexed ``[w_byte, x_byte]`` (weight first), as everywhere in jaxdepth.

Signedness: ``signed=True/False`` if given, else the one stored in an ``.npz``. Otherwise, for a file, a table with any negative entry is
signed and one without is unsigned (an unsigned circuit never returns a negative product; a signed
table with no negative entry is not a plausible signed multiplier, pass ``signed=True`` to force it).
For a callable ``signed`` must be given, because it decides which operand values ``f`` sees.
An unsigned table with negative entries is rejected.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .core import Multiplier, operand_values, validate_table

_TEXT_SUFFIXES_CSV = (".csv",)
_SIGNED_KEY = "signed"
#: A table declared signed whose products are all >= 0 and reach past this looks unsigned (exact signed 8x8
#: products lie in [-16256, 16384]; twice that leaves room for approximate circuits).
SIGNED_PLAUSIBLE_MAX = 2 * 16384


def _split_npz_key(spec: str) -> tuple[str, str | None]:
    """``"dir/file.npz:key"`` -> ``("dir/file.npz", "key")``; other paths have no key."""
    head, sep, key = spec.rpartition(":")
    if sep and head.lower().endswith(".npz") and key and not os.path.exists(spec):
        return head, key
    return spec, None


def _read_file(spec: str) -> tuple[np.ndarray, str, str, bool | None]:
    """(raw array, ``path[:key]`` for messages, default name ``stem[:key]``, stored signedness or None)."""
    path_str, key = _split_npz_key(spec)
    path = Path(path_str)
    if not path.exists():
        raise FileNotFoundError(f"multiplier table file not found: {path_str!r}")
    if path.is_dir():
        raise ValueError(f"{path_str!r} is a directory, not a table file")
    suffix = path.suffix.lower()
    label = f"{path_str}:{key}" if key else path_str
    default_name = path.stem + (f":{key}" if key else "")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), label, default_name, None
        if suffix != ".npz":
            delimiter = "," if suffix in _TEXT_SUFFIXES_CSV else None
            arr = np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=2)
            return arr, label, default_name, None
        with np.load(path, allow_pickle=False) as z:
            files = [f for f in z.files if f != _SIGNED_KEY]
            stored = bool(z[_SIGNED_KEY]) if _SIGNED_KEY in z.files and z[_SIGNED_KEY].size == 1 else None
            if key is None and len(files) == 1:
                key = files[0]
            if key in files:
                return z[key], label, default_name, stored
    except (OSError, EOFError, ValueError) as err:
        raise ValueError(f"cannot read a product table from {label!r}: {err}") from err
    if key is None:
        raise ValueError(f"{path_str!r} holds {len(files)} arrays {files}; name one as "
                         f"'{path_str}:KEY'")
    raise KeyError(f"{path_str!r} has no array {key!r}; it holds {files}")


def _evaluate(f: Callable[[np.ndarray, np.ndarray], Any], signed: bool, label: str) -> np.ndarray:
    v = operand_values(signed).astype(np.int64)
    a, b = np.meshgrid(v, v, indexing="ij")  # a = weight (row), b = activation (column)
    try:
        out = np.asarray(f(a, b))
    except Exception as err:  # noqa: BLE001 - report any failure of user code with context
        raise ValueError(f"{label}: calling f(a, b) on (256, 256) operand arrays failed: "
                         f"{type(err).__name__}: {err}") from err
    try:
        return np.broadcast_to(out, (256, 256))
    except ValueError:
        raise ValueError(f"{label}: f(a, b) must return a (256, 256) array of products, got shape "
                         f"{out.shape}") from None


def load(source: str | os.PathLike | Callable[[np.ndarray, np.ndarray], Any], *,
         name: str | None = None, signed: bool | None = None) -> Multiplier:
    """A `Multiplier` from a table file (.npy, .npz[:key], .csv, text) or a callable ``f(a, b)``.

    See the module docstring for the formats, the operand convention and how ``signed`` is inferred.
    Raises FileNotFoundError for a missing file, ValueError for an unreadable file or a table of the
    wrong shape, dtype, non-integer or out-of-range entries, KeyError for a missing npz key.
    """
    if callable(source):
        label = name or getattr(source, "__name__", "callable")
        if signed is None:
            raise ValueError(f"{label}: pass signed=True or signed=False when loading a callable "
                             "(it decides whether f sees operands -128..127 or 0..255)")
        raw = _evaluate(source, bool(signed), label)
        origin = f"callable {label}"
    elif isinstance(source, (str, os.PathLike)):
        raw, origin, stem, stored = _read_file(os.fspath(source))
        label = name or stem
        if signed is None:
            signed = stored
    else:
        raise TypeError(f"load() takes a file path or a callable f(a, b), got {type(source).__name__}")
    if raw.dtype == object:
        raise ValueError(f"{label}: a product table must be numeric, got dtype object")
    table = validate_table(raw, label)
    if raw.dtype.kind in "iu" and raw.dtype.itemsize == 1 and int(np.abs(table).max()) > 0:
        warnings.warn(f"{label}: the table is stored as {raw.dtype} (8 bits), but 8x8-bit products need up to 16 "
                      f"bits (255 * 255 = 65025): products modulo 256? Save the table as int32", RuntimeWarning,
                      stacklevel=2)
    has_negative = bool((table < 0).any())
    if signed is None:
        signed = has_negative
    elif not signed and has_negative:
        raise ValueError(f"{label}: signed=False but the table holds negative products "
                         f"(min {int(table.min())}); an unsigned product is never negative")
    elif signed and not has_negative and int(table.max()) > SIGNED_PLAUSIBLE_MAX:
        warnings.warn(f"{label}: declared signed, but no product is negative and the largest is {int(table.max())}, "
                      f"beyond any signed 8x8 product (at most 16384): an unsigned multiplier? (--unsigned / "
                      "signed=False)", RuntimeWarning, stacklevel=2)
    meta = {"source": "user", "origin": origin}
    return Multiplier(name or label, table, bool(signed), meta)


def save(m: Multiplier, path: str | os.PathLike) -> Path:
    """Write ``m`` as an ``.npz`` holding its ``table`` and its ``signed`` flag, which `load` reads back
    (atomically: a temporary file, then a rename)."""
    from ..io.atomic import replacing
    p = Path(path)
    if p.suffix.lower() != ".npz":
        raise ValueError(f"{p}: save() writes an .npz (the table plus its signedness)")
    with replacing(p) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, table=np.asarray(m.table), signed=np.bool_(m.signed))
    return p
