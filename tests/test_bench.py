"""The benchmark scripts import and describe themselves (they are run by hand, not in CI: timings are
never asserted)."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", ["compare.py", "paired.py", "layer_shapes.py", "requant_accuracy.py"])
def test_bench_script_runs(script):
    args = [sys.executable, str(BENCH / script)] + ([] if script == "layer_shapes.py" else ["--help"])
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
