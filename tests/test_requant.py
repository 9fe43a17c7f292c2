"""Integer requantization (jaxdepth.quant.requant) against an independent Python-int implementation of the
TFLite / gemmlowp fixed-point definition, and integer-mode layers against the float-rescale ones (the whole
bundled model in integer mode runs in tests/test_export.py, every layer checked by the exported C)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth import models, multipliers, quant
from jaxdepth.models import Plan, QConv
from jaxdepth.quant import requant as rq

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


# ---- independent implementation: Python ints, written from gemmlowp's fixedpoint.h definitions -------------------
def _trunc_div(n: int, d: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(n) // d
    return q if n >= 0 else -q


def py_srdhm(a: int, b: int) -> int:
    if a == b == I32_MIN:
        return I32_MAX
    p = a * b
    nudge = (1 << 30) if p >= 0 else 1 - (1 << 30)
    return _trunc_div(p + nudge, 1 << 31)


def py_rdbpot(x: int, n: int) -> int:
    mask = (1 << n) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> n) + (1 if remainder > threshold else 0)


def py_mbqm(x: int, m: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    x = min(max(x * (1 << left), I32_MIN), I32_MAX)
    return py_rdbpot(py_srdhm(x, m), right)


def _edge_cases():
    xs, ms, shifts = [], [], []
    mults = [0, 1, 1 << 30, (1 << 30) + 1, I32_MAX, 1518500250, 1 << 16]
    accs = [0, 1, -1, 2, -2, 3, -3, I32_MAX, I32_MIN, I32_MIN + 1, 12345, -12345, 1 << 30, -(1 << 30),
            (1 << 15) + 1, -(1 << 15) - 1]
    for n in (0, 1, 2, 7, 30, 31):              # exact ties of the rounding right shift, both signs
        if n:
            accs += [(5 << n) + (1 << (n - 1)), -(5 << n) - (1 << (n - 1)), (1 << (n - 1)), -(1 << (n - 1))]
    for x in accs:
        for m in mults:
            for s in (0, -1, -5, -31, -30, 1, 4, 30):
                xs.append(max(min(x, I32_MAX), I32_MIN)), ms.append(m), shifts.append(s)
    return np.array(xs, np.int64), np.array(ms, np.int64), np.array(shifts, np.int64)


def test_fixed_point_multiply_matches_python_ints_on_edge_cases():
    xs, ms, shifts = _edge_cases()
    rng = np.random.default_rng(0)
    n = 4000
    xs = np.concatenate([xs, rng.integers(I32_MIN, I32_MAX, n, endpoint=True)])
    ms = np.concatenate([ms, rng.integers(0, I32_MAX, n, endpoint=True)])
    shifts = np.concatenate([shifts, rng.integers(-31, 31, n, endpoint=True)])
    expect = np.array([py_mbqm(int(x), int(m), int(s)) for x, m, s in zip(xs, ms, shifts)])
    np.testing.assert_array_equal(rq.multiply_by_quantized_multiplier_reference(xs, ms, shifts), expect)
    got = jax.jit(rq.multiply_by_quantized_multiplier)(xs.astype(np.int32), ms.astype(np.int32),
                                                       shifts.astype(np.int32))
    np.testing.assert_array_equal(np.asarray(got), expect)


def test_rounding_ties_and_saturation():
    # SRDHM ties go up (gemmlowp's nudge 1 - 2^30 for negatives): 3 * 2^30 / 2^31 = 1.5 -> 2, -1.5 -> -1;
    # RDBPOT ties go away from zero: 5 / 2 = 2.5 -> 3, -2.5 -> -3
    assert py_srdhm(3, 1 << 30) == 2 and py_srdhm(-3, 1 << 30) == -1 and py_srdhm(-5, 1 << 30) == -2
    assert py_rdbpot(5, 1) == 3 and py_rdbpot(-5, 1) == -3 and py_rdbpot(-4, 1) == -2
    assert py_rdbpot(I32_MIN, 31) == -1 and py_rdbpot(I32_MAX, 31) == 1 and py_rdbpot(1 << 30, 31) == 1 and py_rdbpot(-(1 << 30), 31) == -1
    assert py_srdhm(I32_MIN, I32_MIN) == I32_MAX
    assert rq.multiply_by_quantized_multiplier_reference(I32_MIN, I32_MIN, 0) == I32_MAX
    assert int(rq.multiply_by_quantized_multiplier(I32_MAX, I32_MAX, 30)) == I32_MAX - 1   # saturating left shift
    assert int(rq.multiply_by_quantized_multiplier(-7, 1 << 30, 0)) == py_mbqm(-7, 1 << 30, 0) == -3   # -3.5
    assert int(rq.multiply_by_quantized_multiplier(-5, 1 << 30, -1)) == py_mbqm(-5, 1 << 30, -1) == -1  # -1.25


def test_quantize_multiplier_numpy_jax_and_python_agree():
    rng = np.random.default_rng(1)
    reals = np.concatenate([rng.uniform(0, 1, 500) ** 6, [0.0, 1.0, 0.5, 2.0 ** -31, 2.0 ** -33, 3.7, 1e-12,
                                                           np.float32(1) - np.float32(2 ** -24)]]).astype(np.float32)
    m_np, e_np = rq.quantize_multiplier(reals)
    m_jx, e_jx = jax.jit(rq.quantize_multiplier_jax)(reals)
    np.testing.assert_array_equal(m_np, np.asarray(m_jx))
    np.testing.assert_array_equal(e_np, np.asarray(e_jx))
    for r, m, e in zip(reals.astype(float), m_np, e_np):
        q, ex = math.frexp(r)
        mm, ee = round(q * 2 ** 31), ex
        if mm == 1 << 31:
            mm, ee = mm // 2, ee + 1
        if ee < -31 or mm == 0:
            mm, ee = 0, 0
        assert (int(m), int(e)) == (mm, ee)
        if mm:
            assert abs(m * 2.0 ** (e - 31) - r) <= r * 2 ** -24


def _random_params(rng, n_out, signed, activation):
    x_scale = np.float32(rng.uniform(0.005, 0.05))
    w_scale = rng.uniform(0.001, 0.02, n_out).astype(np.float32)
    bias = rng.normal(0, 0.3, n_out).astype(np.float32)
    y_scale = np.float32(rng.uniform(0.01, 0.08))
    zero = 0 if signed else int(rng.integers(0, 200))
    return rq.requant_params(x_scale, w_scale, bias, y_scale, zero, signed=signed, activation=activation)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("activation", rq.ACTIVATIONS)
def test_requantize_matches_python_ints(signed, activation):
    rng = np.random.default_rng(hash((signed, activation)) % 1000)
    n_out = 7
    rp = _random_params(rng, n_out, signed, activation)
    acc = rng.integers(-40000, 40000, (3, 5, n_out)).astype(np.int32)
    acc[0, 0] = I32_MAX                                   # wrap-around of acc + bias, saturating codes
    acc[0, 1] = I32_MIN
    got = np.asarray(jax.jit(rq.requantize)(acc, rp))
    np.testing.assert_array_equal(rq.requantize_reference(acc, rp), got)
    p = {k: np.asarray(getattr(rp, k)) for k in ("bias", "multiplier", "shift", "neg_multiplier", "neg_shift")}
    z, lo, hi = int(rp.out_zero_point), int(rp.act_min), int(rp.act_max)
    for idx in np.ndindex(acc.shape):
        o = idx[-1]
        v = (int(acc[idx]) + int(p["bias"][o]) + (1 << 31)) % (1 << 32) - (1 << 31)
        m, s = (p["multiplier"][o], p["shift"][o]) if v >= 0 else (p["neg_multiplier"][o], p["neg_shift"][o])
        assert got[idx] == min(max(py_mbqm(v, int(m), int(s)) + z, lo), hi)
    qmin, qmax = (-128, 127) if signed else (0, 255)
    assert (lo, hi)[0] == (max(qmin, z) if activation in ("relu", "relu6") else qmin)
    if activation == "relu6":
        assert hi == min(qmax, z + round(6 / float(rp.out_scale)))
    if activation == "leaky_relu":   # the negative multiplier is 0.2 x the positive one
        ratio = p["neg_multiplier"] * 2.0 ** p["neg_shift"] / (p["multiplier"] * 2.0 ** p["shift"])
        np.testing.assert_allclose(ratio, 0.2, rtol=1e-6)


# ---- integer-mode layers vs float-rescale layers ------------------------------------------------------------------
LAYERS = [  # (features, kernel, stride, padding, groups, c_in, multiplier, activation)
    (16, 3, 2, 1, 1, 8, "int8", "relu6"),
    (12, 3, 1, 1, 12, 12, "int8", "relu"),              # depthwise
    (10, 1, 1, 0, 1, 24, "mul8s_1L2J", "none"),         # pointwise, EvoApprox signed
    (9, 3, 1, 1, 1, 6, "mul8u_2AC", "leaky_relu"),      # unsigned, zero points
    (8, 3, 2, 1, 8, 8, "exact_u8", "relu6"),            # unsigned depthwise stride 2
]


def _layer_pair(features, k, stride, padding, groups, c_in, mult, activation, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(1, 9, 11, c_in)) - 0.2).astype(np.float32)
    common = dict(stride=stride, padding=padding, groups=groups, use_bias=True, norm=True, activation=activation)
    f_layer = QConv(features, k, plan=Plan.make({"*": mult}), **common)
    i_layer = QConv(features, k, plan=Plan.make({"*": {"multiplier": mult, "requant": "integer"}}), **common)
    v = models.init_variables(f_layer, seed, x.shape)
    v["params"]["bn"] = {"scale": jnp.asarray(rng.uniform(0.5, 1.5, features), jnp.float32),
                         "bias": jnp.asarray(rng.normal(0, 0.2, features), jnp.float32)}
    v["batch_stats"] = {"bn": {"mean": jnp.asarray(rng.normal(0, 0.2, features), jnp.float32),
                               "var": jnp.asarray(rng.uniform(0.5, 2, features), jnp.float32)}}
    v = models.calibrate(i_layer, v, x)
    return x, f_layer, i_layer, v


@pytest.mark.parametrize("layer", LAYERS, ids=[f"{l[6]}-{l[7]}-g{l[4]}" for l in LAYERS])
def test_integer_layer_within_one_code_of_float_rescale(layer):
    x, f_layer, i_layer, v = _layer_pair(*layer)
    signed = multipliers.get(layer[6]).signed
    codes = "int8" if signed else "uint8"
    y_qp = quant.QParams(v["quant"][f"y_scale_{codes}"], v["quant"][f"y_zero_point_{codes}"], signed)
    y_float = np.asarray(jax.jit(f_layer.apply)(v, x))                    # float rescale + float activation
    y_int, state = jax.jit(lambda v, x: i_layer.apply(v, x, mutable=["export"]))(v, x)
    d = state["export"]["details"][0]
    codes = np.asarray(d["codes"])
    # the output is exactly the dequantised codes, and the codes are the plain-integer requantization
    np.testing.assert_array_equal(np.asarray(y_int), np.asarray(quant.dequantize(codes, y_qp)))
    np.testing.assert_array_equal(codes, rq.requantize_reference(np.asarray(d["acc"]), d["requant"]))
    np.testing.assert_array_equal(np.asarray(jax.jit(i_layer.apply)(v, x)), np.asarray(y_int))
    # against the float-rescale layer quantized to the same output codes: within one code
    ref_codes = np.asarray(quant.quantize(y_float, y_qp))
    diff = np.abs(codes.astype(int) - ref_codes)
    assert diff.max() <= 1, diff.max()
    assert (diff == 0).mean() > 0.9
    lo, hi = y_qp.code_range
    assert codes.min() >= lo and codes.max() <= hi


@pytest.mark.slow
def test_integer_layer_straight_through_gradient():
    x, f_layer, i_layer, v = _layer_pair(*LAYERS[0])
    exact = QConv(16, 3, stride=2, padding=1, use_bias=True, norm=True, activation="relu6")
    g_int = jax.grad(lambda x: jnp.sum(i_layer.apply(v, x)))(x)
    g_exact = jax.grad(lambda x: jnp.sum(exact.apply(v, x)))(x)
    # the straight-through gradient is the exact layer's (BatchNorm applied, not folded: same function)
    np.testing.assert_allclose(np.asarray(g_int), np.asarray(g_exact), rtol=1e-4, atol=1e-5)


def test_integer_mode_needs_output_calibration():
    x, _, i_layer, v = _layer_pair(*LAYERS[2])
    stale = {**v, "quant": {k: a for k, a in v["quant"].items() if k.startswith("x_")}}
    with pytest.raises(ValueError, match="output calibration"):
        i_layer.apply(stale, x)
    with pytest.raises(ValueError, match="requant"):
        Plan.make({"*": {"multiplier": "int8", "requant": "fixed"}})
