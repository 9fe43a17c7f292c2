"""jaxdepth.exec_cache: a later process runs a stored LUT program without tracing it, loads its executable from
JAX's compilation cache, and gets the same bits as the integer reference."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxdepth import exec_cache, multipliers
from jaxdepth.multipliers import Multiplier
from test_lutconv import reference_conv

_SCRIPT = r"""
import json, sys
import numpy as np
from jaxdepth.cli import common
common.enable_compile_cache()
import jax
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
from jaxdepth import exec_cache, lutconv, multipliers
table = multipliers.get("mul8u_197B")   # no int8 plan: the numba FFI kernels
traced = []

def f(x, w, wd):
    traced.append(1)
    return (lutconv.conv2d(x, w, table, padding=1, impl="wstat"),
            lutconv.conv2d(x, w, table, padding=1, stride=2, impl="direct"),
            lutconv.conv2d(x, wd, table, padding=1, groups=8, impl="dwrows"))

fn = exec_cache.cached_jit(jax.jit(f), "test", ("mul8u_197B", "v1"))
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (2, 9, 70, 8)).astype(np.uint8)
w = rng.integers(0, 256, (3, 3, 8, 5)).astype(np.uint8)
wd = rng.integers(0, 256, (3, 3, 1, 8)).astype(np.uint8)
outs = [np.asarray(o) for o in fn(x, w, wd)]
np.savez(sys.argv[1], x=x, w=w, wd=wd, a=outs[0], b=outs[1], c=outs[2])
print(json.dumps({"how": [how for how, _ in fn.programs.values()], "traced": len(traced),
                  "xla_cache_hits": events.count("/jax/compilation_cache/cache_hits")}))
"""


def _run(tmp_path, name):
    env = dict(os.environ, JAXDEPTH_COMPILE_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu",
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env.pop("XLA_FLAGS", None)
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / name)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), np.load(tmp_path / name)


@pytest.mark.slow
def test_a_later_process_runs_the_stored_lut_program_without_tracing(tmp_path):
    first, out1 = _run(tmp_path, "first.npz")
    assert first == {"how": ["exported"], "traced": 1, "xla_cache_hits": 0}
    second, out2 = _run(tmp_path, "second.npz")
    # no tracing; the executable (with its three FFI calls, registered by name first) from XLA's cache
    assert second == {"how": ["loaded"], "traced": 0, "xla_cache_hits": 1}
    table = multipliers.get("mul8u_197B").table
    x, w, wd = out1["x"].astype(np.int32), out1["w"].astype(np.int32), out1["wd"].astype(np.int32)
    want = {"a": reference_conv(x, w, table, padding=1), "b": reference_conv(x, w, table, stride=2, padding=1),
            "c": reference_conv(x, wd, table, padding=1, groups=8)}
    for key, expected in want.items():
        np.testing.assert_array_equal(out1[key], expected, err_msg=key)
        np.testing.assert_array_equal(out2[key], expected, err_msg=key)


def test_fingerprint_takes_tables_by_value():
    table = multipliers.get("mul8u_197B").table
    same = Multiplier("t", table.copy(), False)
    other = table.copy()
    other[3, 5] += 1
    assert exec_cache.fingerprint(("m", same)) == exec_cache.fingerprint(("m", Multiplier("t", table, False)))
    assert exec_cache.fingerprint(("m", same)) != exec_cache.fingerprint(("m", Multiplier("t", other, False)))
    assert exec_cache.fingerprint({"a": 1, "b": (2.0, None)}) == exec_cache.fingerprint({"b": (2.0, None), "a": 1})
    assert exec_cache.fingerprint(np.zeros(3, np.int32)) != exec_cache.fingerprint(np.zeros(3, np.int64))


def test_without_a_compilation_cache_the_plain_jitted_function_runs(monkeypatch):
    import jax
    monkeypatch.setattr(exec_cache, "folder", lambda: None)
    fn = exec_cache.cached_jit(jax.jit(lambda a: a + 1), "plain", ())
    assert int(fn(np.int32(1))) == 2
    assert [how for how, _ in fn.programs.values()] == ["jit"]


def test_remembered_values_are_read_back_under_the_same_key(monkeypatch, tmp_path):
    monkeypatch.setattr(exec_cache, "folder", lambda: tmp_path)
    calls = []
    compute = lambda: calls.append(1) or {"ok": True}  # noqa: E731
    assert exec_cache.remembered("t", ("model", 1), compute) == {"ok": True}
    assert exec_cache.remembered("t", ("model", 1), compute) == {"ok": True} and len(calls) == 1
    assert exec_cache.remembered("t", ("model", 2), compute) == {"ok": True} and len(calls) == 2


def test_only_the_newest_entries_are_kept(monkeypatch, tmp_path):
    monkeypatch.setattr(exec_cache, "folder", lambda: tmp_path)
    monkeypatch.setattr(exec_cache, "KEEP", 3)
    for i in range(5):
        exec_cache.remembered("t", i, lambda: i)
    assert len(list(tmp_path.iterdir())) == 3


def test_calibration_is_read_back_for_the_same_model_weights_and_images(monkeypatch, tmp_path):
    """With a compilation cache, `calibrate` stores its result: the same model, weights and images read it
    back bit for bit without running the float model; other images (or weights) calibrate anew."""
    import jax

    from jaxdepth import models
    import importlib
    calibration = importlib.import_module("jaxdepth.models.calibrate")

    monkeypatch.setattr(exec_cache, "folder", lambda: tmp_path)
    import flax.linen as nn

    from jaxdepth.models.layers import QConv

    class Tiny(nn.Module):
        plan: models.Plan

        @nn.compact
        def __call__(self, x):
            x = nn.relu(QConv(8, 3, padding=1, norm=True, plan=self.plan, name="a")(x))
            return QConv(4, 1, plan=self.plan, name="b")(x)

    model = Tiny(models.Plan.make({"*": "mul8u_197B"}))
    images = np.random.default_rng(3).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(0), images[:1])
    runs = []
    real = calibration._calibrate
    monkeypatch.setattr(calibration, "_calibrate", lambda *a, **k: runs.append(1) or real(*a, **k))
    first = models.calibrate(model, variables, images)
    again = models.calibrate(model, variables, images)
    other = models.calibrate(model, variables, images[::-1] * 0.5)
    assert len(runs) == 2
    flat = lambda v: jax.tree_util.tree_leaves_with_path(v["quant"])  # noqa: E731
    assert [(p, np.asarray(a).dtype, np.asarray(a).tobytes()) for p, a in flat(first)] == \
        [(p, np.asarray(a).dtype, np.asarray(a).tobytes()) for p, a in flat(again)]
    monkeypatch.setattr(exec_cache, "folder", lambda: None)
    plain = models.calibrate(model, variables, images)
    assert [np.asarray(a).tobytes() for _, a in flat(plain)] == [np.asarray(a).tobytes() for _, a in flat(first)]
    assert [np.asarray(a).tobytes() for _, a in flat(other)] != [np.asarray(a).tobytes() for _, a in flat(first)]
