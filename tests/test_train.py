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


# ---- depth holes (0 / NaN = no measurement), data and argument checks -----------------------------------------
def _numpy_masked_loss(pred, target, val_range):
    """DenseDepth's loss written out in numpy (float64) over the finite target pixels: L1 over them, gradients
    whose both pixels are measured (per measured pixel), SSIM averaged over the 11x11 windows without a hole
    (explicit loops)."""
    p, t = np.asarray(pred, np.float64)[..., 0], np.asarray(target, np.float64)[..., 0]
    m = np.isfinite(t)
    l1 = np.abs(p - t)[m].sum() / m.sum()
    both_y, both_x = m[:, 1:] & m[:, :-1], m[:, :, 1:] & m[:, :, :-1]
    grad = (np.abs(np.diff(p, axis=1) - np.diff(t, axis=1))[both_y].sum()
            + np.abs(np.diff(p, axis=2) - np.diff(t, axis=2))[both_x].sum()) / m.sum()
    g = np.exp(-(np.arange(11) - 5.0) ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / g.sum() ** 2
    c1, c2 = (0.01 * val_range) ** 2, (0.03 * val_range) ** 2
    values = []
    for n in range(p.shape[0]):
        for i in range(p.shape[1] - 10):
            for j in range(p.shape[2] - 10):
                if not m[n, i:i + 11, j:j + 11].all():
                    continue
                a, b = p[n, i:i + 11, j:j + 11], t[n, i:i + 11, j:j + 11]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb, cov = (w * a * a).sum() - ma ** 2, (w * b * b).sum() - mb ** 2, (w * a * b).sum() - ma * mb
                values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    l_ssim = min(max((1 - np.mean(values)) / 2, 0.0), 1.0)
    return 0.1 * l1 + l_ssim + grad, {"l1": l1, "ssim": l_ssim, "grad": grad}


def test_loss_leaves_out_target_pixels_without_measurement():
    """NaN targets (holes) made the loss NaN ("loss became nan": read as divergence); now the loss is DenseDepth's
    over the measured pixels, checked against a numpy reference with and without holes, and a hole pixel gets
    no gradient."""
    import jax
    rng = np.random.default_rng(0)
    pred = rng.uniform(1, 30, (2, 13, 14, 1)).astype(np.float32)
    target = (pred + rng.normal(0, 3, pred.shape)).astype(np.float32)
    for holes in ([], [(0, 0, 0), (0, 12, 7), (1, 6, 6)]):
        t = target.copy()
        for hole in holes:
            t[hole] = np.nan
        total, parts = training.depth_loss(jnp.asarray(pred), jnp.asarray(t))
        want_total, want = _numpy_masked_loss(pred, t, 100.0)
        assert float(total) == pytest.approx(want_total, rel=1e-5)
        for k in want:
            assert float(parts[k]) == pytest.approx(want[k], rel=1e-5), k
    grad = jax.grad(lambda p: training.depth_loss(p, jnp.asarray(t))[0])(jnp.asarray(pred))
    assert np.isfinite(np.asarray(grad)).all() and float(grad[0, 0, 0, 0]) == 0.0 and float(grad[0, 1, 1, 0]) != 0


def test_targets_of_depth_with_holes():
    """Zero depth (a hole) was clipped to 0.1 m, i.e. target 100 (train towards 0.1 m); now holes, 0 or NaN,
    stay out of the block means / the bilinear resize, and a target pixel over holes only is NaN."""
    d = np.full((1, 4, 6), 2.0, np.float32)
    d[0, :2, :2] = 0.0                       # a whole 2x2 block without measurement
    d[0, 0, 2], d[0, 1, 3] = np.nan, 4.0     # the next block: 2, 4 and 2 measured
    t = training.depth_to_target(d, (2, 3))[..., 0]
    assert np.isnan(t[0, 0, 0]) and t[0, 0, 1] == pytest.approx(10 / (8 / 3)) and t[0, 1, 0] == pytest.approx(5.0)
    flat = np.full((1, 6, 9), 2.0, np.float32)
    flat[0, :3, :3] = 0.0
    t = training.depth_to_target(flat, (4, 4))[..., 0]       # not a multiple: bilinear over measured pixels
    assert np.all(t[np.isfinite(t)] == pytest.approx(5.0))      # no measured neighbour dragged towards 0.1 m
    assert [tuple(i) for i in np.argwhere(np.isnan(t[0]))] == [(0, 0), (1, 0)]   # all 4 neighbours holes
    resized = training.ArrayData(np.zeros((1, 6, 9, 3), np.uint8), flat).resized((4, 4)).depths
    assert np.all(resized[np.isfinite(resized)] == pytest.approx(2.0))  # was bilinear with the 0s: 0.5..1.5 m
    assert [tuple(i) for i in np.argwhere(np.isnan(resized[0]))] == [(0, 0), (1, 0)]


def test_training_on_depth_with_holes(tiny_model):
    """train() on depth maps with holes: finite loss (was FloatingPointError 'loss became nan'), 0 and NaN holes
    give the same loss, and a batch without any measured pixel is warned about."""
    from jaxdepth.data import synthetic
    images, depths = synthetic.generate(2, seed=1, height=32, width=32)
    model, variables = tiny_model(0, (1, 32, 32, 3), scale=19.0, features=4, head=(3, 3))
    losses = []
    for fill in (np.nan, 0.0):
        holed = depths.copy()
        holed[:, :12, :12] = fill
        _, log = training.train(model, variables, training.ArrayData(images, holed), steps=1, batch_size=2,
                                log_every=1, progress=False)
        losses.append(log["loss"][0])
    assert np.isfinite(losses[0]) and losses[0] == pytest.approx(losses[1], rel=1e-6)
    with pytest.warns(UserWarning, match="1 of 1 batches had no measured depth pixel"):
        training.train(model, variables, training.ArrayData(images, np.zeros_like(depths)), steps=1, batch_size=2,
                       progress=False)


def test_array_data_checks_images_and_depth_maps():
    """Float images were divided by 255 again (near-black frames) and depth maps of another width block-averaged;
    both are refused now, with what to pass; a trailing depth channel of 1 is accepted."""
    images = np.zeros((2, 8, 12, 3), np.uint8)
    depths = np.ones((2, 8, 12), np.float32)
    assert training.ArrayData(images, depths[..., None]).depths.shape == (2, 8, 12)
    for args, message in [((images / 255.0, depths), r"takes uint8 RGB \(0..255\); got float64 in \[0, 1\]: pass "
                                                     r"\(x \* 255\).round\(\).astype\(np.uint8\)"),
                          ((images, depths[:, :, :6]), r"depth maps of shape \(2, 8, 6\) do not match images "
                                                       r"\(2, 8, 12, 3\): need depths \(N, H, W\) = \(2, 8, 12\)"),
                          ((images, depths[:1]), "2 images but 1 depth maps"),
                          ((images, depths.astype(np.uint16)), "must be float metres, got uint16"),
                          ((images[0], None), r"single image; add a batch axis")]:
        with pytest.raises(training.TrainingDataError, match=message):
            training.ArrayData(*args)
    with pytest.raises(ValueError, match="augment takes uint8 RGB"):
        training.augment(images / 255.0, None, np.random.default_rng(0))


@pytest.mark.parametrize("kw,message", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"batch_size": -2}, "batch_size must be an integer >= 1, got -2"),
    ({"steps": 0}, "steps must be an integer >= 1, got 0"),
    ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
    ({"lr": 0.0}, "lr must be a finite number > 0, got 0.0"),
    ({"log_every": 0}, "log_every must be an integer >= 1"),
    ({"save_every": 0}, "save_every must be an integer >= 1"),
    ({"minutes": -1.0}, "minutes must be a finite number > 0"),
    ({"learn_ranges": True, "range_lr": float("inf")}, "range_lr must be a finite number > 0"),
    ({"warmup": -1}, "warmup must be an integer >= 0"),
    ({"val_every": 1, "val": "no depth"}, "has no depth maps: validation needs ground truth"),
])
def test_train_rejects_bad_numbers_up_front(kw, message, tiny_model):
    """batch_size 0 ended in 'loss became nan' (an empty batch), lr nan / 0 / negative trained nothing or the
    wrong way, log_every 0 raised ZeroDivisionError mid-run; now each is refused before any work, by name."""
    images, depths = np.zeros((2, 8, 8, 3), np.uint8), np.ones((2, 8, 8), np.float32)
    if kw.get("val") == "no depth":
        kw = {**kw, "val": training.ArrayData(images)}
    model, variables = tiny_model(0, (1, 8, 8, 3))
    with pytest.raises(ValueError, match=message):
        training.train(model, variables, training.ArrayData(images, depths), **{"steps": 1, **kw}, progress=False)


def test_train_warns_when_the_batch_is_larger_than_the_data(tiny_model):
    images, depths = np.zeros((2, 8, 8, 3), np.uint8), np.ones((2, 8, 8), np.float32)
    model, variables = tiny_model(0, (1, 8, 8, 3))
    with pytest.warns(UserWarning, match="batch_size 4 is more than the 2 training frames"):
        training.train(model, variables, training.ArrayData(images, depths), steps=1, batch_size=4, progress=False)


def test_validate_checks_its_batch_size_and_ground_truth(tiny_model):
    images = np.zeros((2, 8, 8, 3), np.uint8)
    model, variables = tiny_model(0, (1, 8, 8, 3))
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):     # was range() step 0
        training.validate(model, variables, training.ArrayData(images, np.ones((2, 8, 8), np.float32)), batch_size=0)
    with pytest.raises(ValueError, match="has no depth maps"):
        training.validate(model, variables, training.ArrayData(images))
