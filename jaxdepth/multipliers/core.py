"""The `Multiplier` type: an 8x8-bit product table plus what is known about the circuit.

Convention (used everywhere in jaxdepth): ``lut[w_byte, x_byte]``. The WEIGHT is the first operand
(row), the ACTIVATION the second (column). For signed tables the bytes are two's complement
(``code & 0xFF``: -1 -> 255, -128 -> 128); for unsigned tables they are the values 0..255.
Most EvoApprox circuits are not commutative; ``Multiplier.transposed()`` swaps the operand roles for
a circuit wired the other way round (activation on the first input).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, Mapping

import numpy as np

LUT_SHAPE = (256, 256)
#: Products of two 8-bit operands fit in 17 bits; a table entry beyond this bound is not a product.
PRODUCT_BOUND = 1 << 17


def operand_values(signed: bool) -> np.ndarray:
    """The operand value of each byte 0..255: two's complement when ``signed``."""
    b = np.arange(256, dtype=np.int32)
    return np.where(b >= 128, b - 256, b) if signed else b


def exact_table(signed: bool) -> np.ndarray:
    """The exact product table in the ``lut[w_byte, x_byte]`` convention."""
    v = operand_values(signed)
    return np.outer(v, v).astype(np.int32)


def validate_table(table: Any, name: str = "table") -> np.ndarray:
    """Return ``table`` as a C-contiguous int32 (256, 256) array, or raise a clear ValueError."""
    arr = np.asarray(table)
    if arr.shape != LUT_SHAPE:
        raise ValueError(f"{name}: a product table must have shape (256, 256), got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: the table holds NaN or infinite entries")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: the table holds non-integer entries")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name}: a product table must be integer, got dtype {arr.dtype}")
    if arr.size and (arr.min() <= -PRODUCT_BOUND or arr.max() >= PRODUCT_BOUND):
        raise ValueError(
            f"{name}: entries must lie within +-2^17 (8x8-bit products), got range "
            f"[{arr.min()}, {arr.max()}]"
        )
    return np.ascontiguousarray(arr.astype(np.int32))


@dataclasses.dataclass(frozen=True, eq=False)
class Multiplier:
    """An 8-bit multiplier given by its product table ``table[w_byte, x_byte]`` (int32, 256x256)."""

    name: str
    table: np.ndarray
    signed: bool
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        t = validate_table(self.table, self.name)
        t.setflags(write=False)
        object.__setattr__(self, "table", t)
        object.__setattr__(self, "metadata", dict(self.metadata))

    # Convenience views of the metadata --------------------------------------------------------
    @property
    def power_mw(self) -> float | None:
        return self.metadata.get("power_mW")

    @property
    def area_um2(self) -> float | None:
        return self.metadata.get("area_um2")

    @property
    def delay_ns(self) -> float | None:
        return self.metadata.get("delay_ns")

    @property
    def aliases(self) -> tuple[str, ...]:
        return tuple(self.metadata.get("aliases", ()))

    @property
    def source(self) -> str:
        return str(self.metadata.get("source", "user"))

    @functools.cached_property
    def digest(self) -> str:
        """A short content hash of the table and its signedness: the same circuit under any name gets the same
        digest (names what was computed for a table, e.g. a layer's error-compensation offset)."""
        h = hashlib.sha256(b"s" if self.signed else b"u")
        h.update(np.ascontiguousarray(self.table, np.int32).tobytes())
        return h.hexdigest()[:16]

    @property
    def is_exact(self) -> bool:
        return bool(np.array_equal(self.table, exact_table(self.signed)))

    def transposed(self) -> "Multiplier":
        """The same circuit with the operand roles swapped (activation on its first input)."""
        meta = dict(self.metadata, transposed=not self.metadata.get("transposed", False))
        name = self.name[:-2] if self.name.endswith(".T") else self.name + ".T"
        return Multiplier(name, self.table.T.copy(), self.signed, meta)

    def product(self, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Elementwise table product of integer operand codes (the reference semantics)."""
        return self.table[np.asarray(w) & 0xFF, np.asarray(x) & 0xFF]

    def __repr__(self) -> str:
        kind = "signed" if self.signed else "unsigned"
        return f"Multiplier({self.name!r}, {kind}, source={self.source!r})"
