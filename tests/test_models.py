"""Flax DenseDepth models: presets, shapes, training-mode BatchNorm, checkpoints (no PyTorch needed)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth import models
from jaxdepth.io import checkpoint


@pytest.fixture(scope="module")
def lite():
    model = models.build("mobilenetv2_lite")
    return model, models.init_variables(model, 0)


def test_registry_and_lite_budget(lite):
    assert {"densenet121", "densenet161", "densenet169", "densenet201", "mobilenetv2",
            "mobilenetv2_lite"} <= set(models.list_presets())
    model, variables = lite
    assert models.count_params(variables) <= 3_000_000
    assert model.preset.input_size == (240, 320)
    with pytest.raises(KeyError, match="known"):
        models.build("densenet999")
    with pytest.raises(TypeError, match="unknown preset setting"):
        models.build("densenet169", conv2_pad=1)


def test_forward_shapes_and_feature_list(lite):
    model, variables = lite
    x = jax.random.uniform(jax.random.key(1), (2, 64, 96, 3))
    raw = models.compile_apply(model, variables, x.shape, fast_compile=True)(variables, x)
    assert raw.shape == (2, 32, 48, 1) and bool(jnp.all(jnp.isfinite(raw)))
    feats = jax.eval_shape(lambda v, x: model.apply(v, x, method="features"), variables, x)
    assert [f.shape[-1] for f in feats] == model.preset.feature_channels()
    assert feats[2].shape[1:3] == (32, 48) and feats[19].shape[1:3] == (2, 3)


def test_layer_names_are_the_described_layers_whatever_the_plan(lite):
    """`layer_names` lists what `describe` traces, in order, also for a model whose plan quantizes layers
    (no calibration needed: names are traced under the float plan)."""
    model, _ = lite
    names = [i.name for i in models.describe(model, (1, 64, 96, 3))]
    assert models.layer_names(model, (64, 96)) == names and names[0] == "encoder.stem"
    assert models.layer_names(model.clone(plan=models.Plan.make({"*": "mul8u_197B"})), (64, 96)) == names


def test_densenet_feature_channels_match_preset():
    preset = models.get_preset("densenet121")
    enc = models.make_encoder(preset)
    shapes = jax.eval_shape(lambda x: enc.init_with_output(jax.random.key(0), x)[0],
                            jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    assert [s.shape[-1] for s in shapes] == preset.feature_channels()
    assert preset.feature_channels()[11] == 1024 and len(shapes) == 13


def test_to_metres():
    raw = jnp.array([0.0, 0.5, 1.0, 10.0, 200.0, -1.0])
    np.testing.assert_allclose(models.to_metres(raw), [10.0, 10.0, 10.0, 1.0, 0.1, 0.1])
    # the preset's DepthNorm range: kitti.h5 = 80 / raw in [1, 80] m (DenseDepth utils.predict, minDepth 1, maxDepth 80)
    np.testing.assert_allclose(models.to_metres(raw, "densedepth_kitti"), [80.0, 80.0, 80.0, 8.0, 1.0, 1.0])
    assert models.depth_range(models.build("densedepth_nyu")) == (0.1, 10.0)


def test_train_mode_uses_and_updates_batch_stats(lite):
    model, variables = lite
    x = jax.random.uniform(jax.random.key(2), (2, 64, 64, 3))
    raw, updates = models.compile_apply(model, variables, x.shape, fast_compile=True, train=True,
                                        mutable=["batch_stats"])(variables, x)
    # PyTorch's update: running = 0.9 running + 0.1 batch statistic (unbiased variance)
    stem = models.QConv(model.preset.mobilenet_stem_channels(), 3, stride=2, padding=1)
    y = stem.apply({"params": {"kernel": variables["params"]["encoder"]["stem"]["kernel"]}}, x)
    n = y.shape[0] * y.shape[1] * y.shape[2]
    bs = variables["batch_stats"]["encoder"]["stem"]["bn"]
    new = updates["batch_stats"]["encoder"]["stem"]["bn"]
    np.testing.assert_allclose(new["mean"], 0.9 * bs["mean"] + 0.1 * y.mean((0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new["var"], 0.9 * bs["var"] + 0.1 * y.var((0, 1, 2)) * n / (n - 1), rtol=1e-4,
                               atol=1e-6)
    assert raw.shape == (2, 32, 32, 1)


def test_checkpoint_roundtrip(lite, tmp_path):
    model, variables = lite
    checkpoint.save(tmp_path / "ck", "mobilenetv2_lite", variables, extra={"steps": 3})
    model2, variables2, info = checkpoint.load(tmp_path / "ck")
    assert model2.preset == model.preset and info["extra"] == {"steps": 3}
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(variables2)):
        np.testing.assert_array_equal(a, b)
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(variables2)


def test_plan_cli_table_macs_match_reference_figures(capsys):
    """`python -m jaxdepth.models densenet161 --plan ...`: per-layer MACs at 480x640 as in densedepth.md."""
    from jaxdepth.models.__main__ import main

    plan = '{"decoder.up1.convA": "mul8s_1L2J", "decoder.*": "mul8s_1KV8", "encoder.*": "int8"}'
    assert main(["densenet161", "--plan", plan]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    macs = {name: float(r[r.index("mul8s_1KV8") - 1 if "mul8s_1KV8" in r else r.index("mul8s_1L2J") - 1]
                        .rstrip("M").replace(",", "")) for name, r in rows.items() if name.startswith("decoder.")}
    assert macs["decoder.up1.convA"] == pytest.approx(30 * 40 * 9 * 1488 * 552 / 1e6, abs=0.1)   # ~8.9 G
    assert macs["decoder.up4.convA"] == pytest.approx(240 * 320 * 9 * 234 * 69 / 1e6, abs=0.1)  # ~11.2 G
    assert macs["decoder.conv2"] == pytest.approx(17 * 22 * 2208 * 1104 / 1e6, abs=0.1)        # padding 1
    assert "mul8s_1L2J" in rows["decoder.up1.convA"] and "int8" in rows["encoder.conv0"]
    assert main(["densenet161", "--plan", '{"*": "no_such_circuit"}']) == 2


def test_models_cli_rejects_a_plan_glob_that_matches_no_layer(capsys):
    """A mistyped plan glob is a usage error naming it, with the closest real module glob; a plan whose
    globs all match prints the table."""
    from jaxdepth.cli import models as models_cli
    plan = '{"decoder.up1.*": "int8", "decodr.up2.*": "mul8s_1L2J"}'
    assert models_cli.main(["mobilenetv2_lite", "--plan", plan, "--size", "64", "64"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --plan: pattern(s) 'decodr.up2.*' match no layer")
    assert "did you mean 'decoder.up2.*'" in err[0] and captured.out == ""
    assert models_cli.main(["mobilenetv2_lite", "--plan", '{"decoder.up1.*": "int8"}', "--size", "64", "64"]) == 0
    assert "decoder.up1.convA" in capsys.readouterr().out
    assert models_cli.main(["--size", "64", "64"]) == 2                  # options of one model, but no preset
    assert capsys.readouterr().err.startswith("error: --size describes one model: name a preset")


def test_malformed_plans_are_precise_errors_when_made():
    """A bare name, a non-object, a misspelt saved-plan key and an unknown kernel are refused by Plan.make /
    from_json with the form a plan takes (not a JSONDecodeError, nor only when the model first runs)."""
    from jaxdepth.models import Plan
    cases = [(lambda: Plan.make("mul8u_NLX"), r"must be JSON, .* for every layer: \{\"\*\": \"mul8u_NLX\"\}"),
             (lambda: Plan.from_json("mul8u_NLX"), "must be JSON"),
             (lambda: Plan.make("[3"), "must be JSON"),
             (lambda: Plan.make("3"), "must be a JSON object"),
             (lambda: Plan.from_json({"rules": {}, "defualt": "float"}), r"'rules' and 'default', got also \['defualt'\]"),
             (lambda: Plan.make({"*": {"multiplier": "mul8u_NLX", "impl": "wstatt"}}), "'wstatt' names no LUT kernel"),
             (lambda: Plan.make({"*": {"multiplier": "mul8u_NLX", "impl": ["wstat", "nope"]}}), "'nope' names no"),
             (lambda: Plan.make({"*": {"multiplier": "mul8u_NLX", "impl": []}}), "plan rule 'impl' must be")]
    for make, match in cases:
        with pytest.raises(ValueError, match=match):
            make()
    ok = Plan.make({"*": {"multiplier": "mul8u_NLX", "impl": ["wstat", "direct"]}})
    assert Plan.from_json(json.dumps(ok.to_json())).resolve("x").impl == ("wstat", "direct")
