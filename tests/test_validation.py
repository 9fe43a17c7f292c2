"""Bad and degenerate input to the library: NaN / infinity, impossible ranges, inconsistent shapes, empty
tensors, unusable ground truth, corrupted or half-written checkpoints. Each must give a clear error or the
correct result, never a silent wrong one (issue 14, items 3 and 7)."""
import json
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth import lutconv, metrics, multipliers, quant
from jaxdepth.io import checkpoint

U8 = multipliers.get("mul8u_197B")   # unsigned, no int8 plan
S8 = multipliers.get("mul8s_1L2J")   # signed


def _layer(seed=0, n=2, c=3, o=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5, 6, c)).astype(np.float32)
    w = rng.normal(size=(3, 3, c, o)).astype(np.float32)
    return x, w


# ---- quant: NaN / infinity / impossible ranges ------------------------------------------------------------
@pytest.mark.parametrize("mult", [U8, S8], ids=lambda m: m.name)
def test_nan_input_raises_eagerly_and_poisons_only_its_sample_under_jit(mult):
    x, w = _layer()
    qp = quant.activation_qparams(x.min(), x.max(), mult.signed)
    bad = x.copy()
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN value"):
        quant.lut_conv2d(bad, w, None, mult, qp, padding=1)
    with pytest.raises(ValueError, match="NaN"):
        quant.lut_dense(bad[:, 2, 3, :], w[0, 0], None, mult, qp)
    got = np.asarray(jax.jit(lambda v: quant.lut_conv2d(v, w, None, mult, qp, padding=1))(bad))
    assert np.isnan(got[1]).all()                       # the sample holding the NaN: NaN, as in float
    clean = np.asarray(quant.lut_conv2d(x[:1], w, None, mult, qp, padding=1))
    np.testing.assert_array_equal(got[:1], clean)       # the other sample: untouched, bit for bit


def test_infinite_input_saturates_with_a_counted_warning():
    x, w = _layer()
    qp = quant.activation_qparams(x.min(), x.max(), False)
    inf = x.copy()
    inf[0, 0, 0, 0], inf[1, 4, 5, 2] = np.inf, -np.inf
    with pytest.warns(RuntimeWarning, match="2 infinite value"):
        got = quant.lut_conv2d(inf, w, None, U8, qp, padding=1)
    huge = np.where(np.isinf(inf), np.sign(inf) * 1e30, inf)   # far beyond the range: clipped to the end codes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        want = quant.lut_conv2d(huge, w, None, U8, qp, padding=1)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_nonfinite_weights_bias_and_parameters_raise():
    x, w = _layer()
    qp = quant.activation_qparams(x.min(), x.max(), True)
    for bad_w in (np.where(np.arange(w.size).reshape(w.shape) == 5, np.nan, w),
                  np.where(np.arange(w.size).reshape(w.shape) == 7, np.inf, w)):
        with pytest.raises(ValueError, match="weights: 1 of 108 value"):
            quant.lut_conv2d(x, bad_w, None, S8, qp)
        with pytest.raises(ValueError, match="1 of 108"):
            quant.weight_qparams(bad_w, True)
    with pytest.raises(ValueError, match="bias"):
        quant.lut_conv2d(x, w, np.array([0, np.nan, 0, 0], np.float32), S8, qp)
    with pytest.raises(ValueError, match="finite and positive"):
        quant.lut_conv2d(x, w, None, S8, quant.QParams(jnp.float32(np.nan), jnp.int32(0), True))
    with pytest.raises(ValueError, match="zero point"):
        quant.lut_conv2d(x, w, None, U8, quant.QParams(jnp.float32(0.1), jnp.int32(300), False))
    # under jit a non-finite weight spoils every output: +-inf and NaN, signed and unsigned tables,
    # per-channel and per-tensor weight scales, float rescale and integer requantization
    uqp = quant.activation_qparams(x.min(), x.max(), False)
    for value in (np.inf, -np.inf, np.nan):
        bad = jnp.asarray(w).at[0, 0, 0, 3].set(value)
        for mult, aqp in ((S8, qp), (U8, uqp)):
            for per_channel in (True, False):
                wj = np.asarray(jax.jit(lambda v: quant.lut_conv2d(x, v, None, mult, aqp,
                                                                   per_channel=per_channel))(bad))
                assert np.isnan(wj).all(), (value, mult.name, per_channel)
            rq = np.asarray(jax.jit(lambda v: quant.lut_conv2d_requant(x, v, None, mult, aqp, aqp))(bad))
            assert np.isnan(rq).all(), (value, mult.name, "requant")
    # a wider layer: XLA's vectorised min / max reductions (behind the weight scales) do not propagate NaN
    # reliably (NaN mid-tensor: finite scales), so the weights themselves must be checked
    rng = np.random.default_rng(3)
    xw = rng.uniform(-1, 1, (1, 6, 6, 64)).astype(np.float32)
    ww = rng.standard_normal((3, 3, 64, 48)).astype(np.float32)
    ww[1, 1, 23, 4] = np.nan
    wqp = quant.activation_qparams(xw.min(), xw.max(), True)
    assert np.isnan(np.asarray(jax.jit(lambda v: quant.lut_conv2d(xw, v, None, S8, wqp, padding=1))(ww))).all()


@pytest.mark.parametrize("lo,hi,match", [(1.0, -1.0, "lo=1.0 > hi=-1.0"), (np.nan, 1.0, "lo"),
                                         (0.0, np.inf, "hi"), (-np.inf, 0.0, "lo")])
def test_impossible_activation_ranges_raise(lo, hi, match):
    for signed in (True, False):
        with pytest.raises(ValueError, match=match):
            quant.activation_qparams(lo, hi, signed)
    qp = quant.activation_qparams(0.5, 2.0, False)       # a range not containing 0 is widened to contain it
    assert qp.zero_point == 0 and float(qp.scale) == pytest.approx(2.0 / 255)


# ---- lutconv: shapes and empty tensors ---------------------------------------------------------------------
@pytest.mark.parametrize("x_shape,w_shape,kw,match", [
    ((1, 4, 4, 3), (3, 3, 4, 2), {}, r"w has 4 input channels per group but x has 3 channels"),
    ((1, 4, 4, 4), (3, 3, 4, 2), dict(groups=2), r"expected w.shape\[2\] == 2"),
    ((1, 4, 4, 4), (3, 3, 2, 3), dict(groups=2), "out_channels 3 must both be divisible by groups 2"),
    ((1, 4, 4), (3, 3, 3, 2), {}, r"x must be NHWC \(rank 4\), got shape \(1, 4, 4\)"),
    ((1, 4, 4, 3), (3, 3, 3), {}, r"w must be HWIO \(rank 4\)"),
    ((1, 4, 4, 3), (0, 3, 3, 2), {}, "empty kernel window 0x3"),
    ((1, -4, 4, 3), (3, 3, 3, 2), {}, "negative dimension"),
    ((1, 4, 4, 3), (3, 3, 3, 2), dict(groups=0), "groups must be a positive int"),
    ((1, 4, 4, 3), (3, 3, 3, 2), dict(stride=0), "stride must be positive"),
])
def test_inconsistent_shapes_are_precise_errors_in_explain_and_conv2d(x_shape, w_shape, kw, match):
    with pytest.raises(ValueError, match=match):
        lutconv.explain(x_shape, w_shape, U8, **kw)
    if min(x_shape) >= 0 and min(w_shape) >= 0:
        with pytest.raises(ValueError, match=match):
            lutconv.conv2d(np.zeros(x_shape, np.uint8), np.zeros(w_shape, np.uint8), U8, **kw)


EMPTY = [  # (x shape, w shape, conv kwargs, expected output shape)
    ((0, 5, 5, 4), (3, 3, 4, 2), dict(padding=1), (0, 5, 5, 2)),                 # N = 0
    ((2, 5, 5, 0), (3, 3, 0, 2), dict(padding=1), (2, 5, 5, 2)),                 # C = 0: empty sums -> 0
    ((2, 5, 5, 4), (3, 3, 4, 0), {}, (2, 3, 3, 0)),                              # O = 0
    ((2, 5, 5, 4), (3, 3, 1, 4), dict(groups=4, dilation=3), (2, 0, 0, 4)),      # kernel span > input
    ((2, 0, 5, 4), (1, 1, 4, 2), {}, (2, 0, 5, 2)),                              # H = 0
]


@pytest.mark.parametrize("x_shape,w_shape,kw,out", EMPTY)
@pytest.mark.parametrize("impl", ["auto", *lutconv.implementations()])
def test_empty_problems_return_the_empty_or_zero_result(x_shape, w_shape, kw, out, impl):
    x = np.full(x_shape, 7, np.int8)
    w = np.full(w_shape, -3, np.int8)
    for table in (S8, multipliers.get("exact_s8")):     # no int8 plan / an int8 plan (lowrank's domain)
        got = lutconv.conv2d(x, w, table, impl=impl, **kw)
        assert got.shape == out and got.dtype == jnp.int32 and not np.asarray(got).any()
    choice = lutconv.explain(x_shape, w_shape, S8, impl=impl, **kw)
    assert choice.kernel is None and str(choice).startswith("none:")


@pytest.mark.parametrize("x_shape,w_shape,kw,out", EMPTY)
def test_choosing_a_kernel_for_an_empty_problem_is_a_precise_error(x_shape, w_shape, kw, out):
    from jaxdepth.lutconv import registry
    from jaxdepth.lutconv.spec import ConvSpec
    spec = ConvSpec(**{k: (v, v) for k, v in kw.items() if k == "dilation"}, groups=kw.get("groups", 1))
    problem = registry.Problem(x_shape, w_shape, spec, np.asarray(S8.table), traced=False)
    with pytest.raises(ValueError, match="empty problem"):
        registry.choose(problem)


@pytest.mark.slow
def test_empty_problems_under_jit_and_through_the_quant_layer():
    x = np.zeros((2, 5, 5, 0), np.int8)
    got = jax.jit(lambda a: lutconv.conv2d(a, np.zeros((3, 3, 0, 2), np.int8), S8, padding=1))(x)
    assert got.shape == (2, 5, 5, 2) and not np.asarray(got).any()
    xf, wf = _layer()
    for mult in (U8, S8):
        qp = quant.activation_qparams(-1.0, 1.0, mult.signed)
        bias = np.arange(4, dtype=np.float32)
        assert quant.lut_conv2d(xf[:0], wf, bias, mult, qp, padding=1).shape == (0, 5, 6, 4)
        y = quant.lut_conv2d(xf[..., :0], wf[:, :, :0], bias, mult, qp, padding=1)   # no input: bias only
        np.testing.assert_array_equal(np.asarray(y), np.broadcast_to(bias, (2, 5, 6, 4)))
        assert quant.lut_conv2d(xf, wf[..., :0], None, mult, qp, padding=1).shape == (2, 5, 6, 0)


# ---- metrics -----------------------------------------------------------------------------------------------
def test_metrics_without_valid_pixels_raise():
    pred = np.full((4, 5), 2.0, np.float32)
    for gt in (np.full((4, 5), np.nan), np.zeros((4, 5))):
        with pytest.raises(metrics.NoValidPixelsError, match="reference depth has no valid pixel"):
            metrics.compute(pred, gt)
        acc = metrics.Accumulator("images")
        acc.add(pred, gt)
        with pytest.raises(metrics.NoValidPixelsError):
            acc.result()
    with pytest.raises(metrics.NoValidPixelsError, match="prediction is NaN, infinite or <= 0 at all 20"):
        metrics.compute(np.full((4, 5), np.nan), np.ones((4, 5)))
    with pytest.raises(metrics.NoValidPixelsError, match="no image"):
        metrics.Accumulator().result()


def test_metrics_leave_out_spoilt_prediction_pixels_with_a_count():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 9, (6, 7))
    pred = gt * rng.uniform(0.8, 1.3, gt.shape)
    spoilt = pred.copy()
    spoilt[0, :3] = np.nan
    with pytest.warns(RuntimeWarning, match="at 3 of 42 valid"):
        got = metrics.compute(spoilt, gt)
    keep = np.ones(gt.shape, bool)
    keep[0, :3] = False
    want = metrics.compute(pred[keep], gt[keep])
    assert got == pytest.approx(want)


# ---- checkpoints -------------------------------------------------------------------------------------------
def _perturbed(variables, delta):
    return jax.tree_util.tree_map(lambda a: np.asarray(a) + np.asarray(delta, np.asarray(a).dtype), variables)


def test_truncated_metadata_names_the_file(tmp_path, lite_vars):
    ck = checkpoint.save(tmp_path / "ck", "mobilenetv2_lite", lite_vars)
    meta = ck / "jaxdepth.json"
    meta.write_text(meta.read_text()[:200])
    with pytest.raises(checkpoint.CheckpointError, match=f"{meta}: not valid JSON"):
        checkpoint.load(ck)
    meta.write_text('{"format": "jaxdepth-checkpoint", "version": 1}')
    with pytest.raises(checkpoint.CheckpointError, match="incomplete metadata"):
        checkpoint.read_info(ck)


def test_corrupted_or_nonfinite_arrays_are_detected(tmp_path, lite_vars):
    a = checkpoint.save(tmp_path / "a", "mobilenetv2_lite", lite_vars)
    b = checkpoint.save(tmp_path / "b", "mobilenetv2_lite", _perturbed(lite_vars, 0.5))
    shutil.rmtree(a / "variables")
    shutil.copytree(b / "variables", a / "variables")      # arrays no longer those the digests describe
    with pytest.raises(checkpoint.CheckpointError, match=r"/a/variables: \d+ array\(s\) differ from the digests"):
        checkpoint.load(a)
    # garbage bytes in the array files: either the reader or the digests notice
    c = checkpoint.save(tmp_path / "c", "mobilenetv2_lite", lite_vars)
    for f in (c / "variables").rglob("*"):
        if f.is_file() and f.stat().st_size > 100_000:
            data = bytearray(f.read_bytes())
            data[len(data) // 2: len(data) // 2 + 64] = b"\x7f" * 64
            f.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match=str(c / "variables")):
        checkpoint.load(c)
    # NaN weights: refused at save; an old checkpoint (no digests) holding them is refused at load
    nan_vars = jax.tree_util.tree_map(lambda v: v, lite_vars)
    nan_vars["params"]["decoder"]["conv2"]["kernel"] = np.full_like(nan_vars["params"]["decoder"]["conv2"]["kernel"],
                                                                     np.nan)
    with pytest.raises(ValueError, match="refusing to save 1 array"):
        checkpoint.save(tmp_path / "n", "mobilenetv2_lite", nan_vars)
    import orbax.checkpoint as ocp
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(a.absolute() / "nan_variables", {k: jax.tree_util.tree_map(np.asarray, v) for k, v in nan_vars.items()})
    ckptr.wait_until_finished()
    shutil.rmtree(a / "variables")
    (a / "nan_variables").rename(a / "variables")
    info = json.loads((a / "jaxdepth.json").read_text())
    del info["digests"]
    (a / "jaxdepth.json").write_text(json.dumps(info))
    with pytest.raises(checkpoint.CheckpointError, match="hold NaN or infinite values.*decoder/conv2/kernel"):
        checkpoint.load(a)


def test_overwrite_swaps_in_a_complete_checkpoint_only(tmp_path, lite_vars, monkeypatch):
    import orbax.checkpoint as ocp
    ck = checkpoint.save(tmp_path / "ck", "mobilenetv2_lite", lite_vars, extra={"v": 1})
    real_save = ocp.StandardCheckpointer.save

    def dies_half_way(self, directory, state, *args, **kwargs):
        real_save(self, directory, state, *args, **kwargs)
        self.wait_until_finished()
        raise KeyboardInterrupt   # e.g. Ctrl-C after the arrays, before the metadata

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(ck, "mobilenetv2_lite", _perturbed(lite_vars, 1.0), extra={"v": 2})
    monkeypatch.undo()
    _, restored, info = checkpoint.load(ck)                # the old checkpoint, intact
    assert info["extra"] == {"v": 1}
    for x, y in zip(jax.tree_util.tree_leaves(lite_vars), jax.tree_util.tree_leaves(restored)):
        np.testing.assert_array_equal(x, y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]   # no temporary folder left behind
    checkpoint.save(ck, "mobilenetv2_lite", _perturbed(lite_vars, 1.0), extra={"v": 2})
    _, restored, info = checkpoint.load(ck)
    assert info["extra"] == {"v": 2} and sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    leaf = jax.tree_util.tree_leaves(lite_vars)[0]
    np.testing.assert_array_equal(jax.tree_util.tree_leaves(restored)[0], np.asarray(leaf) + 1)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        checkpoint.save(ck, "mobilenetv2_lite", lite_vars, overwrite=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        checkpoint.save(tmp_path / "file", "mobilenetv2_lite", lite_vars)


def test_variables_of_another_preset_are_refused_before_saving(tmp_path, lite_vars):
    with pytest.raises(ValueError, match=r"do not fit preset 'densenet121': .* missing, e.g. batch_stats/encoder/"):
        checkpoint.save(tmp_path / "ck", "densenet121", lite_vars)
    with pytest.raises(ValueError, match=r"do not fit preset 'mobilenetv2': \d+ of another shape"):
        checkpoint.save(tmp_path / "ck", "mobilenetv2", lite_vars)
    assert list(tmp_path.iterdir()) == []


def test_plan_tables_that_names_do_not_give_are_stored_with_the_checkpoint(tmp_path, lite_vars):
    """A user's table named like a catalogue circuit, and a transposed circuit: loading gives back the
    tables that were saved (not the catalogue's table of that name, not an unknown-name error)."""
    table = multipliers.exact_table(True).copy()
    table[3, 5] += 7
    np.save(tmp_path / "mul8s_1L2J.npy", table)
    mine = multipliers.load(tmp_path / "mul8s_1L2J.npy", signed=True)        # named after the file
    flipped = multipliers.get("mul8u_NLX", transpose=True)                  # "mul8u_NLX.T"
    plan = {"decoder.*": mine, "encoder.*": {"multiplier": flipped, "impl": "auto"}, "*": "mul8u_2AC"}
    ck = checkpoint.save(tmp_path / "ck", "mobilenetv2_lite", lite_vars, plan=plan)
    assert set(checkpoint.read_info(ck)["tables"]) == {"mul8s_1L2J"}         # the others go by name
    model, _, _ = checkpoint.load(ck)
    got = {n: model.plan.resolve(n).multiplier for n in ("decoder.conv3", "encoder.stem")}
    np.testing.assert_array_equal(got["decoder.conv3"].table, table)
    assert got["decoder.conv3"].signed and got["decoder.conv3"].name == "mul8s_1L2J"
    np.testing.assert_array_equal(got["encoder.stem"].table, multipliers.get("mul8u_NLX").table.T)
    assert model.plan.to_json() == checkpoint.load(ck)[0].plan.to_json()
    with np.load(ck / "tables.npz") as npz:
        spoilt = {k: npz[k] for k in npz.files}
    spoilt["mul8s_1L2J"][0, 0] += 1
    np.savez(ck / "tables.npz", **spoilt)
    with pytest.raises(checkpoint.CheckpointError, match="table 'mul8s_1L2J' differs from the digest"):
        checkpoint.load(ck)


# ---- converter ---------------------------------------------------------------------------------------------
def test_converter_rejects_nonfinite_weights():
    torch = pytest.importorskip("torch")
    from jaxdepth import models
    from jaxdepth.convert import ConversionError, convert_state_dict
    from jaxdepth.convert import torch_reference as tr
    torch.manual_seed(0)
    sd = tr.DenseDepth(models.get_preset("mobilenetv2_lite")).state_dict()
    key = next(k for k in sd if k.endswith("conv2.weight"))
    sd[key] = torch.full_like(sd[key], float("nan"))
    with pytest.raises(ConversionError, match=f"NaN or infinite weights:(.|\n)*{key}"):
        convert_state_dict(sd)


@pytest.mark.parametrize("where", ["images", "weights"])
def test_calibration_refuses_non_finite_images_and_weights(where):
    """The observers' min / max do not reliably see NaN (XLA's vectorised reductions), so NaN or infinite
    calibration images or weights are refused with a count and a name, not turned into finite ranges."""
    import flax.linen as nn

    from jaxdepth import models
    from jaxdepth.models.layers import QConv

    class Tiny(nn.Module):
        plan: models.Plan = models.Plan.make({"*": "mul8s_1KV8"})

        @nn.compact
        def __call__(self, x):
            return QConv(4, 3, padding=1, plan=self.plan, name="conv")(x)

    images = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    variables = Tiny().init(jax.random.PRNGKey(0), images[:1])
    if where == "images":
        images[1, 3, 4, 0] = np.nan
        images[0, 0, 0, 1] = np.inf
        match = "calibration images hold 2 NaN or infinite"
    else:
        kernel = np.array(variables["params"]["conv"]["kernel"])
        kernel[1, 1, 2, 3] = np.nan
        variables = {"params": {"conv": {"kernel": kernel}}}
        match = r"weights \['params'\]\['conv'\]\['kernel'\] hold 1 NaN"
    with pytest.raises(ValueError, match=match):
        models.calibrate(Tiny(), variables, images)


def test_failed_restore_silences_only_the_abandoned_reads_noise(monkeypatch):
    """After a failed restore, orbax's reads still in flight report "Event loop is closed" from tensorstore's
    threads (up to ~160 traceback lines after the one-line CLI error): those are dropped, nothing else."""
    import sys
    import types

    from jaxdepth.io import checkpoint

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(str(u.exc_value)))
    checkpoint._quiet_abandoned_reads()
    checkpoint._quiet_abandoned_reads()                      # installed once
    for error in (RuntimeError("Event loop is closed"), RuntimeError("something else"), ValueError("x")):
        sys.unraisablehook(types.SimpleNamespace(exc_value=error))
    assert seen == ["something else", "x"]
