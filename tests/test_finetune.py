"""Fine-tuning for a plan and distillation: straight-through and learned-range gradients, bit-exactness of a
trained LUT model against an integer reference, the loss going down, distillation with an exact plan being a
no-op, a fine-tuned checkpoint loading with its plan, and the CLI's bad-input errors (before any work)."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth import models, multipliers, quant, training
from jaxdepth.models import FLOAT_PLAN, Plan, QConv

PLAN = {"*": "mul8s_1L2J"}


class TinyQ(nn.Module):
    """Two plan-driven convolutions: conv1 (3x3, bias) -> ReLU -> 2x2 pool -> head (3x3) -> 1 + 19 sigmoid."""

    plan: Plan = FLOAT_PLAN

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = nn.relu(QConv(6, 3, padding=1, use_bias=True, plan=self.plan, name="conv1")(x))
        y = nn.avg_pool(y, (2, 2), (2, 2))
        return 1.0 + 19.0 * nn.sigmoid(QConv(1, 3, padding=1, use_bias=True, plan=self.plan, name="head")(y))


@pytest.fixture(scope="module")
def rooms():
    from jaxdepth.data import synthetic
    images, depths = synthetic.generate(8, seed=4, height=32, width=48)
    return training.ArrayData(images, depths)


@pytest.fixture(scope="module")
def tiny_lut(rooms):
    """(float model, float variables, LUT student, calibrated variables)."""
    model = TinyQ()
    variables = models.init_variables(model, 0, (1, 32, 48, 3))
    calib = rooms.images[:8].astype(np.float32) / 255
    student, svars = training.prepare_student(model, variables, PLAN, calib, "learn")
    return model, variables, student, svars


def test_learned_range_gradient_is_the_fake_quant_gradient():
    """The scale's straight-through gradient equals jax.grad of an independent float surrogate: the float conv
    of fake-quantised inputs with a straight-through round (LSQ), for signed and unsigned tables."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(1, 6, 7, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(1, 6, 7, 4)), jnp.float32)
    for name, zero in (("mul8s_1L2J", 0), ("mul8u_NLX", 90)):
        m = multipliers.get(name)
        lo, hi = (-128, 127) if m.signed else (0, 255)
        s0 = float(jnp.abs(x).max()) / 100          # some inputs clip: both LSQ terms matter

        def lut(s):
            return jnp.sum(quant.lut_conv2d(x, w, None, m, quant.QParams(s, jnp.int32(zero), m.signed), padding=1,
                                            straight_through=True) * g)

        def surrogate(s):
            v = x / s + zero
            c = jnp.clip(v + jax.lax.stop_gradient(jnp.round(v) - v), lo, hi)
            y = jax.lax.conv_general_dilated(s * (c - zero), w, (1, 1), ((1, 1), (1, 1)),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return jnp.sum(y * g)

        got, want = jax.jit(jax.grad(lut))(jnp.float32(s0)), jax.jit(jax.grad(surrogate))(jnp.float32(s0))
        np.testing.assert_allclose(float(got), float(want), rtol=2e-4)


@pytest.mark.slow
def test_finetuning_lowers_the_loss_and_stays_bit_exact(tiny_lut, rooms):
    model, variables, student, svars = tiny_lut
    trained, log = training.train(student, svars, rooms, steps=24, batch_size=4, lr=3e-3, log_every=4,
                                  learn_ranges=True, range_lr=0.02, warmup=1, progress=False)
    assert log["loss"][-1] < 0.9 * log["loss"][0]
    assert log["config"]["update_bn_stats"] is False and log["config"]["plan"] == {"rules": PLAN, "default": "float"}
    s_x = float(trained["quant"]["conv1"]["x_scale_int8"])
    assert s_x != float(svars["quant"]["conv1"]["x_scale_int8"])          # the range was learned
    # conv1 of the trained model against an independent integer reference: sum of lut[w & 255, x & 255]
    x = rooms.images[:2].astype(np.float32) / 255
    _, inter = student.apply(trained, jnp.asarray(x), capture_intermediates=True, mutable=["intermediates"])
    y = np.asarray(inter["intermediates"]["conv1"]["__call__"][0], np.float64)
    k = np.asarray(trained["params"]["conv1"]["kernel"], np.float32)
    b = np.asarray(trained["params"]["conv1"]["bias"], np.float64)
    s_w = np.abs(k).max(axis=(0, 1, 2)) / np.float32(127)
    xc = np.clip(np.round(x / np.float32(s_x)), -128, 127).astype(np.int64)
    wc = np.clip(np.round(k / s_w), -128, 127).astype(np.int64)
    lut = multipliers.get("mul8s_1L2J").table.astype(np.int64)
    xp = np.pad(xc, ((0, 0), (1, 1), (1, 1), (0, 0)))
    acc = np.zeros(y.shape, np.int64)
    for dy in range(3):
        for dx in range(3):
            win = xp[:, dy:dy + 32, dx:dx + 48, :]                       # (N, H, W, C)
            acc += lut[wc[dy, dx][None, None, None] & 255, win[..., None] & 255].sum(axis=3)
    acc_model = (y - b) / (np.float64(s_x) * s_w)
    np.testing.assert_array_equal(np.round(acc_model).astype(np.int64), acc)
    assert np.abs(acc_model - acc).max() < 0.05


def test_distillation_from_the_exact_model_with_an_exact_plan_is_a_no_op(tiny_lut, rooms):
    model, variables, _, _ = tiny_lut
    _, log = training.train(model, variables, rooms, steps=1, batch_size=8, log_every=1, target="teacher",
                            teacher=model, teacher_variables=variables, update_bn_stats=False, progress=False)
    assert log["loss"][0] == pytest.approx(0.0, abs=1e-6) and log["distill"][0] == pytest.approx(0.0, abs=1e-6)


def test_trainable_selection(tiny_lut):
    _, variables, _, _ = tiny_lut
    assert training.select_trainable(variables["params"], "bn") == {("conv1", "bias"), ("head", "bias")}
    assert len(training.select_trainable(variables["params"], "all")) == 4
    with pytest.raises(ValueError, match="selects no parameter"):
        training.select_trainable(variables["params"], "decoder")     # TinyQ has no decoder


# ---- the command line -----------------------------------------------------------------------------------------
DEFAULT = "jaxdepth/assets/default_model/checkpoint"


def _cli(argv, capsys):
    from jaxdepth.cli import train as cli
    code = cli.main(argv)
    return code, capsys.readouterr().err


@pytest.fixture
def default_ckpt():
    from pathlib import Path

    import jaxdepth
    return str(Path(jaxdepth.__file__).parent / "assets" / "default_model" / "checkpoint")


def test_cli_bad_input_fails_before_any_work(tmp_path, capsys, default_ckpt):
    out = tmp_path / "run"
    code, err = _cli(["--init", str(tmp_path / "nope"), "--plan", "mul8s_1L2J", "--out", str(out)], capsys)
    assert code == 2 and "--init" in err and "does not exist" in err
    code, err = _cli(["--plan", "mul8s_1L2J", "--out", str(out)], capsys)
    assert code == 2 and "--init" in err
    code, err = _cli(["--init", default_ckpt, "--data", str(tmp_path / "typo"), "--out", str(out)], capsys)
    assert code == 2 and "typo" in err and not (tmp_path / "typo").exists()       # never rendered into
    code, err = _cli(["--init", default_ckpt, "--plan", '{"decodr.*": "mul8s_1L2J"}', "--data", "synthetic:2",
                      "--out", str(out)], capsys)
    assert code == 2 and "'decodr.*'" in err and "did you mean 'decoder.*'" in err and "decoder.conv3" in err
    code, err = _cli(["--init", default_ckpt, "--plan", "mul8s_nope", "--out", str(out)], capsys)
    assert code == 2 and "mul8s_nope" in err
    other = tmp_path / "other"                          # a checkpoint of another preset (metadata is enough)
    other.mkdir()
    meta = json.loads(open(f"{default_ckpt}/jaxdepth.json").read())
    meta["preset"] = models.get_preset("densenet121").to_dict()
    meta["preset_name"] = "densenet121"
    (other / "jaxdepth.json").write_text(json.dumps(meta))
    code, err = _cli(["--init", default_ckpt, "--plan", "mul8s_1L2J", "--teacher", str(other), "--out", str(out)],
                     capsys)
    assert code == 2 and "teacher" in err and "densenet121" in err
    assert not out.exists()                             # every check ran before the run folder was made


def test_before_after_report(tiny_lut, rooms, tmp_path):
    model, variables, student, svars = tiny_lut
    after = {**svars, "params": jax.tree_util.tree_map(lambda w: w * 1.01, svars["params"])}
    res = training.before_after((model, variables), (student, svars), (student, after), rooms, batch_size=4)
    assert res["frames"] == 8 and set(res["exact"]) == {"vs_gt"} and set(res["after"]) == {"vs_gt", "vs_exact"}
    e, b, a = (res[k]["vs_gt"]["delta1"] for k in ("exact", "before", "after"))
    assert res["recovered"]["delta1_vs_gt"] == pytest.approx((a - b) / (e - b))
    assert res["before"]["vs_exact"]["psnr"] < 99                    # the LUT model differs from the exact one
    j, png = training.write_report(tmp_path, res, {"steps": [1, 2], "loss": [0.5, 0.4], "time": [1, 2]})
    assert json.loads(j.read_text())["loss_curve"]["loss"] == [0.5, 0.4] and png.stat().st_size > 0
    assert "recovered" in training.format_report(res)
    no_depth = training.ArrayData(rooms.images, None)                 # images only: fidelity to the exact model
    res = training.before_after((model, variables), (student, svars), (student, after), no_depth, batch_size=8)
    assert "vs_gt" not in res["before"] and "delta1_vs_gt" not in res["recovered"]


@pytest.mark.slow
def test_cli_finetuned_checkpoint_records_and_loads_its_plan(tmp_path, capsys):
    """A small mobilenetv2_lite fine-tuned for a one-layer unsigned plan with learned ranges: the checkpoint
    records the plan, loads with it, and predict / evaluate use its ranges as they are (no re-calibration)."""
    from jaxdepth import inference
    from jaxdepth.io import checkpoint
    model = models.build("mobilenetv2_lite")
    ckpt = checkpoint.save(tmp_path / "init", models.get_preset("mobilenetv2_lite", input_size=(32, 32)),
                           models.init_variables(model, 0))
    plan = {"decoder.conv3": "mul8u_NLX"}
    code, err = _cli(["--init", str(ckpt), "--plan", json.dumps(plan), "--data", "synthetic:4:3", "--steps", "2",
                      "--batch-size", "2", "--ranges", "learn", "--calib-frames", "2", "--out", str(tmp_path / "run"),
                      "--no-progress", "--no-compile-cache"], capsys)
    assert code == 0, err
    run = tmp_path / "run"
    assert (run / "loss.png").exists() and json.loads((run / "log.json").read_text())["config"]["steps_done"] == 2
    m, v, info = checkpoint.load(run / "checkpoint")
    assert m.plan.to_json()["rules"] == plan and set(v["quant"]) == {"decoder"}
    exact, stored = inference.exact_and_plan(m, None)
    assert stored is m.plan and exact.plan.is_float
    x = np.zeros((1, 32, 32, 3), np.float32)
    qm, qv = inference.quantized(exact, v, stored, x)
    assert qv["quant"] is v["quant"] and qm.plan is m.plan   # the fine-tuned (unsigned, learned) ranges as they are


def test_kept_ranges_must_be_calibrated_for_the_signedness_of_the_plans_tables(tiny_lut, rooms):
    """ranges="keep" takes the stored calibration only when it has parameters of each planned table's
    signedness (plan rules and default alike), even for the checkpoint's own plan."""
    model, variables, student, svars = tiny_lut               # svars: calibrated for the signed PLAN
    x = rooms.images[:2].astype(np.float32) / 255
    unsigned = {"*": "mul8u_2AC"}
    for plan in (unsigned, Plan.make({}, default="mul8u_2AC")):
        with pytest.raises(training.FinetuneError, match=r"ranges='keep'.* signedness of their table: conv1, head"):
            training.prepare_student(model, svars, plan, x, "keep")
    assert training.prepare_student(model, svars, {"*": "int8"}, x, "keep")[1]["quant"] is svars["quant"]
    both = models.calibrate(student, variables, x, layers="all")
    assert training.prepare_student(model, both, unsigned, x, "keep")[1]["quant"] is both["quant"]
