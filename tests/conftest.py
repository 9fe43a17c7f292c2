"""Shared test fixtures: the tiny stand-in depth model (`standin.py`) and the hypothesis profiles.

Hypothesis profiles (``HYPOTHESIS_PROFILE=<name> python -m pytest tests/test_properties.py``):
``ci`` (default, a small example budget: a few seconds per property) and ``thorough`` (many examples,
for a run on demand).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))   # `import standin` from any test file

import standin  # noqa: E402

# CLIs called in-process must not write JAX's persistent compilation cache into the user's home during tests.
os.environ.setdefault("JAXDEPTH_COMPILE_CACHE", "0")

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is in the `test` extra; without it only the property tests are skipped
    settings = None
if settings is not None:
    _common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
    settings.register_profile("ci", max_examples=15, derandomize=True, **_common)
    settings.register_profile("thorough", max_examples=500, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def tiny_model():
    """Factory: ``tiny_model(seed=0, input_shape=(1, 8, 8, 3), **fields) -> (model, variables)``."""
    return standin.tiny

