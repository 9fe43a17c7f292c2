"""Every LUT convolution implementation against an independent integer reference (written here, not
taken from the library), on a matrix of shapes, paddings, groupings and tables; inside jax.jit; and the
exact tables against XLA's own integer convolution."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth import lutconv, multipliers
from jaxdepth.lutconv import lowrank, registry
from jaxdepth.lutconv import simd

# ---------------------------------------------------------------------------------------------------
# Independent reference: explicit padding, one strided window per tap, numpy fancy indexing, int64 sums
# wrapped to int32 at the end (the definition accumulates in int32).
# ---------------------------------------------------------------------------------------------------


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _ref_pads(padding, hw, khw, stride, dilation):
    if padding == "VALID":
        return [(0, 0), (0, 0)]
    if padding == "SAME":
        pads = []
        for size, k, s, d in zip(hw, khw, stride, dilation):
            out = (size + s - 1) // s
            need = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            pads.append((need // 2, need - need // 2))
        return pads
    if isinstance(padding, int):
        return [(padding, padding)] * 2
    if isinstance(padding[0], int):
        return [(padding[0], padding[0]), (padding[1], padding[1])]
    return [tuple(p) for p in padding]


def reference_conv(x, w, table, *, stride=1, padding=0, dilation=1, groups=1, pad_code=0):
    x, w, table = np.asarray(x, np.int64), np.asarray(w, np.int64), np.asarray(table, np.int64)
    n, h, wd, c = x.shape
    kh_n, kw_n, cg, n_out = w.shape
    stride, dilation = _pair(stride), _pair(dilation)
    (pt, pb), (pl, pr) = _ref_pads(padding, (h, wd), (kh_n, kw_n), stride, dilation)
    xp = np.full((n, h + pt + pb, wd + pl + pr, c), pad_code, dtype=np.int64)
    xp[:, pt:pt + h, pl:pl + wd, :] = x
    ho = (xp.shape[1] - (kh_n - 1) * dilation[0] - 1) // stride[0] + 1
    wo = (xp.shape[2] - (kw_n - 1) * dilation[1] - 1) // stride[1] + 1
    out = np.zeros((n, ho, wo, n_out), dtype=np.int64)
    per_group = n_out // groups
    for kh in range(kh_n):
        for kw in range(kw_n):
            r0, c0 = kh * dilation[0], kw * dilation[1]
            window = xp[:, r0:r0 + (ho - 1) * stride[0] + 1:stride[0],
                        c0:c0 + (wo - 1) * stride[1] + 1:stride[1], :] & 0xFF
            for o in range(n_out):
                g = o // per_group
                wbytes = w[kh, kw, :, o] & 0xFF
                out[..., o] += table[wbytes, window[..., g * cg:(g + 1) * cg]].sum(axis=-1)
    return ((out + 2**31) % 2**32 - 2**31).astype(np.int32)


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------
def _values(signed):
    b = np.arange(256)
    return np.where(b >= 128, b - 256, b) if signed else b


def _random_table(signed, seed=7):
    rng = np.random.default_rng(seed)
    v = _values(signed)
    return (np.outer(v, v) + rng.integers(-300, 300, (256, 256))).astype(np.int32)


def _truncated(signed, kw, kx):
    v = _values(signed)
    return np.outer((v >> kw) << kw, (v >> kx) << kx).astype(np.int32)


def _broken_array(h):
    """Unsigned broken-array multiplier: partial-product bits of weight i+j < h dropped."""
    v = np.arange(256)
    t = np.zeros((256, 256), np.int64)
    for i in range(8):
        for j in range(8):
            if i + j >= h:
                t += np.outer((v >> i) & 1, (v >> j) & 1) << (i + j)
    return t.astype(np.int32)


TABLES = {  # name -> (table, signed)
    "mul8s_1KVA": (multipliers.get("mul8s_1KVA").table, True),      # non-commutative, low rank
    "mul8u_2AC": (multipliers.get("mul8u_2AC").table, False),       # non-commutative, full rank
    "mul8u_2AC.T": (multipliers.get("mul8u_2AC").table.T.copy(), False),
    "random_s8": (_random_table(True), True),                       # full rank, signed
    "exact_s8": (multipliers.get("exact_s8").table, True),
    "trunc_u8": (_truncated(False, 3, 2), False),
    "bam_u8": (_broken_array(6), False),
    "wide_s8": (_random_table(True, seed=8) * 7, True),             # entries beyond 16 bits (int32 paths)
}

# (x shape NHWC, w shape HWIO, stride, padding, dilation, groups, pad_code)
CASES = [
    ((2, 7, 6, 4), (3, 3, 4, 5), 1, 1, 1, 1, 0),                 # standard, batch 2, odd sizes
    ((1, 9, 8, 6), (3, 3, 6, 4), 2, "SAME", 1, 1, 3),            # stride 2, SAME, pad code
    ((1, 8, 9, 3), (3, 2, 3, 4), (1, 2), ((2, 0), (1, 3)), 2, 1, -2),  # asymmetric everything
    ((2, 6, 7, 6), (3, 3, 1, 6), 1, (1, 1), 1, 6, 0),            # depthwise
    ((1, 9, 9, 4), (3, 3, 1, 8), 2, 1, 1, 4, 1),                 # depthwise, multiplier 2, stride 2
    ((1, 7, 7, 6), (3, 3, 2, 9), 1, "VALID", (2, 1), 3, 0),      # grouped, dilation
    ((2, 5, 6, 8), (1, 1, 8, 12), 1, 0, 1, 1, 0),                # pointwise
    ((2, 7, 9, 6), (1, 1, 6, 10), 2, 0, 1, 1, 0),                # pointwise, stride 2 (lowrank: a strided dot)
    ((1, 7, 5, 8), (1, 1, 4, 16), 2, 0, 1, 2, 0),                # pointwise, grouped, stride 2
    ((1, 5, 4, 40), (2, 2, 40, 20), 1, "SAME", 1, 1, 5),         # even kernel, SAME, more channels
    ((1, 4, 37, 3), (3, 3, 3, 70), 1, 1, 1, 1, 2),               # > 64 outputs (not a multiple of 16)
    ((1, 3, 131, 2), (3, 3, 2, 5), 1, 1, 1, 1, 0),               # a map wide enough for wstat's row layout
    ((1, 11, 70, 40), (3, 3, 1, 40), 2, 1, 1, 40, 1),            # depthwise stride 2, rows > 32 lanes
    ((2, 9, 37, 5), (3, 3, 1, 5), (1, 2), 2, (2, 1), 5, 0),       # depthwise, mixed stride and dilation
    ((1, 6, 40, 3), (5, 5, 1, 3), 1, "SAME", 1, 3, -1),           # depthwise 5x5, 36 output columns
]

IMPLS = [name for name in lutconv.implementations() if name != "loop"]
XLA_LOOP_TABLES = ("mul8u_2AC", "wide_s8")  # xla_loop's share of the matrix (16-bit and wider tables)
PALLAS_TABLES = ("wide_s8",)  # pallas (interpreted on CPU, ~1 s per shape): every case, one table


def _codes(rng, shape, signed):
    lo, hi = (-128, 128) if signed else (0, 256)
    return rng.integers(lo, hi, shape).astype(np.int32)


def _unsupported(impl, x, w, table, case):
    """The reason ``impl`` cannot run the case (None when it can)."""
    _, _, stride, padding, dilation, groups, _ = case
    kernel = registry.get_kernel(impl)
    sp = lutconv.ConvSpec(_pair(stride), _pair(dilation), groups)
    pads = _ref_pads(padding, x.shape[1:3], w.shape[:2], _pair(stride), _pair(dilation))
    xs = (x.shape[0], x.shape[1] + sum(pads[0]), x.shape[2] + sum(pads[1]), x.shape[3])
    return kernel.supports(registry.Problem(xs, w.shape, sp, table, False))


def _run(impl, x, w, table, signed, case, **kw):
    _, _, stride, padding, dilation, groups, pad_code = case
    return np.asarray(lutconv.conv2d(x, w, table, stride=stride, padding=padding, dilation=dilation,
                                     groups=groups, pad_code=pad_code, signed=signed, impl=impl, **kw))


def _matrix():
    """(case_index, table_name) pairs: the fast subset keeps a diagonal (every case with one table, every
    table with two or more cases); the rest of the matrix runs with the slow tests (CI)."""
    names = list(TABLES)
    return [(i, t) if t == names[i % len(names)] else pytest.param(i, t, marks=pytest.mark.slow)
            for t in names for i in range(len(CASES))]


@pytest.mark.parametrize("case_index,table_name", _matrix())
def test_every_impl_matches_reference(table_name, case_index):
    table, signed = TABLES[table_name]
    case = CASES[case_index]
    case = case[:6] + (case[6] if signed else case[6] & 0xFF,)  # the pad code as the table's operand
    rng = np.random.default_rng(case_index * 31 + len(table_name))
    x = _codes(rng, case[0], signed)
    w = _codes(rng, case[1], signed)
    if case_index == 0:  # few distinct weight bytes per channel: exercises wstat's row selection
        w = rng.choice(np.array([3, 100, 7] if not signed else [-128, 0, 127]), case[1]).astype(np.int32)
    expected = reference_conv(x, w, table, stride=case[2], padding=case[3], dilation=case[4],
                              groups=case[5], pad_code=case[6])
    ran = []
    for impl in IMPLS + ["auto"]:
        if impl == "xla_loop" and table_name not in XLA_LOOP_TABLES:
            continue  # one fori_loop iteration per output value: two tables cover it (CI time)
        if impl == "pallas" and table_name not in PALLAS_TABLES:
            continue
        if impl != "auto" and _unsupported(impl, x, w, table, case):
            with pytest.raises(ValueError, match="cannot run"):
                _run(impl, x, w, table, signed, case)
            continue
        got = _run(impl, x, w, table, signed, case)
        assert got.dtype == np.int32 and got.shape == expected.shape, impl
        np.testing.assert_array_equal(got, expected, err_msg=f"impl={impl}")
        ran.append(impl)
    assert {"direct", "gather", "vectorized"} <= set(ran)


def test_loop_matches_reference_on_a_tiny_case():
    table, signed = TABLES["mul8u_2AC"]
    rng = np.random.default_rng(3)
    x, w = _codes(rng, (2, 4, 5, 2), signed), _codes(rng, (2, 3, 1, 4), signed)
    got = lutconv.conv2d(x, w, table, padding=((1, 0), (0, 2)), groups=2, dilation=(1, 2), pad_code=9,
                         impl="loop")
    want = reference_conv(x, w, table, padding=((1, 0), (0, 2)), groups=2, dilation=(1, 2), pad_code=9)
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("impl", ["direct", "wstat", "gather", "xla_vmap", "xla_loop", "pallas", "auto"])
def test_inside_jit_with_traced_inputs_and_table(impl):
    table, signed = TABLES["random_s8"]
    rng = np.random.default_rng(11)
    x, w = _codes(rng, (2, 6, 7, 8), signed), _codes(rng, (3, 3, 8, 10), signed)

    @jax.jit
    def f(x, w, t):
        return lutconv.conv2d(x, w, t, padding="SAME", signed=True, impl=impl)

    got = f(jnp.asarray(x, jnp.int8), jnp.asarray(w, jnp.int8), jnp.asarray(table))
    np.testing.assert_array_equal(np.asarray(got), reference_conv(x, w, table, padding="SAME"))


@pytest.mark.parametrize("table_name", ["exact_s8", "mul8s_1KVA"])
def test_lowrank_inside_jit_with_traced_codes(table_name):
    table, signed = TABLES[table_name]
    rng = np.random.default_rng(12)
    x, w = _codes(rng, (1, 6, 5, 7), signed), _codes(rng, (3, 3, 7, 6), signed)
    f = jax.jit(lambda x, w: lutconv.conv2d(x, w, table, padding=1, signed=signed, impl="lowrank"))
    np.testing.assert_array_equal(np.asarray(f(x, w)), reference_conv(x, w, table, padding=1))


@pytest.mark.parametrize("impl", ["direct", "wstat"])
def test_vmap_over_images_matches_batched_call(impl):
    table, signed = TABLES["mul8u_2AC"]
    rng = np.random.default_rng(13)
    xs, w = _codes(rng, (3, 2, 5, 6, 4), signed), _codes(rng, (3, 3, 4, 9), signed)
    f = jax.jit(jax.vmap(lambda x: lutconv.conv2d(x, w, table, padding=1, impl=impl)))
    got = np.asarray(f(xs))
    for k in range(3):
        np.testing.assert_array_equal(got[k], reference_conv(xs[k], w, table, padding=1))


@pytest.mark.slow
@pytest.mark.parametrize("table_name", ["random_s8", "wide_s8"])
def test_depthwise_rows_kernel_inside_jit_and_vmap(table_name):
    table, signed = TABLES[table_name]
    rng = np.random.default_rng(14)
    xs, w = _codes(rng, (2, 2, 9, 35, 6), signed), _codes(rng, (3, 3, 1, 6), signed)

    def conv(x, t):
        return lutconv.conv2d(x, w, t, stride=(2, 1), padding=1, groups=6, signed=signed, impl="dwrows")

    traced_table = jax.jit(jax.vmap(conv, in_axes=(0, None)))(xs, jnp.asarray(table))
    closed_table = jax.jit(jax.vmap(lambda x: conv(x, table)))(xs)
    for k in range(2):
        expected = reference_conv(xs[k], w, table, stride=(2, 1), padding=1, groups=6)
        np.testing.assert_array_equal(np.asarray(traced_table[k]), expected)
        np.testing.assert_array_equal(np.asarray(closed_table[k]), expected)


DEPTHWISE_CASES = [c for c in CASES if c[1][2] == 1 and c[5] == c[0][3] == c[1][3]] + [
    ((1, 5, 41, 20), (3, 3, 1, 20), 2, ((3, 0), (0, 4)), 1, 20, 7),   # pads beyond the kernel, 20 channels
    ((2, 12, 33, 16), (3, 3, 1, 16), 1, ((0, 2), (2, 0)), 1, 16, -5),  # one side padded only
]


@pytest.mark.parametrize("dtype", [np.int32, np.int8, np.uint8])
@pytest.mark.parametrize("case", DEPTHWISE_CASES)
def test_depthwise_rows_xla_ffi_pads_inside(case, dtype):
    """dwrows under jit with a 16-bit table is an XLA FFI call that reads the caller's unpadded codes (as
    bytes) and a traced pad code, and writes the padding itself (signed and unsigned table handlers)."""
    table, signed = TABLES[{np.int32: "mul8s_1KVA", np.int8: "random_s8", np.uint8: "mul8u_2AC"}[dtype]]
    rng = np.random.default_rng(len(case[0]) + case[0][2])
    x, w = _codes(rng, case[0], signed), _codes(rng, case[1], signed)
    _, _, stride, padding, dilation, groups, pad_code = case
    pad_code = pad_code if signed else pad_code & 0xFF
    f = jax.jit(lambda x, w, p: lutconv.conv2d(x, w, table, stride=stride, padding=padding, dilation=dilation,
                                               groups=groups, pad_code=p, signed=signed, impl="dwrows"))
    kind = "u16" if not signed else "s16"  # the handler for the table's narrowed dtype only
    assert f'custom_call_target="jaxdepth_dwrows_{kind}"' in f.lower(x.astype(dtype), w, pad_code).as_text("hlo")
    got = f(jnp.asarray(x.astype(dtype)), jnp.asarray(w), jnp.int32(pad_code))
    want = reference_conv(x, w, table, stride=stride, padding=padding, dilation=dilation, groups=groups,
                          pad_code=pad_code)
    np.testing.assert_array_equal(np.asarray(got), want)


def test_xla_ffi_kernels_wait_for_the_shared_kernel_lock():
    """A compiled handler takes the same mutex as host kernels: while it is held, a jitted call waits."""
    import threading
    import time
    from jaxdepth.lutconv import xla_ffi

    table, signed = TABLES["mul8u_2AC"]
    x, w = np.zeros((1, 8, 8, 4), np.int32), np.ones((3, 3, 1, 4), np.int32)
    f = jax.jit(lambda x: lutconv.conv2d(x, w, table, padding=1, groups=4, impl="dwrows"))
    f(x).block_until_ready()
    done = threading.Event()
    with xla_ffi.KERNEL_LOCK:
        worker = threading.Thread(target=lambda: (f(x).block_until_ready(), done.set()))
        worker.start()
        time.sleep(0.3)
        assert not done.is_set()
    worker.join(10)
    assert done.is_set()


@pytest.mark.parametrize("impl", ["direct", "wstat", "dwrows"])
def test_compiled_kernels_are_xla_ffi_calls_with_the_table_as_an_operand(impl):
    """No host callback in the LUT path: each compiled kernel is an XLA FFI custom call whose table is a
    runtime operand, so one executable serves every table passed as a traced array (no recompilation)."""
    rng = np.random.default_rng(21)
    groups = 6 if impl == "dwrows" else 1
    x, w = _codes(rng, (2, 6, 7, 6), True), _codes(rng, (3, 3, 6 // groups, 6), True)
    f = jax.jit(lambda x, w, t: lutconv.conv2d(x, w, t, padding=1, groups=groups, signed=True, impl=impl))
    hlo = f.lower(x, w, jnp.asarray(TABLES["random_s8"][0])).as_text("hlo")
    assert f'custom_call_target="jaxdepth_{impl}"' in hlo and "callback" not in hlo
    closed = jax.jit(lambda x, w: lutconv.conv2d(x, w, TABLES["mul8s_1KVA"][0], padding=1, groups=groups,
                                                 impl=impl)).lower(x, w).as_text("hlo")
    assert f'custom_call_target="jaxdepth_{impl}_s16"' in closed and "callback" not in closed
    for name in ["random_s8", "exact_s8", "mul8s_1KVA", "wide_s8"]:  # 16-bit and wider tables, one executable
        table = TABLES[name][0]
        np.testing.assert_array_equal(np.asarray(f(x, w, jnp.asarray(table))),
                                      reference_conv(x, w, table, padding=1, groups=groups), err_msg=name)
    assert f._cache_size() == 1


_TWO_DEVICE_SCRIPT = """
import json, numpy as np, jax, flax.linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxdepth import lutconv, models, multipliers
from jaxdepth.lutconv import xla_ffi
from jaxdepth.models.layers import QConv
from jaxdepth.models.plan import Plan

table = multipliers.get("mul8u_2AC")
rng = np.random.default_rng(5)
x = rng.integers(0, 256, (2, 3, 20, 33, 32)).astype(np.uint8)
w = rng.integers(0, 256, (3, 3, 1, 32)).astype(np.int32)
conv = lambda xs: lutconv.conv2d(xs, w, table, stride=2, padding=1, groups=32, impl="dwrows")
got = np.asarray(jax.pmap(conv)(x))   # one FFI call per device, run concurrently by XLA
pmap_equal = bool((got == np.stack([np.asarray(conv(x[k])) for k in range(2)])).all())

class Tiny(nn.Module):          # every compiled kernel and lowrank, in one LUT model
    plan: Plan
    @nn.compact
    def __call__(self, x):
        x = nn.relu(QConv(16, 3, padding=1, plan=self.plan, name="wstat")(x))
        x = nn.relu(QConv(16, 3, padding=1, groups=16, plan=self.plan, name="dwrows")(x))
        x = nn.relu(QConv(8, 3, stride=2, padding=1, plan=self.plan, name="direct")(x))
        return QConv(4, 1, plan=self.plan, name="lowrank")(x)

mult = "mul8u_197B"  # no int8 plan: the numba kernels
plan = Plan.make({"wstat": {"multiplier": mult, "impl": "wstat"}, "dwrows": {"multiplier": mult, "impl": "dwrows"},
                  "direct": {"multiplier": mult, "impl": "direct"}, "lowrank": "int8"})
model = Tiny(plan)
images = np.random.default_rng(0).uniform(0, 1, (4, 12, 16, 3)).astype(np.float32)
variables = model.init(jax.random.PRNGKey(0), images[:1])
variables = models.calibrate(model, variables, [images])
mesh = Mesh(np.array(jax.devices()), ("batch",))
batch, replicated = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
two = jax.jit(model.apply, in_shardings=(replicated, batch), out_shardings=batch)
one = jax.jit(model.apply)
hlo = two.lower(variables, jax.device_put(images, batch)).compile().as_text()
out2 = np.asarray(two(variables, jax.device_put(images, batch)))
again = all((np.asarray(two(variables, jax.device_put(images, batch))) == out2).all() for _ in range(3))
out1 = np.asarray(jax.device_get(one(variables, images)))
print(json.dumps({"devices": jax.local_device_count(), "pmap_equal": pmap_equal,
                  "model_equal": bool((out1 == out2).all()) and again, "share": list(xla_ffi.call_threads()),
                  "threadsafe": xla_ffi.threadsafe_layer(), "finite": bool(np.isfinite(out2).all()),
                  "gathered": "all-gather" in hlo, "targets": sorted(set(
                      t.split('"')[1] for t in hlo.split("custom_call_target=")[1:]))}))
"""


_BACKGROUND_KERNEL = '''
import json, sys
import numpy as np, jax
from numba import carray
from jaxdepth.lutconv import xla_ffi


def plus_one(frame):  # result = operand + 1 (float32, any shape)
    if xla_ffi.is_execution(frame):
        _, x_at, rank, dims_at = xla_ffi.buffer(frame, 0, False)
        _, out_at, _, _ = xla_ffi.buffer(frame, 0, True)
        dims = xla_ffi.words(dims_at, rank)
        n = 1
        for k in range(rank):
            n *= dims[k]
        x = carray(xla_ffi.as_voidptr(x_at), (n,), dtype=np.float32)
        out = carray(xla_ffi.as_voidptr(out_at), (n,), dtype=np.float32)
        for i in range(n):
            out[i] = x[i] + 1
    return 0


def broken(frame):
    return frame + undefined_name  # noqa: F821 - fails to compile


body = plus_one if sys.argv[1] == "good" else broken
name = xla_ffi.register("jaxdepth_test_" + sys.argv[1], body)
deferred = isinstance(xla_ffi._registered[name], xla_ffi._Deferred)
x = np.arange(12, dtype=np.float32).reshape(3, 4)
if sys.argv[2] == "wait":
    try:
        xla_ffi.wait_compiled()
    except Exception as error:
        print(json.dumps({"deferred": deferred, "error": type(error).__name__}))
        sys.exit(0)
f = jax.jit(lambda x: jax.ffi.ffi_call(name, jax.ShapeDtypeStruct(x.shape, x.dtype))(x))
y = np.asarray(f(x))
import threading
daemon = all(t.daemon for t in threading.enumerate() if t.name == "jaxdepth-numba")  # exit never waits on it
print(json.dumps({"deferred": deferred, "equal": bool((y == x + 1).all()), "daemon": daemon}))
'''


def test_handlers_missing_from_numba_cache_compile_in_the_background(tmp_path):
    """A first run's handler compiles on a background thread while XLA gets a trampoline: a call made
    before the compilation ends waits for it and gives the right result; the next process loads the handler
    from numba's disk cache directly. A handler that cannot compile raises from `wait_compiled`, and a call
    to it stops the process with the error instead of returning an unwritten buffer."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "background_kernel.py"
    script.write_text(_BACKGROUND_KERNEL)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), JAX_PLATFORMS="cpu")

    def run(*args):
        done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env,
                              timeout=300)
        lines = done.stdout.strip().splitlines()
        return done.returncode, (json.loads(lines[-1]) if lines else None), done.stderr

    assert run("good", "call")[:2] == (0, {"deferred": True, "equal": True, "daemon": True})
    assert run("good", "call")[:2] == (0, {"deferred": False, "equal": True, "daemon": True})
    code, result, _ = run("broken", "wait")
    assert (code, result["deferred"]) == (0, True) and result["error"] in ("TypingError", "NameError")
    code, _, err = run("broken", "call")
    assert code == 70 and "jaxdepth_test_broken could not be compiled" in err


def test_kernels_compile_at_their_opt_level_and_restore_numbas(monkeypatch):
    """Kernel compilations run at `KERNEL_OPT_LEVEL` (nested and concurrent blocks share one setting, the
    outermost restores numba's own); a user's explicit NUMBA_OPT is left alone."""
    import numba

    from jaxdepth.lutconv import xla_ffi

    monkeypatch.delenv("NUMBA_OPT", raising=False)
    before = int(numba.config.OPT)
    with xla_ffi.kernel_opt_level():
        assert int(numba.config.OPT) == xla_ffi.KERNEL_OPT_LEVEL
        with xla_ffi.kernel_opt_level():
            assert int(numba.config.OPT) == xla_ffi.KERNEL_OPT_LEVEL
        assert int(numba.config.OPT) == xla_ffi.KERNEL_OPT_LEVEL
    assert int(numba.config.OPT) == before
    monkeypatch.setenv("NUMBA_OPT", "2")
    with xla_ffi.kernel_opt_level():
        assert int(numba.config.OPT) == before


def test_one_device_kernel_calls_take_every_thread_under_the_lock():
    """In a one-device process every kernel call is exclusive and uses all of numba's threads (the
    two-device share is checked in a subprocess below)."""
    import numba

    from jaxdepth.lutconv import xla_ffi

    if jax.local_device_count("cpu") != 1:
        pytest.skip("this process has several CPU devices")
    assert xla_ffi.call_threads() == xla_ffi.CallThreads(numba.get_num_threads(), True)


@pytest.mark.slow
def test_lut_model_on_two_devices():
    """Two host devices (the README's tip for evaluate): a LUT model sharded over the batch runs every
    compiled kernel (wstat, dwrows, direct as FFI calls, lowrank) once per device on its own images (no
    gather of the batch) and matches the one-device result bit for bit; dwrows under pmap too. The
    pure_callback kernels this replaced deadlocked here (XLA runs a callback on one device while the
    other waits in a collective, and the callback's own transfer needs an XLA thread). With a thread-safe
    numba threading layer the devices' kernel calls run side by side on one core each, without the mutex."""
    import json
    import os
    import subprocess
    import sys

    import numba

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", _TWO_DEVICE_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    threads = numba.get_num_threads()
    assert result.pop("share") == ([max(1, threads // 2), False] if result.pop("threadsafe") else [threads, True])
    assert result == {"devices": 2, "pmap_equal": True, "model_equal": True, "finite": True, "gathered": False,
                      "targets": ["jaxdepth_direct_u16", "jaxdepth_dwrows_u16", "jaxdepth_wstat_u16"]}


_EXIT_SCRIPT = """
import sys
import jax
import numpy as np
from jaxdepth import lutconv, multipliers
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (1, 60, 80, 64), dtype=np.uint8)
w = rng.integers(0, 256, (3, 3, 64, 64), dtype=np.uint8)
f = jax.jit(lambda x, w: lutconv.conv2d(x, w, multipliers.get("mul8u_197B"), padding=1, impl=sys.argv[1]))
for _ in range(3):
    acc = f(x, w)               # asynchronous: still running when the script ends
print("end", flush=True)
if sys.argv[2] == "raise":
    raise SystemExit("an error right after the call")
"""


@pytest.mark.parametrize("impl, end", [("wstat", "return"), ("direct", "raise")])
def test_a_script_ending_right_after_a_kernel_call_exits(impl, end):
    """A script whose last line is an asynchronous jitted kernel call (the README's examples) used to hang
    for good at exit: XLA's CPU client was destroyed with the call in flight."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", _EXIT_SCRIPT, impl, end], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout == "end\n" and done.returncode == (0 if end == "return" else 1), done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("signed", [True, False])
def test_exact_tables_match_xla_integer_convolution(signed):
    rng = np.random.default_rng(14)
    table = multipliers.exact(signed).table
    x, w = _codes(rng, (2, 9, 8, 6), signed), _codes(rng, (3, 3, 3, 8), signed)
    want = {stride: jax.lax.conv_general_dilated(
        jnp.asarray(x), jnp.asarray(w), stride, ((1, 2), (0, 1)), rhs_dilation=(1, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2,
        preferred_element_type=jnp.int32) for stride in [(2, 1), (1, 1)]}
    for impl in IMPLS + ["auto"]:
        for stride in want:
            if impl != "auto" and _unsupported(impl, x, w, table, (None, None, stride, ((1, 2), (0, 1)), (1, 2), 2, 0)):
                continue  # e.g. wstat needs stride 1 for 3x3 kernels, dwrows a depthwise layer
            got = lutconv.conv2d(x, w, table, stride=stride, padding=((1, 2), (0, 1)), dilation=(1, 2),
                                 groups=2, signed=signed, impl=impl)
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want[stride]), err_msg=impl)


def test_lowrank_chunks_long_reductions_exactly():
    """Sums far beyond 2^24 (float32's exact range): 2600 products of magnitude ~2^14 per output."""
    table = multipliers.exact(True).table
    rng = np.random.default_rng(15)
    x = rng.choice(np.array([-128, -127, 127, 125]), (1, 3, 2, 2600)).astype(np.int32)
    w = rng.choice(np.array([-128, -127, 127, 126]), (1, 1, 2600, 3)).astype(np.int32)
    w[..., 0] = np.where(x[0, 0, 0] < 0, -128, 127)  # one output whose sum is nearly 2600 * 2^14
    got = lutconv.conv2d(x, w, table, signed=True, impl="lowrank")
    np.testing.assert_array_equal(np.asarray(got), reference_conv(x, w, table))
    assert int(np.abs(np.asarray(got)).max()) > 2**25


# ---------------------------------------------------------------------------------------------------
# Low-rank detection
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,rank_at_most", [("exact_s8", 1), ("trunc_u8", 1), ("bam_u8", 8)])
def test_decompose_finds_exact_integer_factorisations(name, rank_at_most):
    table, _ = TABLES[name]
    a, b = lowrank.decompose(table)
    assert a.shape[1] <= rank_at_most and a.dtype.kind == "i" and b.dtype.kind == "i"
    np.testing.assert_array_equal(a @ b, table)


def test_decompose_random_integer_low_rank_and_full_rank():
    rng = np.random.default_rng(16)
    low = (rng.integers(-40, 40, (256, 3)) @ rng.integers(-40, 40, (3, 256))).astype(np.int32)
    a, b = lowrank.decompose(low)
    assert a.shape[1] == 3
    np.testing.assert_array_equal(a @ b, low)
    # an exact product plus an error that two outer products reproduce
    error = rng.integers(-9, 10, (256, 2)) @ rng.integers(-9, 10, (2, 256))
    a, b = lowrank.decompose(TABLES["exact_s8"][0] + error)
    assert a.shape[1] == 3
    np.testing.assert_array_equal(a @ b, TABLES["exact_s8"][0] + error)
    a, b = lowrank.decompose(TABLES["mul8u_2AC"][0])  # an EvoApprox circuit of integer rank 11
    assert a.shape[1] == 11
    np.testing.assert_array_equal(a @ b, TABLES["mul8u_2AC"][0])
    assert lowrank.decompose(TABLES["random_s8"][0]) is None


@pytest.mark.parametrize("name,terms", [("exact_s8", 1), ("exact_u8", 1), ("mul8s_1L2J", 1), ("mul8s_1KVA", 5),
                                        ("trunc_u8_k4", 5), ("mul8u_2AC", 10)])
def test_int8_plan_reproduces_the_table_with_int8_factors(name, terms):
    """The plan's int8 terms, shifts and u / v vectors give back every table entry exactly."""
    table = multipliers.get(name).table
    plan = lowrank.int8_plan(table)
    assert plan.terms == terms
    assert plan.a.dtype == plan.b.dtype == np.int8
    want = table.astype(np.int64)
    got = sum((plan.a[s].astype(np.int64)[:, None] * plan.b[s].astype(np.int64)[None, :]) << int(plan.shift[s])
              for s in range(plan.terms)) + plan.u[:, None] + plan.v[None, :]
    np.testing.assert_array_equal(got, want)
    assert lowrank.int8_plan(TABLES["random_s8"][0]) is None


def test_auto_choice_is_inspectable_and_sensible():
    exact = multipliers.exact(True)
    approx = multipliers.get("mul8u_2AC")
    assert lutconv.explain((1, 15, 20, 64), (1, 1, 64, 64), exact).kernel == "lowrank"
    full_rank = TABLES["random_s8"][0]
    assert lutconv.explain((1, 30, 40, 1488), (3, 3, 1488, 552), full_rank, padding=1).kernel == "wstat"
    # mul8u_2AC is 10 int8 terms: on a host with int8 dot products (VNNI) still 2x faster than wstat on this
    # layer (bench/compare.py); without them XLA's int8 convolution is ~1.5x float only and wstat wins
    choice = lutconv.explain((1, 30, 40, 1488), (3, 3, 1488, 552), approx, padding=1)
    assert choice.kernel == ("lowrank" if simd.HAVE_VNNI else "wstat") and choice.how == "auto"
    estimates = dict(choice.estimates)
    assert set(estimates) >= {"lowrank", "wstat", "direct"} and choice.estimate == min(estimates.values())
    assert [e for _, e in choice.estimates] == sorted(estimates.values())
    assert str(choice).startswith(f"{choice.kernel}: ") and f"estimated: {choice.kernel}" in str(choice)
    why = lutconv.explain((1, 20, 20, 32), (3, 3, 1, 32), approx, padding=1, groups=32)
    # (without AVX-512BW dwrows looks rows up with scalar loads and pure XLA's gather is estimated as fast)
    assert why.kernel == "dwrows" or not simd.HAVE_AVX512BW
    assert {"wstat", "direct", "dwrows"} <= dict(why.estimates).keys()
    why = lutconv.explain((1, 20, 20, 32), (3, 3, 2, 32), approx, padding=1, groups=16)
    assert why.kernel in ("direct", "wstat") and dict(why.skipped)["dwrows"] == "depthwise layers only"
    why = lutconv.explain((1, 20, 20, 32), (3, 3, 32, 32), full_rank, padding=1, stride=2)
    assert why.kernel == "direct" and "wstat" in dict(why.estimates)  # small: wstat's 4 phase calls cost more
    why = lutconv.explain((1, 120, 160, 128), (3, 3, 128, 128), full_rank, padding=1, stride=2)
    assert why.kernel == "wstat"  # big: the phases' stride-1 convolutions (4x faster than direct here)
    why = lutconv.explain((1, 20, 20, 32), (3, 3, 32, 32), full_rank, padding=2, stride=2, dilation=2)
    assert "wstat: strided layers run as stride-1 phases: not with dilation" in why.format()
    traced = lutconv.explain((1, 8, 8, 8), (3, 3, 8, 8), exact, traced=True)
    assert traced.kernel not in ("loop", "vectorized")
    # reference kernels are excluded from auto by their attribute, not their names
    references = {name for name in lutconv.implementations() if registry.get_kernel(name).reference}
    assert references == {"loop", "vectorized", "xla_loop"}
    assert not references & {k for k, _ in traced.estimates + traced.skipped}
    # on an accelerator auto keeps to XLA kernels (lowrank, gather, xla_vmap): the numba ones are CPU code
    problem = registry.Problem((1, 32, 40, 64), (3, 3, 64, 64), lutconv.ConvSpec(), TABLES["random_s8"][0], True)
    kernel, gpu = registry.choose(problem, platform="gpu")
    assert kernel.name in ("gather", "xla_vmap") and {"wstat", "direct"} <= dict(gpu.skipped).keys()
    assert registry.choose(problem, platform="cpu")[0].name == "wstat"
    assert "pallas" not in dict(gpu.skipped)  # the Pallas kernel runs there (no cost model: not preferred)
    assert dict(registry.choose(problem, platform="cpu")[1].skipped)["pallas"] == "runs on gpu/tpu only, not cpu"
    assert dict(registry.choose(problem, platform="tpu")[1].skipped)["dwrows"] == "runs on cpu only, not tpu"
    named = lutconv.explain((1, 8, 8, 8), (3, 3, 8, 8), exact, impl=["vectorized", "gather"])
    assert named.kernel in ("vectorized", "gather") and named.how.startswith("auto among")


# ---------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------
def _ok():
    return np.zeros((1, 5, 5, 4), np.int32), np.zeros((3, 3, 4, 6), np.int32)


@pytest.mark.parametrize("mutate,error,match", [
    (lambda x, w, t: (x, np.zeros((3, 3, 3, 6), np.int32), t, {}), ValueError, "input channels"),
    (lambda x, w, t: (x, np.zeros((3, 3, 2, 6), np.int32), t, {"groups": 3}), ValueError, "divisible"),
    (lambda x, w, t: (x, w, t, {"groups": 0}), ValueError, "groups"),
    (lambda x, w, t: (x[0], w, t, {}), ValueError, "rank 4"),
    (lambda x, w, t: (x, w[0], t, {}), ValueError, "rank 4"),
    (lambda x, w, t: (x + 200, w, t, {"signed": True}), ValueError, "outside"),
    (lambda x, w, t: (x - 1, w, t, {"signed": False}), ValueError, "outside"),
    (lambda x, w, t: (x, w, t, {"signed": False, "pad_code": -1}), ValueError, "pad_code"),
    (lambda x, w, t: (x.astype(np.float32), w, t, {}), TypeError, "integer"),
    (lambda x, w, t: (x, w.astype(np.float64), t, {}), TypeError, "integer"),
    (lambda x, w, t: (x, w, t[:255], {}), ValueError, "256"),
    (lambda x, w, t: (x, w, t, {"impl": "nope"}), ValueError, "'nope' names no LUT kernel"),
    (lambda x, w, t: (x, w, t, {"stride": 0}), ValueError, "positive"),
    (lambda x, w, t: (x, w, t, {"padding": "FULL"}), ValueError, "SAME"),
    (lambda x, w, t: (x, w, t, {"padding": 1.5}), ValueError, "padding must be an int, a pair .* got 1.5"),
    (lambda x, w, t: (x, w, t, {"padding": None}), ValueError, "padding must be .* got None"),
    (lambda x, w, t: (x, w, t, {"padding": ((1.5, 1), (1, 1))}), ValueError, r"padding .*\(integers only\)"),
    (lambda x, w, t: (x, w, t, {"stride": (1.5, 1)}), ValueError, "stride must be an int or a pair of ints"),
    (lambda x, w, t: (x, w, t, {"pad_code": 1.9}), ValueError, "pad_code must be one integer code, got 1.9"),
    (lambda x, w, t: (x, w, t, {"pad_code": np.array([0, 1])}), ValueError, "pad_code must be one integer code"),
    (lambda x, w, t: (x, w, t, {"signed": True, "pad_code": 128}), ValueError, "pad_code 128 outside"),
    (lambda x, w, t: (x, w, "exact_s8", {}), TypeError, r"pass multipliers.get\('exact_s8'\)"),
    (lambda x, w, t: (x, w, t, {"impl": ["auto"]}), ValueError, "no .auto."),
    (lambda x, w, t: (x, w, t, {"impl": []}), ValueError, "non-empty list of kernel names"),
    (lambda x, w, t: (x, w, t + 0.5, {}), ValueError, "non-integer entries"),
])
def test_bad_input_raises_clear_errors(mutate, error, match):
    x, w = _ok()
    x, w, t, kw = mutate(x, w, multipliers.exact(True).table)
    with pytest.raises(error, match=match):
        lutconv.conv2d(x, w, t, **kw)


def test_signedness_contradiction_and_lowrank_on_full_rank_table_raise():
    x, w = _ok()
    with pytest.raises(ValueError, match="contradicts"):
        lutconv.conv2d(x, w, multipliers.get("mul8u_2AC"), signed=True)
    with pytest.raises(ValueError, match="cannot run"):
        lutconv.conv2d(x, w, TABLES["random_s8"][0], signed=True, impl="lowrank")
    with pytest.raises(ValueError, match="not with dilation"):  # strided: phases of stride 1, undilated
        lutconv.conv2d(np.zeros((1, 9, 9, 4), np.int32), w, multipliers.get("mul8u_2AC"), stride=2, dilation=2,
                       impl="wstat")


def test_traced_float_table_or_pad_code_is_rejected_inside_jit():
    """Inside jit the values cannot be checked, but a float dtype (silently truncated before) can."""
    x, w = _ok()
    table = multipliers.exact(True).table
    with pytest.raises(ValueError, match="traced product table must have an integer dtype"):
        jax.jit(lambda t: lutconv.conv2d(x, w, t, signed=True))(table + 0.5)
    with pytest.raises(ValueError, match="pad_code must be one integer code"):
        jax.jit(lambda p: lutconv.conv2d(x, w, table, padding=1, pad_code=p))(jnp.float32(1.0))
    traced = jax.jit(lambda t, p: lutconv.conv2d(x + 1, w + 1, t, signed=True, padding=1, pad_code=p))(
        table, jnp.int32(2))
    want = lutconv.conv2d(x + 1, w + 1, table, signed=True, padding=1, pad_code=2)
    np.testing.assert_array_equal(np.asarray(traced), np.asarray(want))


def test_window_sums_groups_must_divide_the_channels():
    values = jnp.ones((1, 4, 4, 3), jnp.int32)
    with pytest.raises(ValueError, match=r"groups must divide the 3 channels of values \(1, 4, 4, 3\), got 2"):
        lutconv.window_sums(values, (3, 3), 2)
    np.testing.assert_array_equal(np.asarray(lutconv.window_sums(values, (3, 3), 3)), np.full((1, 2, 2, 3), 9))


def test_dense_accepts_nested_lists():
    x, w = [[1, -2, 3], [0, 5, -7]], [[1, 2], [3, -4], [5, 6]]
    got = lutconv.dense(x, w, multipliers.exact(True))
    np.testing.assert_array_equal(np.asarray(got), np.array(x) @ np.array(w))


def test_dense_matches_reference():
    table, signed = TABLES["mul8u_2AC.T"]
    rng = np.random.default_rng(17)
    x, w = _codes(rng, (3, 40), signed), _codes(rng, (40, 7), signed)
    want = table[(w & 0xFF).T[None, :, :], (x & 0xFF)[:, None, :]].sum(-1)
    for impl in ["auto", "direct", "wstat", "gather"]:
        np.testing.assert_array_equal(np.asarray(lutconv.dense(x, w, table, impl=impl)), want)


# ---------------------------------------------------------------------------------------------------
# The SIMD helpers against their scalar fallbacks (what a CPU without AVX-512 runs)
# ---------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not simd.HAVE_AVX512BW, reason="needs AVX-512BW to compare the two paths")
@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int32])
def test_simd_row_lookups_match_scalar_fallbacks(dtype):
    from numba import njit

    rng = np.random.default_rng(21)
    info = np.iinfo(dtype)
    lut = rng.integers(max(info.min, -(1 << 20)), min(info.max, 1 << 20), 256 * 256).astype(dtype)
    x = rng.integers(0, 256, 4 * 70 + 64).astype(np.uint8)

    def run(lookup_add_rows, lookup_row):
        @njit
        def go(lut, x):
            acc = np.zeros(4 * 96, np.int32)
            lookup_add_rows(acc, 3, 96, lut, 256 * 17, x, 5, 70, 61, 4)
            row = np.zeros(128, lut.dtype)
            lookup_row(row, 0, lut, 256 * 250, x, 9, 40)
            return acc, row

        return go(lut, x)

    (acc_v, row_v), (acc_s, row_s) = run(simd._avx512_lookup_add_rows, simd._avx512_lookup_row), \
        run(simd._scalar_lookup_add_rows, simd._scalar_lookup_row)
    want = lut[256 * 17 + x[[5 + 70 * r + q for r in range(4) for q in range(61)]].astype(np.int64)].astype(np.int32)
    np.testing.assert_array_equal(acc_s.reshape(4, 96)[:, 3:64], want.reshape(4, 61))
    np.testing.assert_array_equal(acc_v.reshape(4, 96)[:, 3:64], want.reshape(4, 61))
    np.testing.assert_array_equal(row_v[:40], row_s[:40])


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.int32])
def test_simd_table_columns_and_register_row_sums(dtype):
    """lookup_cols16 (16 x 16 blocks of product rows from 16 table columns and a transpose) and
    rows_add16/32/64 (row sums held in registers) against NumPy; plain LLVM vector IR, so on every CPU."""
    from numba import njit

    rng = np.random.default_rng(23)
    info = np.iinfo(dtype)
    lookup_cols16, table_strips = simd.lookup_cols16, simd.table_strips
    rows_add16, rows_add32, rows_add64 = simd.rows_add16, simd.rows_add32, simd.rows_add64
    if dtype != np.int32:
        lut = rng.integers(info.min, info.max + 1, 65536).astype(dtype)
        x = rng.integers(0, 256, 40).astype(np.uint8)

        @njit
        def columns(lut, x):
            strips = np.empty(65536, lut.dtype)
            table_strips(lut, strips)
            dst = np.zeros(16 * 37 + 5, lut.dtype)
            lookup_cols16(dst, 5, 37, strips, x, 3, 48)
            return dst

        dst = columns(lut, x)
        got = np.stack([dst[5 + j * 37:5 + j * 37 + 16] for j in range(16)])
        np.testing.assert_array_equal(got, lut.reshape(256, 256)[48:64][:, x[3:19]])
    table = rng.integers(max(info.min, -(1 << 24)), min(info.max, 1 << 24), 5000).astype(dtype)
    offs = rng.integers(0, 4000, 60).astype(np.int32)
    calls = [(3, 64, 2, 7, 11), (80, 32, 20, 9, 0), (150, 16, 40, 10, 5), (170, 16, 50, 0, 1)]

    @njit
    def sums(table, offs):
        acc = np.arange(200, dtype=np.int32)
        rows_add64(acc, 3, table, offs, 2, 7, 11)
        rows_add32(acc, 80, table, offs, 20, 9, 0)
        rows_add16(acc, 150, table, offs, 40, 10, 5)
        rows_add16(acc, 170, table, offs, 50, 0, 1)
        return acc

    want = np.arange(200, dtype=np.int64)
    for doff, lanes, ooff, n, shift in calls:
        for k in range(n):
            start = offs[ooff + k] + shift
            want[doff:doff + lanes] += table[start:start + lanes]
    np.testing.assert_array_equal(sums(table, offs), want.astype(np.int32))


@pytest.mark.parametrize("signed", [False, True])
def test_wstat_both_product_row_builds_match_reference(signed):
    """wstat builds 16-bit product rows from table columns (transposes; any AVX2 CPU) or one table row per
    weight byte (register permutes on AVX-512BW): both against the reference, on the flat layout (3x3 on a
    narrow map, 1x1 with stride), the row layout (wide map, dilation), groups, and weights using few bytes."""
    from jaxdepth.lutconv import wstat_kernel
    from jaxdepth.lutconv.spec import ConvSpec

    rng = np.random.default_rng(24)
    table = rng.integers(-(1 << 15), 1 << 15, (256, 256)) if signed else rng.integers(0, 1 << 16, (256, 256))
    cases = [((1, 9, 12, 5), (3, 3, 5, 7), ConvSpec()), ((2, 9, 9, 6), (1, 1, 6, 20), ConvSpec(stride=(2, 2))),
             ((1, 7, 140, 3), (3, 3, 3, 4), ConvSpec(dilation=(2, 1))),
             ((1, 6, 10, 8), (3, 3, 4, 6), ConvSpec(groups=2)),
             ((1, 8, 70, 40), (3, 3, 40, 33), ConvSpec())]
    for k, (xs, ws, spec) in enumerate(cases):
        x, w = _codes(rng, xs, signed), _codes(rng, ws, signed)
        if k == len(cases) - 1:
            w = w // 37  # a few distinct weight bytes per channel: some 16-byte blocks unused
        want = reference_conv(x, w, table, stride=spec.stride, dilation=spec.dilation, groups=spec.groups)
        for build in (1, 2):
            np.testing.assert_array_equal(wstat_kernel.wstat_host(x, w, table, spec, build=build), want)


@pytest.mark.parametrize("signed", [False, True])
def test_wstat_compact_product_rows_match_reference(signed):
    """Layers whose channels use few scattered weight bytes build T from per-channel strips (their used
    bytes in rank order) when that is cheaper (`wstat_kernel._group_layout`): a 1x1 projection to few
    channels and a 3x3 layer to one channel take the compact layout, a wide 3x3 layer using every byte
    keeps the table's 16-byte blocks; all three against the reference (padded codes, 16-bit tables)."""
    import numba

    from jaxdepth.lutconv import ffi_bridge, wstat_kernel
    from jaxdepth.lutconv.spec import ConvSpec

    rng = np.random.default_rng(31)
    table = rng.integers(-(1 << 15), 1 << 15, (256, 256)) if signed else rng.integers(0, 1 << 16, (256, 256))
    cases = [((1, 24, 40, 12), (1, 1, 12, 6), True), ((2, 14, 70, 5), (3, 3, 5, 1), True),
             ((1, 12, 70, 24), (3, 3, 24, 40), False)]
    for xs, ws, compact in cases:
        x, w = _codes(rng, xs, signed), _codes(rng, ws, signed)
        wb = np.ascontiguousarray(w & 0xFF, dtype=np.uint8)
        flat = ws[:2] == (1, 1)
        fh, fw = (1, xs[1] * xs[2]) if flat else (xs[1] - 2, xs[2] - 2)
        halo = 0 if flat else 2
        layout = wstat_kernel._group_layout(wb, True, fh, fw, ws[3], ws[2], ws[0] * ws[1], halo, halo, 2, xs[0],
                                            numba.get_num_threads(), wstat_kernel.T_BUDGET, wstat_kernel.ACC_BUDGET)
        assert layout[3] == compact, (xs, ws)
        assert ffi_bridge.narrow_table(table).itemsize == 2
        want = reference_conv(x, w, table)
        np.testing.assert_array_equal(wstat_kernel.wstat_host(x, w, table, ConvSpec(), build=1), want)


@pytest.mark.skipif(not simd.HAVE_AVX512, reason="needs AVX-512 to compare the two paths")
@pytest.mark.parametrize("src_dtype,dst_dtype", [(np.int32, np.int32), (np.int32, np.uint8), (np.uint8, np.uint8)])
def test_simd_strided_load_matches_scalar_fallback(src_dtype, dst_dtype):
    from numba import njit

    src = np.random.default_rng(22).integers(-(1 << 20), 1 << 20, 16 * 37 + 40).astype(src_dtype)

    def run(load):
        @njit
        def go(src):
            dst = np.zeros(20, dst_dtype)
            load(dst, 2, src, 7, 37)
            return dst

        return go(src)

    want = src[7 + 37 * np.arange(16)].astype(dst_dtype)
    np.testing.assert_array_equal(run(simd._scalar_strided_load16)[2:18], want)
    np.testing.assert_array_equal(run(simd._avx512_strided_load16)[2:18], want)


def test_impl_list_chooses_among_the_named_kernels():
    table, signed = TABLES["mul8u_2AC"]
    rng = np.random.default_rng(21)
    x, w = _codes(rng, (1, 9, 10, 6), signed), _codes(rng, (3, 3, 6, 7), signed)
    only = ["wstat", "direct"]
    for stride, dilation, expected in [(2, 2, "direct"), (1, 1, None)]:  # wstat: strided, not dilated
        why = lutconv.explain(x.shape, w.shape, table, stride=stride, padding=2, dilation=dilation, impl=only)
        assert why.kernel in only and (expected is None or why.kernel == expected)
        got = lutconv.conv2d(x, w, table, stride=stride, padding=2, dilation=dilation, impl=only)
        np.testing.assert_array_equal(np.asarray(got), reference_conv(x, w, table, stride=stride, padding=2,
                                                                      dilation=dilation))
    with pytest.raises(ValueError, match="among"):
        lutconv.conv2d(x, w, table, stride=2, padding=2, dilation=2, impl=["wstat"])
    with pytest.raises(ValueError, match="'nope' names no LUT kernel"):
        lutconv.conv2d(x, w, table, impl=["wstat", "nope"])
    with pytest.raises(ValueError, match="no 'auto'"):
        lutconv.conv2d(x, w, table, impl=["wstat", "auto"])
    with pytest.raises(ValueError, match="non-empty"):
        lutconv.conv2d(x, w, table, impl=[])
    forced = lutconv.explain(x.shape, w.shape, table, stride=2, padding=1, impl="direct")
    assert (forced.kernel, forced.how) == ("direct", "forced") and forced.estimate > 0
    with pytest.raises(ValueError, match="cannot run"):  # explain checks a forced kernel as conv2d does
        lutconv.explain(x.shape, w.shape, table, stride=2, padding=2, dilation=2, impl="wstat")


# ---- numba's disk cache and parallel functions ---------------------------------------------------------------
def test_parallel_numba_functions_are_not_disk_cached():
    """Every ``parallel=True`` numba function of the kernels is called from cached jitted code and must not
    be cached itself (lutconv/README.md, "numba's disk cache"): see the crash sequence below."""
    import importlib
    from numba.core.dispatcher import Dispatcher
    parallel = []
    for name in ("direct_kernel", "dwrows_kernel", "wstat_kernel"):
        module = importlib.import_module(f"jaxdepth.lutconv.{name}")
        for attr, obj in vars(module).items():
            if isinstance(obj, Dispatcher) and obj.targetoptions.get("parallel"):
                parallel.append(f"{name}.{attr}")
                assert type(obj._cache).__name__ == "NullCache", f"{name}.{attr} is disk-cached"
    assert len(parallel) == 8, parallel


CACHE_STEP = """
import sys
import numpy as np
from jaxdepth.lutconv import direct_kernel
dtype = {"u16": np.uint16, "s32": np.int32}[sys.argv[1]]
rng = np.random.default_rng(0)
table = rng.integers(0, 1 << 15, (256, 256)).astype(dtype)
x = rng.integers(0, 256, (1, 10, 13, 3)).astype(np.uint8)
w = rng.integers(0, 256, (3, 2, 3, 4)).astype(np.uint8)
out = np.empty((1, 6, 6, 4), np.int32)
direct_kernel._run(x, w, table.reshape(-1), 1, 2, 2, 2, 1, out)     # stride (1, 2), dilation 2
want = np.zeros(out.shape, np.int64)
for kh in range(3):
    for kw in range(2):
        for c in range(3):
            want[0] += table.astype(np.int64)[w[kh, kw, c][None, None, :], x[0, 2 * kh:2 * kh + 6, 2 * kw:2 * kw + 11:2, c][..., None]]
print(bool(np.array_equal(out, want)))
"""


@pytest.mark.slow
def test_kernels_loaded_from_numba_cache_in_later_processes_run(tmp_path):
    """The sequence that crashed (segfault) when the parallel inner kernels were disk-cached: a process
    compiles ``_run`` for 16-bit tables, a second one for int32 tables (the inner kernel then came from the
    cache), a third loads that int32 overload from the cache and runs it."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    for step in ("u16", "s32", "s32"):
        done = subprocess.run([sys.executable, "-c", CACHE_STEP, step], capture_output=True, text=True, env=env,
                              timeout=600)
        assert done.returncode == 0 and done.stdout.strip() == "True", (step, done.returncode, done.stderr[-2000:])
