"""The benchmark scripts import and describe themselves (they are run by hand, not in CI: timings are
never asserted)."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", ["layer_shapes.py", *(pytest.param(s, marks=pytest.mark.slow)   # --help imports JAX
                                                          for s in ("compare.py", "paired.py", "requant_accuracy.py"))])
def test_bench_script_runs(script):
    args = [sys.executable, str(BENCH / script)] + ([] if script == "layer_shapes.py" else ["--help"])
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_quick_runs_never_replace_the_committed_results():
    sys.path.insert(0, str(BENCH))
    try:
        import compare
    finally:
        sys.path.remove(str(BENCH))
    assert compare.results_dir(None, quick=False) == BENCH / "results"
    quick = compare.results_dir(None, quick=True)
    assert quick != BENCH / "results" and BENCH / "results" not in quick.parents
    assert compare.results_dir("elsewhere", quick=True) == Path("elsewhere")


def test_table_structure_measures_the_error_against_the_exact_product():
    sys.path.insert(0, str(BENCH))
    try:
        import table_structure
    finally:
        sys.path.remove(str(BENCH))
    exact = table_structure.error_structure("exact_s8")
    assert (exact.nonzero, exact.zero_rows, exact.zero_cols, exact.rank) == (0.0, 1.0, 1.0, 0)
    approx = table_structure.error_structure("mul8u_0AB")   # published error range +-115: fits 8 bits
    assert 0 < approx.nonzero <= 1 and approx.rank > 0 and approx.fits_int8
