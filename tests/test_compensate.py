"""Error compensation (`jaxdepth.models.compensate`): the measured offset is the mean accumulator error of a
plain integer reference convolution, the offset shifts the float rescale and folds into the int32 bias, and on
the bundled model it brings an approximate model's output back towards the exact table's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth import models, multipliers, quant
from jaxdepth.io import checkpoint
from jaxdepth.models import Plan
from jaxdepth.models.compensate import compensate, offsets, strip_compensation, uncompensated_layers
from jaxdepth.models.layers import offset_key
from jaxdepth.quant.requant import requantize_reference

from test_models_quant import BUNDLED


def reference_sum(xc, wc, lut, stride, pad, pad_code, groups):
    """``sum lut[w, x]`` over each window, written out with loops over the taps (int64, NumPy)."""
    n, h, w, c = xc.shape
    kh, kw, cg, o = wc.shape
    xp = np.full((n, h + 2 * pad, w + 2 * pad, c), pad_code, np.int64)
    xp[:, pad:pad + h, pad:pad + w] = xc
    ho, wo = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    out = np.zeros((n, ho, wo, o), np.int64)
    for oo in range(o):
        g = oo // (o // groups)
        for i in range(kh):
            for j in range(kw):
                xs = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, g * cg:(g + 1) * cg]
                out[..., oo] += lut[wc[i, j, :, oo] & 0xFF, xs & 0xFF].sum(-1)
    return out


CASES = [("mul8s_1KV8", 3, 2, 1, 1, 4, 6),      # signed, strided, padded
         ("mul8u_NLX", 3, 1, 1, 2, 4, 6),       # unsigned (pad code = z_x), grouped
         ("mul8u_197B", 3, 1, 1, 5, 5, 5),      # unsigned depthwise
         ("mul8u_2AC", 1, 1, 0, 1, 8, 3)]       # pointwise


@pytest.mark.parametrize("name,k,stride,pad,groups,c_in,c_out", CASES)
def test_table_error_mean_is_the_mean_error_of_a_plain_integer_reference(name, k, stride, pad, groups, c_in, c_out):
    m = multipliers.get(name)
    rng = np.random.default_rng(1)
    x = rng.normal(0.5, 1.0, (2, 7, 9, c_in)).astype(np.float32)
    w = rng.normal(0, 1, (k, k, c_in // groups, c_out)).astype(np.float32)
    x_qp = quant.activation_qparams(x.min(), x.max(), m.signed)
    w_qp = quant.weight_qparams(w, m.signed, True)
    xc, wc = np.asarray(quant.quantize(x, x_qp)), np.asarray(quant.quantize(w, w_qp))
    args = (xc, wc, None, stride, pad, int(x_qp.zero_point), groups)
    error = (reference_sum(*args[:2], m.table.astype(np.int64), *args[3:])
             - reference_sum(*args[:2], multipliers.exact(m.signed).table.astype(np.int64), *args[3:]))
    got = np.asarray(quant.table_error_mean(x, w, m, x_qp, stride=stride, padding=pad, groups=groups))
    np.testing.assert_allclose(got, error.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-3)
    assert np.abs(error.mean(axis=(0, 1, 2))).max() > 1        # these circuits are biased on these codes


def test_acc_offset_shifts_the_float_rescale_and_folds_into_the_int32_bias():
    m = multipliers.get("mul8u_NLX")
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 2, (1, 6, 6, 4)).astype(np.float32)
    w = rng.normal(0, 1, (3, 3, 4, 5)).astype(np.float32)
    bias = rng.normal(0, 0.1, 5).astype(np.float32)
    x_qp = quant.activation_qparams(0.0, 2.0, False)
    w_qp = quant.weight_qparams(w, False, True)
    offset = np.array([-300, 0, 7, 1200, -5], np.int32)
    plain = np.asarray(quant.lut_conv2d(x, w, bias, m, x_qp, padding=1))
    shifted = np.asarray(quant.lut_conv2d(x, w, bias, m, x_qp, padding=1, acc_offset=offset))
    scale = np.float32(x_qp.scale) * np.asarray(w_qp.scale, np.float32)
    np.testing.assert_allclose(plain - shifted, np.broadcast_to(scale * offset, plain.shape), rtol=1e-4, atol=1e-5)
    y_qp = quant.activation_qparams(-2.0, 6.0, False)
    _, d0 = quant.lut_conv2d_requant(x, w, bias, m, x_qp, y_qp, padding=1, return_details=True)
    _, d1 = quant.lut_conv2d_requant(x, w, bias, m, x_qp, y_qp, padding=1, return_details=True, acc_offset=offset)
    np.testing.assert_array_equal(np.asarray(d1["acc"]), np.asarray(d0["acc"]))       # the table sum itself
    np.testing.assert_array_equal(np.asarray(d1["requant"].bias), np.asarray(d0["requant"].bias) - offset)
    np.testing.assert_array_equal(np.asarray(d1["codes"]), requantize_reference(np.asarray(d1["acc"]), d1["requant"]))
    assert not np.array_equal(np.asarray(d1["codes"]), np.asarray(d0["codes"]))


@pytest.mark.parametrize("offset,message", [(np.zeros(4, np.int32), "one value per output channel"),
                                            (np.full(5, 0.5, np.float32), "must hold integers")])
def test_acc_offset_is_checked(offset, message):
    m = multipliers.get("mul8s_1KV8")
    x, w = np.ones((1, 4, 4, 2), np.float32), np.ones((1, 1, 2, 5), np.float32)
    with pytest.raises(ValueError, match=message):
        quant.lut_conv2d(x, w, None, m, quant.activation_qparams(-1.0, 1.0, True), acc_offset=offset)


# ---- the bundled model ---------------------------------------------------------------------------------------
PLAN = {"decoder.*": "mul8u_NLX", "*": "int8"}


@pytest.fixture(scope="module")
def bundled():
    """The bundled model with a biased circuit on the decoder, calibrated on 4 synthetic rooms at 64x80, and
    the same rooms' images; the model with the exact unsigned table in its place (same calibration)."""
    from jaxdepth.data import load
    from jaxdepth.inference import resize_batch
    fm, v, _ = checkpoint.load(BUNDLED)
    frames = np.concatenate([b[0] for b in load("synthetic:6:3:120x160").batches(6, 6)])
    x = resize_batch(frames, (64, 80)).astype(np.float32) / 255
    base = {k: v[k] for k in ("params", "batch_stats")}
    model = fm.clone(plan=Plan.make(PLAN))
    variables = models.calibrate(model, base, x[:4])
    exact = fm.clone(plan=Plan.make({"decoder.*": "exact_u8", "*": "int8"}))
    return model, variables, exact, x


def _apply(model, variables, x):
    return np.asarray(jax.jit(model.apply)(variables, x), np.float64)


@pytest.mark.slow
def test_compensation_brings_the_model_back_towards_the_exact_table(bundled):
    model, variables, exact, x = bundled
    decoder = [n for n in uncompensated_layers(model, variables, x.shape[1:3])]
    assert decoder and all(n.startswith("decoder.") for n in decoder)      # int8 layers need no offset
    comp = compensate(model, variables, x[:4])
    assert uncompensated_layers(model, comp, x.shape[1:3]) == []
    found = offsets(comp)
    assert len(found) == len(decoder) and all(layer.startswith("decoder.") for layer, _ in found)
    assert all(v.dtype == np.int32 for v in found.values())
    ref = _apply(exact, variables, x)
    before, after = _apply(model, variables, x) - ref, _apply(model, comp, x) - ref
    # held-out rooms (4, 5) too: the mean error (an offset) and the rms error both shrink
    for rooms in (slice(0, 4), slice(4, 6)):
        assert abs(after[rooms].mean()) < 0.3 * abs(before[rooms].mean())
        assert np.sqrt((after[rooms] ** 2).mean()) < 0.6 * np.sqrt((before[rooms] ** 2).mean())
    # the first decoder layer's input does not depend on compensation: measuring again gives the same offset
    again = compensate(model, comp, x[:4])
    key = ("decoder.conv2", offset_key(multipliers.get("mul8u_NLX")))
    np.testing.assert_array_equal(offsets(again)[key], found[key])


@pytest.mark.slow
def test_offsets_serve_only_their_table_and_survive_a_checkpoint(bundled, tmp_path):
    model, variables, _, x = bundled
    comp = compensate(model, variables, x[:2])
    other = model.clone(plan=Plan.make({"decoder.*": "mul8u_197B", "*": "int8"}))
    vo = models.calibrate(other, {k: variables[k] for k in ("params", "batch_stats")}, x[:4])
    with_nlx_offsets = {**vo, "quant": {**vo["quant"]}}
    for (path, key), value in offsets(comp).items():     # graft the NLX offsets onto the 197B calibration
        node = with_nlx_offsets["quant"]
        for p in path.split(".")[:-1]:
            node[p] = dict(node[p])
            node = node[p]
        node[path.split(".")[-1]] = {**node[path.split(".")[-1]], key: value}
    np.testing.assert_array_equal(_apply(other, with_nlx_offsets, x[:2]), _apply(other, vo, x[:2]))
    np.testing.assert_array_equal(_apply(model, strip_compensation(comp), x[:2]), _apply(model, variables, x[:2]))
    checkpoint.save(tmp_path / "ck", model.preset, comp, plan=model.plan)
    loaded_model, loaded, _ = checkpoint.load(tmp_path / "ck")
    assert offsets(loaded).keys() == offsets(comp).keys()
    np.testing.assert_array_equal(_apply(loaded_model, loaded, x[:2]), _apply(model, comp, x[:2]))


def test_runtime_table_layers_get_the_same_offsets_in_the_lut_collection(bundled):
    model, variables, _, x = bundled
    nlx = multipliers.get("mul8u_NLX")
    runtime = model.clone(plan=Plan.make({"decoder.*": {"multiplier": "exact_u8", "runtime_table": True},
                                          "*": "int8"}))
    names = [i for i in models.describe(runtime, (1, *x.shape[1:3], 3)) if i.arith.runtime_table]
    lut: dict = {}
    for info in names:
        node = lut
        for p in info.path:
            node = node.setdefault(p, {})
        node["table"] = jnp.asarray(nlx.table)
    rv = compensate(runtime, {**variables, "lut": lut}, x[:4])
    static = compensate(model, variables, x[:4])
    assert uncompensated_layers(runtime, rv, x.shape[1:3]) == []       # runtime layers are not listed
    got = {layer: v for (layer, _), v in offsets(rv).items()}
    want = {layer: v for (layer, _), v in offsets(static).items()}
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    np.testing.assert_array_equal(_apply(runtime, rv, x[:2]), _apply(model, static, x[:2]))


def test_compensate_refuses_bad_input(bundled):
    model, variables, _, x = bundled
    with pytest.raises(ValueError, match="rounds must be a positive integer"):
        compensate(model, variables, x[:1], rounds=0)
    with pytest.raises(ValueError, match="calibrate the model first"):
        compensate(model, {k: variables[k] for k in ("params", "batch_stats")}, x[:1])
    with pytest.raises(ValueError, match="divide them by 255"):
        compensate(model, variables, x[:1] * 255)


def test_quantized_keeps_offsets_only_when_asked(bundled):
    from jaxdepth import inference
    model, variables, _, x = bundled
    comp = compensate(model, variables, x[:4])
    float_model = model.clone(plan=models.FLOAT_PLAN)
    _, kept = inference.quantized(float_model, comp, PLAN, x[:4], compensate=True)   # they serve the plan: reused
    assert kept is comp
    _, plain = inference.quantized(float_model, comp, PLAN, x[:4])
    assert offsets(plain) == {} and offsets(comp)


# ---- command lines -------------------------------------------------------------------------------------------
def test_evaluate_compensate_reaches_the_model_and_the_report(tmp_path, monkeypatch, capsys):
    import json

    from PIL import Image

    from jaxdepth import evaluate as E
    from jaxdepth import inference
    from jaxdepth.cli import common
    from standin import tiny
    model, variables = tiny(0)
    approx, avars = tiny(1)
    seen = {}

    def quantized(m, v, plan, calib, **kw):
        seen.update(kw)
        return approx, avars
    monkeypatch.setattr(common, "load_model", lambda spec: (model, variables, {}))
    monkeypatch.setattr(inference, "quantized", quantized)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(tmp_path / f"f{i}.png")
        np.save(tmp_path / f"f{i}_depth.npy", rng.uniform(1, 5, (16, 24)).astype(np.float32))
    out = tmp_path / "res"
    assert E.main(["--data", str(tmp_path), "--multiplier", "mul8u_NLX", "--compensate", "--out", str(out),
                   "--no-progress"]) == 0
    assert seen == {"compensate": True}
    assert json.loads((out / "metrics.json").read_text())["config"]["compensate"] is True
    assert "error-compensated" in capsys.readouterr().out


@pytest.mark.parametrize("cli", ["evaluate", "predict", "export"])
def test_compensate_without_a_multiplier_is_a_usage_error(cli, tmp_path, capsys):
    import importlib
    main = importlib.import_module(f"jaxdepth.cli.{cli}").main
    argv = ["--compensate", "--out", str(tmp_path / "o")] + (["--no-progress"] if cli != "export" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("--compensate needs --multiplier" in err or "all float" in err), err
    assert not (tmp_path / "o").exists()
