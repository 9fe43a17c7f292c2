"""Property-based tests (hypothesis): random shapes, strides, dilations, paddings, groups, tables and codes.

Every LUT kernel (and ``auto``, eagerly and inside jit) must equal an independent integer reference written
here, bit for bit; the quantised layer must equal its integer definition; quantisation must round to the
nearest code. Hypothesis shrinks a failure to a minimal case and prints it (with the seed to replay it).

Example budget: the ``ci`` profile (the default, registered in ``tests/conftest.py``) runs a few seconds per
property; ``HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_properties.py`` (or
``--hypothesis-profile=thorough``) runs 500 random examples per property.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, note, settings, strategies as st  # noqa: E402

from jaxdepth import lutconv, multipliers, quant  # noqa: E402

CIRCUITS = {True: ["exact_s8", "mul8s_1KVA", "mul8s_1L2J", "trunc_s8_k3", "drum_s8_k4"],
            False: ["exact_u8", "mul8u_2AC", "mul8u_197B", "bam_u8_h5_v2", "mitchell_u8"]}


# ---- the independent reference ----------------------------------------------------------------------------
def reference_conv(x, w, table, stride, pads, dilation, groups, pad_code):
    """int32 sums of table[w & 0xFF, x & 0xFF] over each window, by explicit padding and per-output-channel
    fancy indexing in int64, wrapped to int32 (the definition accumulates modulo 2^32)."""
    x, w, table = np.asarray(x, np.int64), np.asarray(w, np.int64), np.asarray(table, np.int64)
    (pt, pb), (pl, pr) = pads
    n, h, wd, c = x.shape
    kh_n, kw_n, cg, n_out = w.shape
    xp = np.full((n, h + pt + pb, wd + pl + pr, c), pad_code, np.int64)
    xp[:, pt:pt + h, pl:pl + wd] = x
    span_h, span_w = dilation[0] * (kh_n - 1) + 1, dilation[1] * (kw_n - 1) + 1
    ho = max(0, (xp.shape[1] - span_h) // stride[0] + 1)
    wo = max(0, (xp.shape[2] - span_w) // stride[1] + 1)
    out = np.zeros((n, ho, wo, n_out), np.int64)
    og = n_out // groups
    for i in range(ho):
        for j in range(wo):
            rows = i * stride[0] + dilation[0] * np.arange(kh_n)
            cols = j * stride[1] + dilation[1] * np.arange(kw_n)
            win = xp[:, rows][:, :, cols] & 0xFF                      # (n, kh, kw, c)
            for o in range(n_out):
                g = o // og
                out[:, i, j, o] = table[w[..., o] & 0xFF, win[..., g * cg:(g + 1) * cg]].sum(axis=(1, 2, 3))
    return ((out + 2**31) % 2**32 - 2**31).astype(np.int32)


def same_pads(hw, khw, stride, dilation):
    """TensorFlow's SAME rule: output ceil(in / stride), the odd pixel at the bottom / right."""
    pads = []
    for size, k, s, d in zip(hw, khw, stride, dilation):
        total = max(0, (-(-size // s) - 1) * s + d * (k - 1) + 1 - size)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


# ---- strategies ---------------------------------------------------------------------------------------------
@st.composite
def tables(draw, signed):
    """A shipped circuit, a random full-rank table, an exact low-rank integer table (lowrank's domain) or a
    table with entries beyond 16 bits; all as (256, 256) int32 indexed [w_byte, x_byte]."""
    kind = draw(st.sampled_from(["circuit", "random", "lowrank", "wide"]))
    if kind == "circuit":
        return kind, multipliers.get(draw(st.sampled_from(CIRCUITS[signed]))).table
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    v = np.arange(256) - (np.arange(256) >= 128) * 256 if signed else np.arange(256)
    if kind == "random":
        return kind, (np.outer(v, v) + rng.integers(-500, 500, (256, 256))).astype(np.int32)
    if kind == "lowrank":
        rank = draw(st.integers(1, 3))
        u, t = rng.integers(-200, 200, (256, rank)), rng.integers(-200, 200, (256, rank))   # |u t| < 2^17
        return kind, (u @ t.T).astype(np.int32)
    return kind, rng.integers(-2**17 + 1, 2**17, (256, 256)).astype(np.int32)   # the widest allowed


@st.composite
def conv_problems(draw, max_hw=8):
    signed = draw(st.booleans())
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, 4))
    og = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    n = draw(st.integers(1, 2))
    h, w = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    padding = draw(st.one_of(st.integers(0, 2), st.sampled_from(["SAME", "VALID"]),
                             st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                                       st.tuples(st.integers(0, 2), st.integers(0, 2)))))
    lo, hi = (-128, 127) if signed else (0, 255)
    pad_code = draw(st.integers(lo, hi))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    codes = np.array([lo, hi, 0, lo + 1, hi - 1, -1 if signed else 1])
    def draw_codes(shape):   # uniform codes, or mostly the extremes (where wrap-around bugs live)
        if draw(st.booleans()):
            return rng.integers(lo, hi + 1, shape).astype(np.int32)
        return rng.choice(codes, shape).astype(np.int32)
    x = draw_codes((n, h, w, groups * cg)).astype(np.int8 if signed else np.uint8)
    wt = draw_codes((kh, kw, cg, groups * og)).astype(np.int8 if signed else np.uint8)
    kind, table = draw(tables(signed))
    if isinstance(padding, str):
        pads = ((0, 0), (0, 0)) if padding == "VALID" else same_pads((h, w), (kh, kw), stride, dilation)
    elif isinstance(padding, int):
        pads = ((padding, padding), (padding, padding))
    else:
        pads = padding
    note(f"x {x.shape} w {wt.shape} stride {stride} dilation {dilation} groups {groups} padding {padding!r} "
         f"pad_code {pad_code} signed {signed} table {kind}")
    return dict(x=x, w=wt, table=table, signed=signed, stride=stride, dilation=dilation, groups=groups,
                padding=padding, pads=pads, pad_code=pad_code)


def _conv(p, impl, x=None, table=None):
    return lutconv.conv2d(p["x"] if x is None else x, p["w"], p["table"] if table is None else table,
                          stride=p["stride"], padding=p["padding"], dilation=p["dilation"], groups=p["groups"],
                          pad_code=p["pad_code"], signed=p["signed"], impl=impl)


def _expected(p):
    return reference_conv(p["x"], p["w"], p["table"], p["stride"], p["pads"], p["dilation"], p["groups"],
                          p["pad_code"])


# ---- kernels ------------------------------------------------------------------------------------------------
@pytest.mark.slow
@given(conv_problems())
def test_every_kernel_equals_the_integer_reference(p):
    want = _expected(p)
    ran = []
    for impl in ["auto", *(i for i in lutconv.implementations() if i != "pallas")]:  # pallas: test_lutconv's matrix
        try:
            got = np.asarray(_conv(p, impl))
        except ValueError as e:
            if "cannot run" not in str(e):
                raise
            continue  # the kernel does not take this problem (e.g. dwrows: depthwise only); auto never errs
        assert got.dtype == np.int32 and got.shape == want.shape, impl
        np.testing.assert_array_equal(got, want, err_msg=f"impl={impl}")
        ran.append(impl)
    assert {"auto", "direct", "gather", "loop"} <= set(ran)


@settings(max_examples=max(4, settings().max_examples // 3))   # each example compiles: a third of the budget
@given(conv_problems(max_hw=6))
def test_auto_inside_jit_with_traced_codes_table_and_pad_code_equals_reference(p):
    def f(x, table, pad_code):
        return lutconv.conv2d(x, p["w"], table, stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
                              groups=p["groups"], pad_code=pad_code, signed=p["signed"])
    got = jax.jit(f)(jnp.asarray(p["x"]), jnp.asarray(p["table"]), jnp.int32(p["pad_code"]))
    np.testing.assert_array_equal(np.asarray(got), _expected(p))


# ---- quantisation -------------------------------------------------------------------------------------------
finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@given(st.booleans(), finite, finite, st.integers(0, 2**32 - 1))
def test_quantize_rounds_to_the_nearest_code_inside_the_range(signed, a, b, seed):
    lo, hi = min(a, b), max(a, b)
    qp = quant.activation_qparams(lo, hi, signed)
    scale, zero = float(qp.scale), int(qp.zero_point)
    qlo, qhi = qp.code_range
    assert qlo <= zero <= qhi
    v = np.random.default_rng(seed).uniform(lo, hi, 64).astype(np.float32)
    codes = np.asarray(quant.quantize(v, qp))
    assert codes.min() >= qlo and codes.max() <= qhi
    back = np.asarray(quant.dequantize(codes, qp), np.float64)
    # inside the representable range every value is within half a step of its code's value
    inside = (v >= (qlo - zero) * scale) & (v <= (qhi - zero) * scale)
    assert np.all(np.abs(back - v)[inside] <= 0.5 * scale * (1 + 1e-5) + 1e-6 * np.abs(v[inside]))
    assert np.all(np.diff(codes[np.argsort(v, kind="stable")]) >= 0)   # monotone
    assert np.asarray(quant.quantize(np.float32(0), qp)) == zero       # real 0 is exactly representable


@st.composite
def float_layers(draw):
    p = draw(conv_problems(max_hw=6))
    signed = p["signed"]
    name = draw(st.sampled_from(CIRCUITS[signed]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(draw(st.floats(-1, 1)), draw(st.floats(0.1, 3)), p["x"].shape).astype(np.float32)
    w = rng.normal(0, draw(st.floats(0.01, 1)), p["w"].shape).astype(np.float32)
    b = rng.normal(size=p["w"].shape[-1]).astype(np.float32)
    return p | dict(xf=x, wf=w, bias=b, mult=multipliers.get(name), per_channel=draw(st.booleans()))


@settings(max_examples=max(4, settings().max_examples // 2))   # each example compiles the layer
@given(float_layers())
def test_quantised_layer_equals_its_integer_definition(p):
    """y = s_x s_w[o] (sum lut[w, x] - z_x sum w - z_w[o] sum x + K z_x z_w[o]) + b, computed here per
    product in int64 (code - zero-point corrections element by element) from codes quantised in NumPy."""
    m, x, w = p["mult"], p["xf"], p["wf"]
    x_qp = quant.activation_qparams(x.min(), x.max(), m.signed)
    w_qp = quant.weight_qparams(w, m.signed, p["per_channel"])
    layer = jax.jit(lambda x, w, b: quant.lut_conv2d(x, w, b, m, x_qp, stride=p["stride"], padding=p["padding"],
                                                     dilation=p["dilation"], groups=p["groups"],
                                                     per_channel=p["per_channel"]))   # one compile, not one per op
    got = np.asarray(layer(x, w, p["bias"]))
    lo, hi = x_qp.code_range
    def codes(v, qp):
        return np.clip(np.round(v / np.asarray(qp.scale, np.float32)).astype(np.int64) + np.asarray(qp.zero_point),
                       lo, hi)
    xc, wc = codes(x, x_qp), codes(w, w_qp)
    z_x = int(x_qp.zero_point)
    z_w = np.broadcast_to(np.asarray(w_qp.zero_point, np.int64), (w.shape[-1],))
    ones = np.ones_like(xc)
    # sum over the window of lut[w, x] - z_x * w - z_w * x + z_x * z_w, each term by the reference conv
    lut_sum = reference_conv(xc, wc, m.table, p["stride"], p["pads"], p["dilation"], p["groups"], z_x)
    ident = np.arange(256, dtype=np.int64)
    w_sum = reference_conv(ones, wc, np.broadcast_to(ident[:, None], (256, 256)), p["stride"], p["pads"],
                           p["dilation"], p["groups"], 1)
    x_sum = reference_conv(xc, np.ones_like(wc), np.broadcast_to(ident[None, :], (256, 256)), p["stride"],
                           p["pads"], p["dilation"], p["groups"], z_x)
    k = w.shape[0] * w.shape[1] * w.shape[2]
    if m.signed:   # the table holds the products of the signed codes; no zero points
        acc = lut_sum.astype(np.int64)
    else:
        acc = lut_sum.astype(np.int64) - z_x * w_sum - z_w * x_sum + k * z_x * z_w
    scale = np.float32(x_qp.scale) * np.asarray(w_qp.scale, np.float32)
    want = acc.astype(np.float32) * scale + p["bias"]
    tol = 1e-5 * max(1.0, float(np.abs(want).max(initial=0)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=tol)
