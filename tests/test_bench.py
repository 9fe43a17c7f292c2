"""The benchmark scripts import and describe themselves (they are run by hand, not in CI: timings are
never asserted)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", ["layer_shapes.py", *(pytest.param(s, marks=pytest.mark.slow)   # --help imports JAX
                                                          for s in ("compare.py", "paired.py", "requant_accuracy.py",
                                                                    "cost_model.py", "scene_error.py", "compensation.py"))])
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


def test_cost_model_summary_counts_misses_and_ratios():
    sys.path.insert(0, str(BENCH))
    try:
        import cost_model
    finally:
        sys.path.remove(str(BENCH))
    rows = [{"network": "n", "table": "t", "count": 3, "auto": "wstat", "fastest": "lowrank", "layer": "a",
             "estimated": {"wstat": 1.0, "lowrank": 3.0}, "measured": {"wstat": 2.0, "lowrank": 1.5},
             "auto_loss_s": 0.5},
            {"network": "n", "table": "t", "count": 1, "auto": "wstat", "fastest": "wstat", "layer": "b",
             "estimated": {"wstat": 1.0}, "measured": {"wstat": 1.0}, "auto_loss_s": 0.0}]
    s = cost_model.summarize(rows)
    assert s["per_kernel"]["wstat"]["median_est_over_measured"] == 0.75
    assert s["per_kernel"]["wstat"]["within_1.5x"] == 0.5 and s["per_kernel"]["wstat"]["within_2x"] == 1.0
    assert s["per_kernel"]["lowrank"]["within_1.5x"] == 0.0 and s["per_kernel"]["lowrank"]["within_2x"] == 1.0
    net = s["networks"]["n / t"]
    assert net["auto_fastest_share"] == 0.5 and net["network_seconds_auto"] == 7.0
    assert net["seconds_lost_to_misses"] == 1.5 and net["worst_miss"] == "a"
    assert "| n | a | t | wstat | lowrank |" in cost_model.markdown(rows, s, {"time": "x", "machine": "m", "load": "l",
                                                                           "repeats": 1, "within": 3.0})


def test_scene_error_separates_a_tables_offset_from_its_spread():
    """A table that adds a constant c to every product shifts each 3x3 output by 9 C c: all offset, no spread;
    the exact table has no error. Checked against those closed forms."""
    import types
    sys.path.insert(0, str(BENCH))
    try:
        import scene_error
    finally:
        sys.path.remove(str(BENCH))
    from jaxdepth import multipliers
    rng = np.random.default_rng(0)
    info = types.SimpleNamespace(stride=1, padding=1, groups=1)
    lc = types.SimpleNamespace(info=info, x_codes=rng.integers(0, 256, (6, 7, 4)), w_codes=rng.integers(0, 256, (3, 3, 4, 5)),
                               x_zero_point=17, w_zero_point=np.full(5, 128), x_scale=0.1)
    exact = multipliers.get("exact_u8")
    # the NumPy reference kernel (same bits as every kernel; no compile this early in a worker)
    assert scene_error.layer_error(lc, exact, impl="vectorized")["rel_error"] == 0.0
    shifted = multipliers.Multiplier("plus3", exact.table + 3, signed=False)
    r = scene_error.layer_error(lc, shifted, impl="vectorized")
    rms = np.sqrt(np.mean(scene_error.centred_sum(lc) ** 2))
    assert r["offset"] == pytest.approx(9 * 4 * 3 / rms) and r["spread"] == pytest.approx(0.0, abs=1e-12)
    assert r["error_per_product"] == pytest.approx(3.0)


def test_compensation_summary_counts_circuits_helped_and_hurt():
    sys.path.insert(0, str(BENCH))
    try:
        import compensation
    finally:
        sys.path.remove(str(BENCH))

    def row(name, d_plain, d_comp, p_plain, p_comp):
        return {"table": name, "signed": True, "power_mw": 0.3, "float_delta1": 0.9,
                "plain": {"delta1": d_plain, "abs_rel": 0.1, "psnr": p_plain, "depth_rel_rms": 0.1, "warning": None},
                "comp": {"delta1": d_comp, "abs_rel": 0.1, "psnr": p_comp, "depth_rel_rms": 0.1, "warning": None}}
    rows = [{"table": "exact_s8", "signed": True, "power_mw": None, "float_delta1": 0.9,
             "plain": {"delta1": 0.9, "abs_rel": 0.1, "psnr": 45.0, "depth_rel_rms": 0.0, "warning": None}},
            row("a", 0.5, 0.8, 20.0, 30.0), row("b", 0.8, 0.7, 30.0, 29.0), row("c", 0.8, 0.802, 30.0, 30.2)]
    s = compensation.summary(rows)
    assert (s["circuits"], s["delta1_better"], s["delta1_worse"], s["psnr_better"], s["psnr_worse"]) == (3, 1, 1, 1, 1)
    assert s["delta1_gain_median"] == pytest.approx(0.002)
    text = compensation.markdown(rows, {"data": "d", "calib": "c", "date": "now", "loadavg_1min": 0.5,
                                        "float_delta1": 0.9})
    assert "| a | 0.300 | 0.5000 | 0.8000 |" in text and "exact_s8 (exact)" in text
