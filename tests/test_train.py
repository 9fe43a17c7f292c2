"""Training pieces: DenseDepth loss terms, targets, augmentation, and a short run that lowers the loss."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth import training


def test_loss_zero_for_perfect_prediction_and_terms():
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.uniform(1, 20, (2, 24, 32, 1)).astype(np.float32))
    total, parts = training.depth_loss(y, y)
    assert float(total) == pytest.approx(0.0, abs=1e-5)
    assert float(training.ssim(y, y)) == pytest.approx(1.0, abs=1e-5)
    shifted = y + 1.0
    _, parts = training.depth_loss(shifted, y)
    assert float(parts["l1"]) == pytest.approx(1.0, rel=1e-5)
    assert float(parts["grad"]) == pytest.approx(0.0, abs=1e-5)       # a constant offset has no gradient error
    total, parts = training.depth_loss(shifted, y)
    assert float(total) == pytest.approx(0.1 * 1.0 + float(parts["ssim"]), rel=1e-5)


def test_student_clip_keeps_its_gradient():
    import jax
    raw = jnp.asarray([0.5, 3.0, 150.0])
    np.testing.assert_array_equal(np.asarray(training.clip_straight_through(raw)), [1.0, 3.0, 100.0])
    np.testing.assert_array_equal(np.asarray(jax.grad(lambda r: training.clip_straight_through(r).sum())(raw)), 1.0)


def test_image_gradients_match_numpy():
    x = np.random.default_rng(1).normal(size=(1, 5, 6, 1)).astype(np.float32)
    dy, dx = training.image_gradients(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(dy)[0, :-1], np.diff(x, axis=1)[0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(dx)[0, :, :-1], np.diff(x, axis=2)[0], rtol=1e-6)
    assert np.all(np.asarray(dy)[0, -1] == 0) and np.all(np.asarray(dx)[0, :, -1] == 0)


def test_targets_and_augmentation():
    d = np.full((1, 4, 6), 2.0, np.float32)
    d[0, :2, :2] = 4.0
    t = training.depth_to_target(d, (2, 3))
    assert t.shape == (1, 2, 3, 1)
    assert t[0, 0, 0, 0] == pytest.approx(10 / 4) and t[0, 1, 2, 0] == pytest.approx(5.0)
    rng = np.random.default_rng(0)
    imgs = np.zeros((64, 2, 3, 3), np.uint8)
    imgs[..., 0, 0] = 255                                  # left column red
    deps = np.tile(np.arange(3, dtype=np.float32), (64, 2, 1))
    x, y = training.augment(imgs, deps, rng)
    flipped = y[:, 0, 0] == 2
    assert 10 < flipped.sum() < 54                       # about half flipped
    assert np.all((x[flipped, :, -1].max(axis=-1) > 0.5)) # image flipped together with depth
    assert x.dtype == np.float32 and x.max() <= 1.0
    x2, none = training.augment(imgs, None, np.random.default_rng(0))   # images only (distillation)
    assert none is None and x2.shape == x.shape


@pytest.mark.slow
def test_short_training_lowers_loss(tmp_path, tiny_model):
    from jaxdepth.data import synthetic
    images, depths = synthetic.generate(8, seed=3, height=32, width=48)
    model, variables = tiny_model(0, (1, 32, 48, 3), scale=19.0, features=8, head=(3, 3), batchnorm=True)
    data = training.ArrayData(images, depths)
    _, log = training.train(model, variables, data, steps=60, batch_size=4, lr=3e-3, log_every=10, progress=False)
    assert log["loss"][-1] < 0.8 * log["loss"][0]
    assert log["config"]["steps_done"] == 60 and len(log["steps"]) == 6
    from jaxdepth import viz
    assert viz.loss_curve(log, tmp_path / "loss.png").exists()
    json.dumps(log)


def test_train_module_is_a_shim_over_the_library_and_cli():
    from jaxdepth import train
    from jaxdepth.cli import train as cli_train
    assert train.main is cli_train.main and train.depth_loss is training.depth_loss


def test_kitti_range_targets_clips_and_loss():
    """A densedepth_kitti-range model trains on DepthNorm(depth, 80) = 80 / depth with depths clipped to [1, 80]
    and raw outputs to [1, 80] (NYU: 10 / depth, [0.1, 10] m, raw [1, 100]); the loss of a model whose output
    IS 80 / (ground truth) is zero, where NYU's 10 / depth targets would not be."""
    from jaxdepth import models
    from standin import tiny
    d = np.array([[[0.5, 1.0, 2.0, 40.0, 80.0, 120.0]]], np.float32)
    np.testing.assert_allclose(training.depth_to_target(d, (1, 6), (1.0, 80.0))[0, 0, :, 0],
                               [80.0, 80.0, 40.0, 2.0, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(training.depth_to_target(d, (1, 6))[0, 0, :, 0],
                               [20.0, 10.0, 5.0, 1.0, 1.0, 1.0], rtol=1e-6)           # NYU: clipped at 10 m
    assert training.raw_range((1.0, 80.0)) == (1.0, 80.0) and training.raw_range() == (1.0, 100.0)
    raw = jnp.asarray([0.5, 3.0, 90.0])
    np.testing.assert_array_equal(np.asarray(training.teacher_target(raw, (1.0, 80.0))), [1.0, 3.0, 80.0])
    np.testing.assert_array_equal(np.asarray(training.clip_straight_through(raw, (1.0, 80.0))), [1.0, 3.0, 80.0])

    kitti = models.get_preset("densedepth_kitti", input_size=None)
    model, variables = tiny(0, (1, 32, 48, 3), scale=4.0, features=8, head=(3, 3), preset=kitti)
    assert models.depth_range(model) == (1.0, 80.0)
    x = np.random.default_rng(2).random((2, 32, 48, 3)).astype(np.float32)
    out = np.asarray(model.apply(variables, x), np.float64)               # (2, 16, 24, 1) raw in (1, 5)
    gt = np.repeat(np.repeat(80.0 / out[..., 0], 2, axis=1), 2, axis=2)     # metres, 2x2 blocks: 16-80 m
    assert gt.min() > 10.0                                                  # all beyond NYU's range
    y = training.depth_to_target(gt, out.shape[1:3], models.depth_range(model))
    np.testing.assert_allclose(y, out, rtol=1e-5)
    tx = training.make_optimizer(0.0, 10)
    state, frozen = training.split_variables(variables, training.select_trainable(variables["params"]), False)
    step = training.make_train_step(model, tx, update_bn_stats=False)
    loss = step(state, frozen, tx.init(state), jnp.asarray(x), jnp.asarray(y), None)[3]
    assert float(loss) == pytest.approx(0.0, abs=1e-4)
    nyu_y = training.depth_to_target(gt, out.shape[1:3])                     # 10 / clip(depth, 0.1, 10)
    assert float(step(state, frozen, tx.init(state), jnp.asarray(x), jnp.asarray(nyu_y), None)[3]) > 0.1


def test_cli_numeric_options_out_of_range_are_usage_errors(tmp_path, capsys):
    """Rates that are NaN / negative, negative offsets and counts, and sides below 32 pixels stop train
    before any work: one line naming the option, exit 2, nothing written."""
    from jaxdepth import train
    out = tmp_path / "run"
    for argv, flag in [(["--lr", "nan"], "--lr"), (["--lr", "-1"], "--lr"), (["--minutes", "-1"], "--minutes"),
                       (["--warmup", "-5"], "--warmup"), (["--val-every", "-1"], "--val-every"),
                       (["--teacher-weight", "inf"], "--teacher-weight"), (["--log-every", "0"], "--log-every"),
                       (["--size", "7", "9"], "--size")]:
        assert train.main([*argv, "--steps", "2", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {flag}")
    assert not out.exists()


def test_cli_options_that_would_be_ignored_are_usage_errors(tmp_path, capsys):
    """--preset with --init, --ranges without --plan, --teacher with --target gt: one line, exit 2, nothing
    written (they would otherwise be silently ignored)."""
    from jaxdepth import train
    from jaxdepth.cli.common import DEFAULT_MODEL
    ckpt = str(DEFAULT_MODEL)
    out = tmp_path / "run"
    for argv, message in [(["--init", ckpt, "--preset", "densenet161"], "--preset densenet161 is for training from scratch"),
                          (["--ranges", "learn"], "--ranges learn sets the activation ranges of a --plan"),
                          (["--init", ckpt, "--teacher", ckpt, "--target", "gt"], "--teacher is used with --target")]:
        assert train.main([*argv, "--steps", "2", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {message}")
    assert not out.exists()


def test_odd_input_sizes_train(tiny_model):
    """Targets are made at the model's own output size (DenseDepth: half resolution rounded up, 33x47 ->
    17x24; this stand-in pools to 16x23), so odd input sizes train."""
    from jaxdepth.data import synthetic
    images, depths = synthetic.generate(2, seed=1, height=33, width=47)
    model, variables = tiny_model(0, (1, 33, 47, 3), scale=19.0, features=4, head=(3, 3), batchnorm=True)
    _, log = training.train(model, variables, training.ArrayData(images, depths), steps=2, batch_size=2,
                            lr=1e-3, log_every=1, progress=False)
    assert len(log["loss"]) == 2 and all(np.isfinite(log["loss"]))


@pytest.mark.slow
def test_cli_ctrl_c_saves_the_finished_steps_and_exits_130(tmp_path, capsys, ctrl_c_on_call):
    """Ctrl-C inside step 2 of a float training run: the checkpoint and log hold step 1 (the update in
    progress is not counted), the command says so in its one ``interrupted:`` line and exits 130, not 0."""
    from jaxdepth import models, train
    from jaxdepth.io import checkpoint
    from jaxdepth.training import loop
    ckpt = checkpoint.save(tmp_path / "init", models.get_preset("mobilenetv2_lite", input_size=(32, 32)),
                           models.init_variables(models.build("mobilenetv2_lite"), 0))
    ctrl_c_on_call(loop, "augment", 2)
    out = tmp_path / "run"
    code = train.main(["--init", str(ckpt), "--data", "synthetic:4:3", "--steps", "5", "--batch-size", "2",
                       "--out", str(out), "--no-progress", "--no-compile-cache"])
    err = capsys.readouterr().err
    assert code == 130
    assert f"interrupted: 1 of 5 training steps finished; the checkpoint of step 1 is saved in {out / 'checkpoint'}" in err
    log = json.loads((out / "log.json").read_text())
    assert log["config"]["interrupted"] and log["config"]["steps_done"] == 1
    assert checkpoint.load(out / "checkpoint")[2]["extra"]["steps"] == 1
