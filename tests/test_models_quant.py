"""Quantized arithmetic of the Flax models: int8 / LUT layers against independent integer references,
BatchNorm folding, calibration, the plan table, straight-through gradients and EvoApprox circuits."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth import models, multipliers, quant
from jaxdepth.io import checkpoint
from jaxdepth.models import Plan, QConv, QDense
from jaxdepth.multipliers.metrics import errors

torch = pytest.importorskip("torch")

from jaxdepth.convert import convert_state_dict  # noqa: E402
from jaxdepth.convert import torch_reference as tr  # noqa: E402


def _codes(v, scale, signed=True, zero=0):
    lo, hi = (-128, 127) if signed else (0, 255)
    return np.clip(np.round(v / scale) + zero, lo, hi)


def _torch_conv_f64(x_nhwc, w_hwio, stride, padding, groups, pad_value=0.0):
    x = torch.from_numpy(np.asarray(x_nhwc, np.float64)).permute(0, 3, 1, 2)
    x = torch.nn.functional.pad(x, (padding,) * 4, value=pad_value)
    w = torch.from_numpy(np.asarray(w_hwio, np.float64)).permute(3, 2, 0, 1)
    return torch.nn.functional.conv2d(x, w, stride=stride, groups=groups).permute(0, 2, 3, 1).numpy()


def _fold(params, stats, eps=1e-5):
    mul = np.asarray(params["bn"]["scale"], np.float64) / np.sqrt(np.asarray(stats["bn"]["var"], np.float64) + eps)
    kernel = np.asarray(params["kernel"], np.float64) * mul
    bias = np.asarray(params.get("bias", 0.0), np.float64) * mul + (
        np.asarray(params["bn"]["bias"], np.float64) - np.asarray(stats["bn"]["mean"], np.float64) * mul)
    return kernel, bias


LAYERS = [  # (features, kernel, stride, padding, groups, bias, norm, multiplier, c_in)
    (24, 3, 2, 1, 1, False, True, "int8", 16),        # standard conv + folded BatchNorm
    (32, 3, 1, 1, 32, False, True, "int8", 32),       # depthwise + folded BatchNorm
    (20, 1, 1, 1, 1, True, False, "int8", 40),        # pointwise with bias and padding (decoder conv2 style)
    (12, 3, 1, 1, 1, True, False, "exact_u8", 8),     # unsigned affine arithmetic
]


@pytest.mark.parametrize("features,k,stride,padding,groups,bias,norm,mult,c_in", LAYERS)
def test_qconv_matches_integer_reference(features, k, stride, padding, groups, bias, norm, mult, c_in):
    rng = np.random.default_rng(features)
    x = np.maximum(rng.normal(size=(2, 9, 11, c_in)), -0.3).astype(np.float32)
    layer = QConv(features, k, stride=stride, padding=padding, groups=groups, use_bias=bias, norm=norm,
                  plan=Plan.make({"*": mult}))
    v = models.init_variables(layer, 0, x.shape)
    if norm:  # non-trivial BatchNorm
        v["params"]["bn"] = {"scale": jnp.asarray(rng.uniform(0.5, 1.5, features), jnp.float32),
                             "bias": jnp.asarray(rng.normal(0, 0.2, features), jnp.float32)}
        v["batch_stats"] = {"bn": {"mean": jnp.asarray(rng.normal(0, 0.2, features), jnp.float32),
                                   "var": jnp.asarray(rng.uniform(0.5, 2, features), jnp.float32)}}
        w, b = _fold(v["params"], v["batch_stats"])
    else:
        w, b = np.asarray(v["params"]["kernel"], np.float64), np.asarray(v["params"].get("bias", 0.0))
    signed = mult == "int8"
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    if signed:
        s_x, z_x = max(-lo, hi) / 127, 0
        s_w, z_w = np.abs(w).max(axis=(0, 1, 2)) / 127, np.zeros(features)
    else:
        s_x = (hi - lo) / 255
        z_x = int(np.clip(np.round(-lo / s_x), 0, 255))
        w_lo, w_hi = np.minimum(w.min(axis=(0, 1, 2)), 0), np.maximum(w.max(axis=(0, 1, 2)), 0)
        s_w = (w_hi - w_lo) / 255
        z_w = np.clip(np.round(-w_lo / s_w), 0, 255)
    v["quant"] = {f"x_scale_{'int8' if signed else 'uint8'}": jnp.float32(s_x),
                  f"x_zero_point_{'int8' if signed else 'uint8'}": jnp.int32(z_x)}
    xc = _codes(x, s_x, signed, z_x) - z_x                        # integer values the codes stand for
    wc = _codes(w, s_w, signed, z_w) - z_w
    acc = _torch_conv_f64(xc, wc, stride, padding, groups)       # exact integers (pads hold real 0)
    ref = acc * (s_x * s_w) + b
    out = np.asarray(jax.jit(layer.apply)(v, x))
    float_out = _torch_conv_f64(x, w, stride, padding, groups) + b
    scale = np.abs(float_out).max()
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= 1e-5 * scale                # the integer semantics, BN folded
    assert 0 < np.abs(out - float_out).max() <= 0.03 * scale       # and close to the float layer


def test_qdense_float_and_int8():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 40)).astype(np.float32)
    layer = QDense(7, plan=Plan.make({"*": "int8"}))
    v = models.init_variables(layer, 1, x.shape)
    w, b = np.asarray(v["params"]["kernel"], np.float64), np.asarray(v["params"]["bias"], np.float64)
    lin = torch.nn.Linear(40, 7).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w.T))
        lin.bias.copy_(torch.from_numpy(b))
        ref = lin(torch.from_numpy(x.astype(np.float64))).numpy()
    np.testing.assert_allclose(QDense(7).apply(v, x), ref, rtol=1e-5, atol=1e-5)
    s_x, s_w = np.abs(x).max() / 127, np.abs(w).max(axis=0) / 127
    v["quant"] = {"x_scale_int8": jnp.float32(s_x), "x_zero_point_int8": jnp.int32(0)}
    ref_q = (_codes(x, s_x) @ _codes(w, s_w)) * (s_x * s_w) + b
    np.testing.assert_allclose(layer.apply(v, x), ref_q, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_ste_gradient_is_the_exact_layer_gradient():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(1, 8, 8, 6)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(1, 8, 8, 5)), jnp.float32)
    lut_layer = QConv(5, 3, padding=1, use_bias=True, plan=Plan.make({"*": "mul8s_1L2J"}))
    float_layer = QConv(5, 3, padding=1, use_bias=True)
    v = models.init_variables(float_layer, 0, x.shape)
    vq = {**v, "quant": {"x_scale_int8": jnp.float32(float(jnp.abs(x).max()) / 127),
                        "x_zero_point_int8": jnp.int32(0)}}

    def loss(params, x, layer, variables):
        return jnp.sum(layer.apply({**variables, "params": params}, x) * g)

    gq = jax.grad(loss, argnums=(0, 1))(v["params"], x, lut_layer, vq)
    gf = jax.grad(loss, argnums=(0, 1))(v["params"], x, float_layer, v)
    for a, b in zip(jax.tree_util.tree_leaves(gq), jax.tree_util.tree_leaves(gf)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(lut_layer.apply(vq, x), float_layer.apply(v, x), atol=1e-3)


# ---- whole models -------------------------------------------------------------------------------------------
def _converted(preset, seed=0):
    torch.manual_seed(seed)
    tm = tr.randomize_batchnorm(tr.DenseDepth(preset), seed).eval()
    return convert_state_dict(tm.state_dict())[:2]


def _features_and_output(mod, x):
    feats = mod.encoder(x)
    return feats, mod.decoder(feats)


@pytest.fixture(scope="module")
def lite():
    """A converted mobilenetv2_lite, an image, its float features and output, and every layer calibrated."""
    preset, variables = _converted("mobilenetv2_lite")
    x = np.random.default_rng(0).random((1, 64, 96, 3), dtype=np.float32)
    model = models.build(preset)
    feats, float_out = models.compile_apply(model, variables, x.shape, method=_features_and_output,
                                            fast_compile=True)(variables, x)
    calibrated = models.calibrate(model, variables, x, layers="all", fast_compile=True)
    return preset, variables, x, np.asarray(float_out), feats, calibrated


def _run(preset, plan, variables, x, calibrated=None):
    model = models.build(preset, plan=plan)
    v = calibrated if calibrated is not None else models.calibrate(model, variables, x, fast_compile=True)
    fn = models.compile_apply(model, v, x.shape, fast_compile=True)
    return np.asarray(fn(v, x)), fn, v


def _decode(preset, plan, variables, feats):
    """The decoder alone (float encoder features in), under ``plan``."""
    m = models.build(preset, plan=plan)
    return np.asarray(jax.jit(lambda v, f: m.apply(v, f, method=lambda mod, f: mod.decoder(f)))(variables, feats))


@pytest.mark.slow
def test_int8_model_close_to_float_and_evoapprox_ordering(lite):
    preset, variables, x, float_out, feats, calibrated = lite
    int8, _, _ = _run(preset, {"*": "int8"}, variables, x, calibrated)
    scale = np.abs(float_out).max()
    # measured on this random-weight network: max |int8 - float| = 3.5% of max |float| (66 layers quantized)
    assert 0 < np.abs(int8 - float_out).max() <= 0.05 * scale
    # EvoApprox circuits in the decoder: the output moves away from the int8 output in the order of the
    # circuits' mean absolute error (1KV8: MAE 1.25, 1L2J: MAE 53.3 of products up to 2^14)
    dec = {name: _decode(preset, {"decoder.*": name}, calibrated, feats)
           for name in ("int8", "mul8s_1KV8", "mul8s_1L2J")}
    dev = {n: float(np.sqrt(np.mean((dec[n] - dec["int8"]) ** 2))) for n in ("mul8s_1KV8", "mul8s_1L2J")}
    mae = {n: multipliers.metrics(multipliers.get(n))["MAE"] for n in dev}
    assert mae["mul8s_1KV8"] < mae["mul8s_1L2J"]
    assert 0 < dev["mul8s_1KV8"] < dev["mul8s_1L2J"]


def test_uncalibrated_model_raises_and_plan_table(lite):
    preset, variables, x = lite[:3]
    model = models.build(preset, plan={"decoder.up1.convA": "mul8s_1L2J", "decoder.*": "mul8s_1KV8",
                                       "encoder.*": "int8", "nowhere.*": "int8"})
    with pytest.raises(ValueError, match="calibrate"):
        model.apply(variables, x)
    table = models.plan_table(model, (1, 240, 320, 3))
    rows = {line.split()[0]: line for line in table.splitlines()[2:-2]}
    assert "mul8s_1L2J" in rows["decoder.up1.convA"] and "mul8s_1KV8" in rows["decoder.up1.convB"]
    assert "int8 +BN" in rows["encoder.block3.depthwise"] and "depthwise" in rows["encoder.block3.depthwise"]
    # decoder.conv2: 1x1 on the 8x10x1280 bottleneck, padding 1 -> 10x12 outputs, 320 channels
    assert "49.2M" in rows["decoder.conv2"]
    assert len(rows) == len(models.describe(model, (1, 240, 320, 3)))
    assert "patterns matching no layer: nowhere.*" in table


@pytest.mark.slow
def test_calibration_methods_and_quantized_checkpoint(lite, tmp_path):
    preset, variables, x = lite[:3]
    plan = {"decoder.*": "mul8s_1KV8"}
    out, fn, calibrated = _run(preset, plan, variables, x)
    model = models.build(preset, plan=plan)
    assert set(calibrated["quant"]) == {"decoder"}
    scales = {}
    for method in ("percentile",):
        vm = models.calibrate(model, variables, x, method=method, fast_compile=True)
        scales[method] = float(vm["quant"]["decoder"]["up2"]["convA"]["x_scale_int8"])
    minmax = float(calibrated["quant"]["decoder"]["up2"]["convA"]["x_scale_int8"])
    assert scales["percentile"] <= minmax
    checkpoint.save(tmp_path / "q", preset, calibrated, plan=plan)
    model2, v2, info = checkpoint.load(tmp_path / "q")
    assert info["plan"]["rules"] == plan and model2.plan.resolve("decoder.up1.convA").label == "mul8s_1KV8"
    assert model2 == model
    np.testing.assert_array_equal(np.asarray(fn(v2, x)), out)


@pytest.mark.slow
def test_straight_through_finetuning_step_lowers_the_loss(lite):
    """Approximation-aware fine-tuning: the decoder runs through mul8s_1L2J, gradients are straight-through."""
    preset, _, x, float_out, feats, v = lite
    model = models.build(preset, plan={"decoder.*": "mul8s_1L2J"})
    target = jnp.asarray(float_out) * 1.2 + 0.01

    def loss(params):
        out = model.apply({**v, "params": params}, feats, method=lambda mod, f: mod.decoder(f))
        return jnp.mean((out - target) ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(loss)).lower(v["params"]).compile(
        compiler_options=models.densedepth.FAST_COMPILE_OPTIONS)
    before, grads = value_and_grad(v["params"])
    gnorm = float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree_util.tree_leaves(grads))))
    assert gnorm > 0
    params = jax.tree_util.tree_map(lambda p, g: p - 0.05 * float(before) / gnorm * g, v["params"], grads)
    after, _ = value_and_grad(params)
    assert float(after) < float(before)


@pytest.mark.slow
def test_densenet161_decoder_conv2_exact_table_and_evoapprox():
    """The DenseNet-161 decoder's conv2 (2208 -> 1104, padding 1): exact table == int8 bit for bit; an
    EvoApprox circuit shifts every accumulator by exactly the sum of its table errors."""
    torch.manual_seed(4)
    tm = tr.randomize_batchnorm(tr.DenseDepth("densenet161"), 4).eval()
    preset, variables, _ = convert_state_dict(tm.state_dict())
    x = np.random.default_rng(4).random((1, 64, 96, 3), dtype=np.float32)
    with torch.no_grad():   # the encoder features from PyTorch (the float encoders are tested in test_convert)
        feats = [f.permute(0, 2, 3, 1).numpy() for f in tm.encoder(torch.from_numpy(x).permute(0, 3, 1, 2))]
    bottleneck = feats[preset.tap_index(preset.bottleneck)]
    qp = quant.Observer("minmax")
    qp.update(bottleneck)                                                  # = calibrate(), for this one layer
    qp = qp.qparams(signed=True)
    v = {**variables, "quant": {"decoder": {"conv2": {"x_scale_int8": qp.scale, "x_zero_point_int8": qp.zero_point}}}}
    float_out = _decode(preset, None, v, feats)
    int8 = _decode(preset, {"decoder.conv2": "int8"}, v, feats)
    table = _decode(preset, {"decoder.conv2": {"multiplier": "exact_s8", "impl": "gather"}}, v, feats)
    np.testing.assert_array_equal(table, int8)
    # only conv2 quantized: the decoder output moves by 7.6e-6 of its scale (conv2 is small next to the skip
    # features in this random network); the layer itself is checked below
    assert 0 < np.abs(int8 - float_out).max() <= 1e-3 * np.abs(float_out).max()

    # conv2 alone through mul8s_1L2J vs int8: delta acc == sum of e[w, x] over the (zero-padded) window
    conv_vars = {"params": v["params"]["decoder"]["conv2"], "quant": v["quant"]["decoder"]["conv2"]}
    outs = {}
    for name in ("float", "int8", "mul8s_1L2J"):
        layer = QConv(1104, 1, padding=1, use_bias=True, plan=Plan.make({"*": name}))
        outs[name] = np.asarray(jax.jit(layer.apply)(conv_vars, bottleneck), np.float64)
    layer_scale = np.abs(outs["float"]).max()
    assert 0 < np.abs(outs["int8"] - outs["float"]).max() <= 0.02 * layer_scale
    x_qp = quant.QParams(conv_vars["quant"]["x_scale_int8"], conv_vars["quant"]["x_zero_point_int8"], True)
    w = conv_vars["params"]["kernel"][0, 0]                             # (2208, 1104)
    w_qp = quant.weight_qparams(w, True)
    w_bytes = np.asarray(quant.quantize(w, w_qp), np.int64) & 0xFF          # the codes of jaxdepth.quant
    x_codes = np.asarray(quant.quantize(bottleneck[0], x_qp), np.int64)
    x_bytes = np.pad(x_codes, ((1, 1), (1, 1), (0, 0))) & 0xFF
    s_x, s_w = float(x_qp.scale), np.asarray(w_qp.scale, np.float64)
    err = errors(multipliers.get("mul8s_1L2J"))                          # e[w, x] = table - w * x
    expected = np.stack([err[w_bytes, x_bytes[i, j][:, None]].sum(axis=0)
                         for i in range(x_bytes.shape[0]) for j in range(x_bytes.shape[1])])
    delta = ((outs["mul8s_1L2J"] - outs["int8"]) / (s_x * s_w)).reshape(expected.shape)
    np.testing.assert_allclose(delta, expected, atol=0.5)
    wce = multipliers.metrics(multipliers.get("mul8s_1L2J"))["WCE"]
    assert np.abs(expected).max() <= 2208 * wce and np.abs(expected).max() > 0


@pytest.mark.slow
def test_plan_impl_list_restricts_auto_and_keeps_the_output(lite):
    """``{"impl": [kernels]}``: auto chooses among those kernels only (here the callback kernels, which
    compile fastest); every kernel is bit-exact, so the model output is the same as with plain auto."""
    preset, variables, x, _, _, calibrated = lite
    only = ["wstat", "dwrows", "direct"]
    restricted = {"*": {"multiplier": "mul8u_2AC", "impl": only}}
    infos = models.describe(models.build(preset, plan=restricted), x.shape)
    chosen = {info.kernel().split(" ")[0] for info in infos}
    assert chosen <= set(only) and len(chosen) >= 2   # (depthwise layers: direct or dwrows, by the host's rates)
    auto_kernels = {info.kernel().split(" ")[0] for info in models.describe(
        models.build(preset, plan={"*": "mul8u_2AC"}), x.shape)}
    assert "lowrank" in auto_kernels
    out_restricted, _, _ = _run(preset, restricted, variables, x, calibrated)
    out_auto, _, _ = _run(preset, {"*": "mul8u_2AC"}, variables, x, calibrated)
    np.testing.assert_array_equal(out_restricted, out_auto)
    with pytest.raises(ValueError, match="among"):
        _run(preset, {"*": {"multiplier": "mul8u_2AC", "impl": ["dwrows"]}}, variables, x, calibrated)  # depthwise only


# ---- calibration: signedness in the keys, refused inputs, the bundled (legacy-key) checkpoint ------------------
BUNDLED = str(Path(models.__file__).parent.parent / "assets" / "default_model" / "checkpoint")


@pytest.fixture(scope="module")
def bundled():
    """The bundled model (calibrated signed int8 for every layer), one 120x160 sample in [0, 1], and a
    decoder-unsigned model calibrated for its own plan (the reference a reusable calibration must match)."""
    from jaxdepth.io import images
    fm, v, _ = checkpoint.load(BUNDLED)
    x = images.read_rgb(str(Path(BUNDLED).parent.parent / "samples" / "synthetic_0.png"))[None, :120, :160]
    x = x.astype(np.float32) / 255
    mu = fm.clone(plan=Plan.make({"decoder.*": "exact_u8"}))
    return fm, v, x, mu, models.calibrate(mu, v, x)


def _apply(model, variables, x):
    return np.asarray(jax.jit(model.apply)(variables, x))


def test_calibration_for_all_layers_serves_signed_and_unsigned_plans(bundled):
    fm, v, x, mu, vu = bundled
    vall = models.calibrate(fm, v, x, layers="all")
    assert sorted(vall["quant"]["decoder"]["conv2"]) == sorted(
        f"{side}_{part}_{codes}" for side in "xy" for part in ("scale", "zero_point") for codes in ("int8", "uint8"))
    # the plan changed after calibrating every layer: the same output as calibrating for that plan
    run = jax.jit(mu.apply)
    np.testing.assert_array_equal(np.asarray(run(vall, x)), np.asarray(run(vu, x)))
    signed = Plan.make({"*": "int8"})
    assert models.calibrate(fm.clone(plan=signed), v, x)["quant"]["decoder"]["conv2"] == {
        k: a for k, a in vall["quant"]["decoder"]["conv2"].items() if k.startswith("x_") and k.endswith("_int8")}


def test_a_calibration_for_the_other_signedness_raises_at_trace_time(bundled):
    fm, v, x, mu, vu = bundled
    ms = fm.clone(plan=Plan.make({"decoder.*": "mul8s_1KV8"}))
    with pytest.raises(ValueError, match=r"decoder\.\S+: its table is signed .* made for unsigned \(uint8\) tables "
                                         r"only; recalibrate .*models\.calibrate"):
        jax.eval_shape(ms.apply, vu, x)                      # abstract trace: no value is read
    m2, v2, _ = checkpoint.load(BUNDLED, plan={"decoder.*": "mul8u_2AC"})   # stored: signed int8
    with pytest.raises(ValueError, match=r"its table is unsigned .* made for signed \(int8\) tables only"):
        jax.eval_shape(m2.apply, v2, x)
    legacy = {**v, "quant": {"decoder": {"conv2": {"x_scale": 0.1, "x_zero_point": 0}}}}  # in memory, old keys
    with pytest.raises(ValueError, match=r"decoder\.conv2: .*unknown signedness .*checkpoint\.load"):
        jax.eval_shape(fm.clone(plan=Plan.make({"decoder.conv2": "int8"})).apply, legacy, x)


def test_checkpoints_with_unnamed_signedness_are_read_after_their_plan(bundled, tmp_path):
    """Calibrations saved before the keys named their signedness: the bundled one (signed int8 for every layer,
    saved with the float plan) keeps its values as int8 parameters; one saved with an unsigned plan is uint8."""
    fm, v, x, mu, vu = bundled
    import orbax.checkpoint as ocp
    raw = ocp.PyTreeCheckpointer().restore(Path(BUNDLED) / "variables")["quant"]
    assert raw["decoder"]["conv2"].keys() == {"x_scale", "x_zero_point"}
    flat = dict(jax.tree_util.tree_flatten_with_path(v["quant"])[0])
    for path, leaf in jax.tree_util.tree_flatten_with_path(raw)[0]:
        key = jax.tree_util.DictKey(path[-1].key + "_int8")
        np.testing.assert_array_equal(flat[(*path[:-1], key)], leaf)

    def legacy(tree):
        return {k: legacy(a) if isinstance(a, dict) else a for k, a in
                ((k.replace("_uint8", "").replace("_int8", ""), a) for k, a in tree.items())}
    checkpoint.save(tmp_path / "u", fm.preset, {**vu, "quant": legacy(vu["quant"])}, plan=mu.plan)
    m3, v3, _ = checkpoint.load(tmp_path / "u")
    assert "x_scale_uint8" in v3["quant"]["decoder"]["conv2"]
    np.testing.assert_array_equal(_apply(m3, v3, x), _apply(mu, vu, x))


def test_calibrate_refuses_bad_images_and_options_before_running(bundled, monkeypatch):
    import importlib
    calibration = importlib.import_module("jaxdepth.models.calibrate")
    fm, v, x, mu, _ = bundled
    monkeypatch.setattr(calibration, "_calibrate", lambda *a: pytest.fail("calibration ran"))
    with pytest.raises(ValueError, match=r"dtype uint8: .*\[0, 1\].*/ 255"):
        models.calibrate(mu, v, (x * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"reach 255: .*divide them by 255"):
        models.calibrate(mu, v, x * 255)
    with pytest.raises(ValueError, match=r"empty batch \(shape \(0, 120, 160, 3\)\)"):
        models.calibrate(mu, v, x[:0])
    with pytest.raises(ValueError, match=r"percentile must be in \(50, 100\].*got 150"):
        models.calibrate(mu, v, x, method="percentile", percentile=150)
    with pytest.raises(ValueError, match=r"layers must be one of 'plan', 'all', got 'al'"):
        models.calibrate(mu, v, x, layers="al")
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"reach 255: .*divide them by 255"):   # a batch of an iterable
        models.calibrate(mu, v, [x, x * 255])


def test_calibrate_warns_about_plan_patterns_that_match_no_layer(bundled):
    fm, v, x, _, _ = bundled
    m = fm.clone(plan=Plan.make({"decoder.up1.conva": "mul8s_1L2J"}))
    with pytest.warns(UserWarning, match=r"'decoder\.up1\.conva' match no layer \(did you mean .*'decoder\.up1\."
                                         r"convA'"):
        models.calibrate(m, v, x)
