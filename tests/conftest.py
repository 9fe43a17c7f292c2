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

# JAX's persistent compilation cache for the whole test run (in-process library calls, in-process CLIs and
# CLI subprocesses alike), in the checkout's `.pytest_cache/` rather than the user's home: the same model +
# plan compiled by several tests (or several xdist workers, or yesterday's run) is compiled once. Compiling
# dominates this suite, so a warm rerun takes a fraction of a cold one. `JAXDEPTH_TEST_COMPILE_CACHE=0`
# turns it off (then nothing is cached anywhere), `=DIR` moves it (`JAXDEPTH_COMPILE_CACHE`, when set, wins
# for both); `pytest --cache-clear` empties it.
os.environ.setdefault("JAXDEPTH_COMPILE_CACHE", os.environ.get(
    "JAXDEPTH_TEST_COMPILE_CACHE", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "jaxdepth-xla")))
import jax  # noqa: E402  (imported first: the cache settings below then go to jax.config directly)

from jaxdepth.cli import common  # noqa: E402

if common.enable_compile_cache() is not None:      # the CLIs' own parsing of the variable (0 / off: nothing)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)   # tests compile many small programs

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



@pytest.fixture
def ctrl_c_on_call(monkeypatch):
    """``ctrl_c_on_call(owner, name, n) -> calls``: ``owner.name`` raises KeyboardInterrupt on its ``n``-th call
    (a Ctrl-C at a known point of a run) and runs as before otherwise; ``calls`` counts the calls."""
    def install(owner, name, n):
        real, calls = getattr(owner, name), []

        def wrapper(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)
        monkeypatch.setattr(owner, name, wrapper)
        return calls
    return install


@pytest.fixture(scope="session")
def lite_vars():
    """Freshly initialised variables of the small ``mobilenetv2_lite`` preset (what checkpoints must fit)."""
    from jaxdepth import models
    return models.init_variables(models.build("mobilenetv2_lite"), 0)


def _c_sigint_action() -> int | None:
    """The process's C-level SIGINT handler address (sigaction; Linux), None where it cannot be read. A native
    library can replace Python's own handler there, unseen by `signal.getsignal`."""
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)       # struct sigaction: the handler is its first field
        if libc.sigaction(2, None, buf) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return int.from_bytes(buf.raw[:ctypes.sizeof(ctypes.c_void_p)], sys.byteorder)


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler (KeyboardInterrupt) for the test, as in an interactive shell, where a user's
    Ctrl-C arrives: a suite started as a background job (``cmd &`` without job control) inherits SIGINT
    ignored, and Python then keeps it ignored, so a test delivering a real SIGINT would see nothing."""
    import signal
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(autouse=True)
def _sigint_handler_left_as_found(request):
    """Every test leaves SIGINT's handling as it found it (Python's handler, and the C-level action under it):
    the Ctrl-C tests rely on it, and a test that replaced it would break whichever ran next in the same
    worker. A leak fails the test that caused it; Python's handler is put back for the next one."""
    import signal
    before, c_before = signal.getsignal(signal.SIGINT), _c_sigint_action()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert signal.SIGINT not in blocked, f"SIGINT is blocked in the test thread before {request.node.nodeid}"
    yield
    after, c_after = signal.getsignal(signal.SIGINT), _c_sigint_action()
    if after is not before:
        signal.signal(signal.SIGINT, before)
    assert after is before, f"{request.node.nodeid} left SIGINT's handler as {after!r}"
    assert c_after == c_before, f"{request.node.nodeid} replaced SIGINT's C-level action ({c_before} -> {c_after})"
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, []), \
        f"{request.node.nodeid} left SIGINT blocked in the test thread"
