"""How far each multiplier's table is from the exact product: the evidence for or against a "hybrid" kernel
(exact product on XLA's int8 convolution plus a cheap correction for the table's error).

For the circuits with no exact int8 plan (`lutconv.lowrank.int8_plan` is None) it prints, for the error
``E = table - a * b``: the share of nonzero entries, of all-zero rows (weight bytes) and columns (input
bytes), its rank, and its range. A correction is cheap only if E is sparse in the bytes a layer uses, of
low rank (a few more int8 terms), or narrow (8-bit entries: half the bytes per MAC of the 16-bit LUT path).

    python bench/table_structure.py                      # the EvoApprox circuits with no int8 plan
    python bench/table_structure.py --tables mul8u_2AC   # any named multipliers
    python bench/table_structure.py --out bench/results  # also write table_structure.md there
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import _write_atomic  # noqa: E402

from jaxdepth import multipliers  # noqa: E402
from jaxdepth.lutconv import lowrank  # noqa: E402


@dataclasses.dataclass(frozen=True)
class ErrorStructure:
    name: str
    nonzero: float        # share of the 65,536 entries where the table differs from the exact product
    zero_rows: float      # share of weight bytes whose whole row is exact
    zero_cols: float      # share of input bytes whose whole column is exact
    rank: int             # rank of E over the reals (a lower bound on the integer terms it needs)
    low: int
    high: int

    @property
    def fits_int8(self) -> bool:
        return self.high - self.low < 256


def error_structure(name: str) -> ErrorStructure:
    mult = multipliers.get(name)
    operand = np.arange(256, dtype=np.int64)
    if mult.signed:
        operand = operand.astype(np.int8).astype(np.int64)
    error = np.asarray(mult.table, np.int64) - operand[:, None] * operand[None, :]
    exact = error == 0
    return ErrorStructure(name, float(np.mean(~exact)), float(np.mean(exact.all(axis=1))),
                          float(np.mean(exact.all(axis=0))), int(np.linalg.matrix_rank(error.astype(float))),
                          int(error.min()), int(error.max()))


def without_int8_plan() -> list[str]:
    return [n for n in multipliers.names(include_generated_examples=False)
            if lowrank.int8_plan(np.asarray(multipliers.get(n).table)) is None]


def markdown(rows: list[ErrorStructure]) -> str:
    lines = ["| table | error nonzero | exact rows | exact columns | error rank | error range | fits int8 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.name} | {r.nonzero:.1%} | {r.zero_rows:.1%} | {r.zero_cols:.1%} | {r.rank} | "
                     f"[{r.low}, {r.high}] | {'yes' if r.fits_int8 else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", nargs="*", default=None, help="multiplier names (default: no int8 plan)")
    ap.add_argument("--out", default=None, help="directory to write table_structure.md to")
    ap.add_argument("--note", default="", help="markdown written below the table (what the run shows)")
    args = ap.parse_args(argv)
    rows = [error_structure(n) for n in (args.tables or without_int8_plan())]
    text = markdown(rows)
    print(text, end="")
    if args.out:
        _write_atomic(Path(args.out) / "table_structure.md", "# Error structure (bench/table_structure.py)\n\n" + text
                      + (f"\n{args.note.strip()}\n" if args.note else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
