"""The quantised layer semantics against a plain integer NumPy reference written here."""
import zlib

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from jaxdepth import lutconv, multipliers, quant


def _codes(v, scale, zero, lo, hi):
    """code = clip(round(v / s) + z): the quotient in float32, as the spec defines it (a float64 quotient
    rounds differently for about one value in 10^6, which flips a code)."""
    quotient = np.asarray(v, np.float32) / np.asarray(scale, np.float32)
    return np.clip(np.round(quotient).astype(np.int64) + zero, lo, hi)


def reference_layer(x, w, bias, table, signed, x_scale, x_zero, w_scale, w_zero, pad, stride, groups):
    """Integer reference: explicit loops over output pixels, exact zero-point algebra in int64."""
    lo, hi = (-128, 127) if signed else (0, 255)
    xc = _codes(x, x_scale, x_zero, lo, hi)
    wc = _codes(w, w_scale, w_zero, lo, hi)
    xc = np.pad(xc, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=x_zero)
    n, h, wd, c = xc.shape
    kh, kw, cg, o = wc.shape
    og = o // groups
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, ho, wo, o))
    for oc in range(o):
        g = oc // og
        wk = wc[..., oc]
        for i in range(ho):
            for j in range(wo):
                patch = xc[:, i * stride:i * stride + kh, j * stride:j * stride + kw, g * cg:(g + 1) * cg]
                acc = table[wk[None] & 0xFF, patch & 0xFF].reshape(n, -1).sum(1)
                acc = acc - x_zero * wk.sum() - np.broadcast_to(w_zero, (o,))[oc] * patch.reshape(n, -1).sum(1) \
                    + wk.size * x_zero * np.broadcast_to(w_zero, (o,))[oc]
                out[:, i, j, oc] = acc * x_scale * np.broadcast_to(w_scale, (o,))[oc] + bias[oc]
    return out


@pytest.mark.parametrize("name", ["exact_s8", "mul8s_1L2J", "exact_u8", "mul8u_2AC"])
@pytest.mark.parametrize("pad,stride,groups", [(1, 1, 1), (1, 2, 2), (0, 1, 4)])
def test_lut_conv2d_matches_integer_reference(name, pad, stride, groups):
    rng = np.random.default_rng(zlib.crc32(f"{name}-{pad}-{stride}-{groups}".encode()))  # same data every run
    m = multipliers.get(name)
    x = rng.normal(0.3, 1.0, (2, 7, 6, 8)).astype(np.float32)
    w = rng.normal(0, 0.5, (3, 3, 8 // groups, 8)).astype(np.float32)
    b = rng.normal(size=8).astype(np.float32)
    x_qp = quant.activation_qparams(x.min(), x.max(), m.signed)
    w_qp = quant.weight_qparams(w, m.signed, per_channel=True)
    got = np.asarray(quant.lut_conv2d(x, w, b, m, x_qp, padding=pad, stride=stride, groups=groups))
    want = reference_layer(x, w, b, m.table, m.signed, float(x_qp.scale), int(x_qp.zero_point),
                           np.asarray(w_qp.scale, np.float64), np.asarray(w_qp.zero_point), pad, stride, groups)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * np.abs(want).max())


def test_unsigned_padding_uses_zero_point_code():
    """With x = 0 everywhere, the unsigned exact layer returns the bias even at padded borders."""
    m = multipliers.get("exact_u8")
    x = np.zeros((1, 4, 4, 2), np.float32)
    w = np.random.default_rng(0).normal(size=(3, 3, 2, 3)).astype(np.float32)
    b = np.array([0.5, -1.0, 2.0], np.float32)
    x_qp = quant.activation_qparams(-1.0, 3.0, signed=False)
    assert int(x_qp.zero_point) > 0
    y = quant.lut_conv2d(x, w, b, m, x_qp, padding=1)
    np.testing.assert_allclose(np.asarray(y), np.broadcast_to(b, y.shape), atol=1e-6)


def test_exact_tables_equal_float_conv_of_quantized_values():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 9, 9, 4)).astype(np.float32)
    w = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    for signed in (True, False):
        m = multipliers.exact(signed)
        x_qp = quant.activation_qparams(x.min(), x.max(), signed)
        w_qp = quant.weight_qparams(w, signed)
        y = quant.lut_conv2d(x, w, None, m, x_qp, padding="SAME", stride=2)
        ref = jax.lax.conv_general_dilated(quant.fake_quantize(x, x_qp), quant.fake_quantize(w, w_qp), (2, 2),
                                           "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_dense_and_jit_with_traced_qparams():
    rng = np.random.default_rng(2)
    m = multipliers.get("mul8s_1KV9")
    x = rng.normal(size=(3, 17)).astype(np.float32)
    w = rng.normal(size=(17, 4)).astype(np.float32)
    x_qp = quant.activation_qparams(x.min(), x.max(), True)
    eager = quant.lut_dense(x, w, None, m, x_qp)
    jitted = jax.jit(lambda x, s, z: quant.lut_dense(x, w, None, m, quant.QParams(s, z, True)))(
        x, x_qp.scale, x_qp.zero_point)
    np.testing.assert_array_equal(np.asarray(eager), np.asarray(jitted))


@pytest.mark.slow
def test_straight_through_gradient_is_exact_layer_gradient():
    rng = np.random.default_rng(3)
    m = multipliers.get("mul8s_1L2J")
    x = rng.normal(size=(1, 6, 6, 3)).astype(np.float32)
    w = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)
    x_qp = quant.activation_qparams(x.min(), x.max(), True)
    g_ste = jax.grad(lambda w: (quant.lut_conv2d(x, w, None, m, x_qp, padding=1, straight_through=True) ** 2).sum()
                     )(w)
    y_lut = quant.lut_conv2d(x, w, None, m, x_qp, padding=1)

    def exact_loss_with_lut_cotangent(w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return (2 * y_lut * y).sum()  # d/dw of sum(y^2) evaluated at the forward value y_lut
    np.testing.assert_allclose(np.asarray(g_ste), np.asarray(jax.grad(exact_loss_with_lut_cotangent)(w)),
                               rtol=1e-5, atol=1e-4)
    forward = quant.lut_conv2d(x, w, None, m, x_qp, padding=1, straight_through=True)
    np.testing.assert_array_equal(np.asarray(forward), np.asarray(y_lut))  # the forward stays bit-exact


def test_signedness_mismatch_and_bad_observer():
    m = multipliers.get("exact_u8")
    with pytest.raises(ValueError, match="signed"):
        quant.lut_conv2d(np.zeros((1, 3, 3, 1), np.float32), np.zeros((1, 1, 1, 1), np.float32), None, m,
                         quant.activation_qparams(-1, 1, True))
    with pytest.raises(ValueError, match="calibration method"):
        quant.Observer("median")
    with pytest.raises(ValueError, match="NaN"):
        quant.Observer().update(np.array([np.nan]))


def test_observers_ranges():
    rng = np.random.default_rng(4)
    data = rng.normal(size=100_000).astype(np.float32)
    data[0] = 50.0  # one outlier
    mm, pc, mse = quant.Observer("minmax"), quant.Observer("percentile", 99.9), quant.Observer("mse")
    for batch in np.split(data, 4):
        for ob in (mm, pc, mse):
            ob.update(batch)
    assert mm.range(True) == (float(data.min()), 50.0)
    lo, hi = pc.range(True)
    assert 2.5 < hi < 4.0 and -4.0 < lo < -2.5
    assert mse.range(True)[1] < 50.0
    qp = mm.qparams(False)
    assert 0 < int(qp.zero_point) < 255
    codes = quant.quantize(np.array([data.min(), 0.0, 50.0]), qp)
    assert list(np.asarray(codes))[1] == int(qp.zero_point) and int(codes[0]) == 0 and int(codes[2]) == 255


# ---- argument checking of the table layers ---------------------------------------------------------------------
def _small_layer():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 7, 4)).astype(np.float32)
    w = (rng.normal(size=(3, 3, 4, 4)) * 0.1).astype(np.float32)
    m = multipliers.get("exact_s8")
    return x, w, m, quant.activation_qparams(x.min(), x.max(), True)


def test_activation_and_output_qparams_must_be_per_tensor():
    """Per-channel activation parameters were used as if per output channel (a silently wrong result)."""
    x, w, m, qp = _small_layer()
    per_channel = quant.activation_qparams(x.min(axis=(0, 1, 2)), x.max(axis=(0, 1, 2)), True)
    calls = [lambda q: quant.lut_conv2d(x, w, None, m, q, padding=1),
             lambda q: quant.lut_conv2d(x, np.concatenate([w, w], -1), None, m, q, padding=1),
             lambda q: quant.lut_dense(x[:, 0, 0], w[0, 0], None, m, q),
             lambda q: quant.lut_conv2d_requant(x, w, None, m, q, qp, padding=1),
             lambda q: jax.jit(lambda s, z: quant.lut_conv2d(x, w, None, m, quant.QParams(s, z, True)))(
                 q.scale, q.zero_point)]
    for bad in (per_channel, quant.weight_qparams(w, True)):
        for call in calls:
            with pytest.raises(ValueError, match=r"activation qparams must be per tensor .* shape \(4,\)"):
                call(bad)
    with pytest.raises(ValueError, match="output qparams must be per tensor"):
        quant.lut_conv2d_requant(x, w, None, m, qp, per_channel, padding=1)


def test_concrete_runtime_table_is_validated_as_lutconv_does():
    x, w, m, qp = _small_layer()
    for bad, match in ((m.table + 0.7, "non-integer entries"),
                       (m.table.astype(np.int64) + 2 ** 32, r"within \+-2\^17")):
        with pytest.raises(ValueError, match=match):
            quant.lut_conv2d(x, w, None, m, qp, padding=1, table=bad)
        with pytest.raises(ValueError, match=match):
            quant.lut_conv2d_requant(x, w, None, m, qp, qp, padding=1, table=bad)
        with pytest.raises(ValueError, match=match):
            lutconv.conv2d(np.zeros((1, 3, 3, 4), np.int8), np.zeros((1, 1, 4, 2), np.int8), bad)
    want = np.asarray(quant.lut_conv2d(x, w, None, m, qp, padding=1))
    traced = jax.jit(lambda t: quant.lut_conv2d(x, w, None, m, qp, padding=1, table=t))(m.table)
    np.testing.assert_array_equal(np.asarray(traced), want)        # traced integer tables keep working
    with pytest.raises(ValueError, match="traced product table must have an integer dtype"):
        jax.jit(lambda t: quant.lut_conv2d(x, w, None, m, qp, padding=1, table=t))(m.table + 0.5)


def test_requant_output_qparams_are_validated():
    x, w, m, qp = _small_layer()

    def y_qp(scale, zero=0, signed=True):
        return quant.QParams(jnp.float32(scale), jnp.int32(zero), signed)
    for scale in (0.0, -0.01, np.nan, np.inf):
        with pytest.raises(ValueError, match=r"output qparams scale .* must be finite and positive"):
            quant.lut_conv2d_requant(x, w, None, m, qp, y_qp(scale), padding=1)
    with pytest.raises(ValueError, match=r"output qparams zero point 300 must be an integer in the code range"):
        quant.lut_conv2d_requant(x, w, None, m, qp, y_qp(0.01, 300), padding=1)
    u8 = multipliers.get("exact_u8")
    uqp = quant.activation_qparams(x.min(), x.max(), False)
    with pytest.raises(ValueError, match=r"zero point -1 must be an integer in the code range \[0, 255\]"):
        quant.lut_conv2d_requant(x, w, None, u8, uqp, y_qp(0.01, -1, False), padding=1)
    # a valid output quantization: the requantized result is the float layer's, rounded to the output codes
    out = y_qp(0.02)
    got = np.asarray(quant.lut_conv2d_requant(x, w, None, m, qp, out, padding=1))
    want = np.asarray(quant.lut_conv2d(x, w, None, m, qp, padding=1))
    np.testing.assert_allclose(got, np.clip(want, -128 * 0.02, 127 * 0.02), atol=0.02 / 2 + 1e-6)


def test_signed_activation_zero_point_must_be_zero():
    """Signed layers apply no zero-point correction: a non-zero activation zero point gave a wrong result."""
    x, w, m, qp = _small_layer()
    with pytest.raises(ValueError, match="activation qparams zero point 5 must be 0"):
        quant.lut_conv2d(x, w, None, m, quant.QParams(qp.scale, jnp.int32(5), True), padding=1)


def test_layer_argument_errors_name_the_argument():
    x, w, m, qp = _small_layer()
    with pytest.raises(ValueError, match=r"bias must have one value per output channel \(4,\) .* got shape \(3,\)"):
        quant.lut_conv2d(x, w, np.zeros(3, np.float32), m, qp, padding=1)
    with pytest.raises(ValueError, match=r"bias must have one value per output channel \(4,\)"):
        quant.lut_dense(x[:, 0, 0], w[0, 0], np.zeros(5, np.float32), m, qp)
    with pytest.raises(ValueError, match=r"w_qp \(weight qparams\) scale must be a scalar or one per output channel"):
        quant.lut_conv2d(x, w, None, m, qp, padding=1, w_qp=quant.weight_qparams(w[..., :3], True))
    with pytest.raises(ValueError, match="w_qp .* are unsigned but multiplier exact_s8 is signed"):
        quant.lut_conv2d(x, w, None, m, qp, padding=1, w_qp=quant.weight_qparams(w, False))
    with pytest.raises(TypeError, match=r"got the name 'exact_s8': pass multipliers.get\('exact_s8'\)"):
        quant.lut_conv2d(x, w, None, "exact_s8", qp, padding=1)
    with pytest.raises(TypeError, match="got ndarray.* a bare .* table goes in table="):
        quant.lut_dense(x[:, 0, 0], w[0, 0], None, m.table, qp)
    with pytest.raises(ValueError, match="groups must be a positive int, got 2.7"):   # was truncated to 2
        quant.lut_conv2d(x, w[:, :, :2], None, m, qp, padding=1, groups=2.7)
    with pytest.raises(ValueError, match="lut_dense: x has 4 features but w"):
        quant.lut_dense(x[:, 0, 0], w[0, 0, :3], None, m, qp)
    scalar_bias = quant.lut_conv2d(x, w, np.float32(0.5), m, qp, padding=1)       # a scalar bias broadcasts
    np.testing.assert_array_equal(np.asarray(scalar_bias),
                                  np.asarray(quant.lut_conv2d(x, w, np.full(4, 0.5, np.float32), m, qp, padding=1)))
