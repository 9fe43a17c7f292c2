"""Evaluation protocol: flip averaging, upsampling, crop, fidelity; device sharding equals one device."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxdepth import metrics as M
from jaxdepth.data import load
from jaxdepth.evaluation import evaluate
from jaxdepth.inference import make_predictor, upsample_depth

ROOT = Path(__file__).parents[1]

from standin import tiny  # noqa: E402  (tests/standin.py, on sys.path via conftest)


def _data(n=5, h=16, w=24):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    gt = rng.uniform(1, 9, (n, h, w)).astype(np.float32)
    gt[0, :3] = 0
    return rgb, gt


def test_predictor_flip_average_matches_manual():
    from jaxdepth.models import to_metres
    model, variables = tiny()
    rgb, _ = _data()
    x = rgb.astype(np.float32) / 255
    plain = np.asarray(to_metres(model.apply(variables, x)))[..., 0]
    flipped = np.asarray(to_metres(model.apply(variables, x[:, :, ::-1])))[..., 0][:, :, ::-1]
    got = make_predictor(model, variables, flip=True)(rgb)
    np.testing.assert_allclose(got, 0.5 * (plain + flipped), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(make_predictor(model, variables, flip=False)(rgb), plain, rtol=1e-5, atol=1e-5)
    assert not np.allclose(plain, 0.5 * (plain + flipped))   # the flip really changes something


def test_evaluate_matches_manual_protocol():
    model, variables = tiny()
    rgb, gt = _data()
    crop = (2, 14, 3, 21)
    predict = make_predictor(model, variables)
    res = evaluate(predict, [(rgb[:3], gt[:3], crop), (rgb[3:], gt[3:], crop)], max_depth=None)
    pred = upsample_depth(predict(rgb), gt.shape[1:])
    assert pred.shape == gt.shape
    want = M.compute(pred, gt, M.crop_mask(gt.shape, crop))
    for k in (*M.METRICS, "psnr"):
        assert res["accuracy"][k] == pytest.approx(want[k], rel=1e-6)
    assert res["frames"] == 5


def test_fidelity_against_reference():
    model, variables = tiny(0)
    _, other = tiny(1)
    rgb, gt = _data()
    exact = make_predictor(model, variables)
    same = evaluate(exact, [(rgb, gt, None)], reference=exact)
    assert same["fidelity"]["delta1"] == 1.0 and same["fidelity"]["psnr"] == float("inf")
    assert same["reference_accuracy"]["rmse"] == pytest.approx(same["accuracy"]["rmse"])
    diff = evaluate(make_predictor(model, other), [(rgb, gt, None)], reference=exact)
    assert 0 < diff["fidelity"]["psnr"] < 200 and diff["fidelity"]["rmse"] > 0


def test_batch_size_and_limit_must_be_positive():
    """batch_size 0 or negative put the whole dataset into one batch (654 NYU frames at once); now refused."""
    model, variables = tiny()
    predict = make_predictor(model, variables)
    ds = load("synthetic:2:1:32x32")
    for kw in ({"batch_size": 0}, {"batch_size": -1}, {"batch_size": 2.0}, {"limit": 0}, {"limit": -3}):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} must be"):
            evaluate(predict, ds, **kw)


def test_float_rgb_refused_and_channel_axes_accepted_or_named():
    """Float rgb frames were cast to uint8 by the predictor (delta1 0.35 instead of 0.97); now refused with the
    conversion. Ground truth / predictions with a trailing channel of 1 score as without it; other shapes
    name the source and the shape expected."""
    from jaxdepth.io.images import ImageConventionError
    model, variables = tiny()
    rgb, gt = _data(3)
    predict = make_predictor(model, variables)
    with pytest.raises(ImageConventionError, match=r"dataset's rgb batch takes uint8 RGB .*\(x \* 255\)"):
        evaluate(predict, [(rgb / 255.0, gt, None)])
    want = evaluate(predict, [(rgb, gt, None)])["accuracy"]
    assert evaluate(predict, [(rgb, gt[..., None], None)])["accuracy"] == want
    assert evaluate(lambda x: predict(x)[..., None], [(rgb, gt, None)])["accuracy"] == want
    with pytest.raises(ValueError, match=r"depth batch: ground truth of shape \(2, 16, 24\) for 3 rgb frame"):
        evaluate(predict, [(rgb, gt[:2], None)])
    with pytest.raises(ValueError, match=r"predict\(rgb\): prediction of shape \(3, 8, 12, 2\) .* needs metres "
                                         r"\(3, H, W\)"):
        evaluate(lambda x: np.repeat(predict(x)[..., None], 2, -1), [(rgb, gt, None)])


def test_upsample_constant_and_linear():
    d = np.full((1, 3, 4), 2.5, np.float32)
    np.testing.assert_allclose(upsample_depth(d, (6, 8)), 2.5)
    ramp = np.tile(np.arange(4, dtype=np.float32), (1, 2, 1))
    up = upsample_depth(ramp, (2, 8))
    assert np.all(np.diff(up[0, 0]) >= 0) and up[0, 0, 0] == 0 and up[0, 0, -1] == 3


SHARD_SCRIPT = '''
import json, sys, numpy as np, jax
sys.path.insert(0, %r)
from standin import tiny
from jaxdepth.evaluation import evaluate
from jaxdepth.inference import make_predictor
m, v = tiny()
rng = np.random.default_rng(3)
rgb = rng.integers(0, 256, (5, 16, 24, 3), dtype=np.uint8)   # 5 frames: the last batch of 3 is padded
gt = rng.uniform(1, 9, (5, 16, 24)).astype(np.float32)
p = make_predictor(m, v)
r = evaluate(p, [(rgb[:2], gt[:2], None), (rgb[2:], gt[2:], None)])
print(json.dumps({"devices": p.n_devices, "pred": p(rgb).tolist(), "acc": r["accuracy"]}))
''' % str(Path(__file__).parent)


def _run(devices):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SHARD_SCRIPT], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_devices_equal_one_device():
    one, two = _run(1), _run(2)
    assert one["devices"] == 1 and two["devices"] == 2
    np.testing.assert_allclose(np.array(two["pred"]), np.array(one["pred"]), rtol=1e-6, atol=1e-6)
    for k in M.METRICS:
        assert two["acc"][k] == pytest.approx(one["acc"][k], rel=1e-6)


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data" / "nyu_v2_two_frames.npz").exists(),
                    reason="shared data absent")
def test_two_frames_through_protocol():
    model, variables = tiny()
    ds = load(str(ROOT.parent / "shared" / "data" / "nyu_v2_two_frames.npz"))
    res = evaluate(make_predictor(model, variables, input_size=(48, 64)), ds, batch_size=2)
    assert res["frames"] == 2
    assert 0 < res["accuracy"]["pixels"] <= 2 * (459 - 20) * (615 - 24)


def test_cli_with_multiplier_writes_json_and_plot(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from jaxdepth import evaluate as E
    from jaxdepth.cli import common
    model, variables = tiny(0)
    approx, avars = tiny(1)
    monkeypatch.setattr(common, "load_model", lambda spec: (model, variables, {}))
    from jaxdepth import inference
    monkeypatch.setattr(inference, "quantized", lambda m, v, plan, calib, **kw: (approx, avars))
    rgb, gt = _data(3, 16, 24)
    for i in range(3):
        Image.fromarray(rgb[i]).save(tmp_path / f"f{i}.png")
        np.save(tmp_path / f"f{i}_depth.npy", gt[i])
    out = tmp_path / "res"
    assert E.main(["--data", str(tmp_path), "--multiplier", "mul8s_1L2J", "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["frames"] == 3 and res["config"]["format"] == "folder"
    assert 0 < res["fidelity"]["psnr"] < 200
    assert (out / "metrics.png").exists() and (out / "example.png").exists()
    text = capsys.readouterr().out
    assert "approx vs exact" in text and "exact vs gt" in text
    assert E.main(["--data", str(tmp_path / "nothing")]) == 2
    assert E.main(["--data", str(tmp_path), "--multiplier", "no_such_mult"]) == 2


def test_cli_errors_checked_first_and_results_printed_before_writing(tmp_path, monkeypatch, capsys):
    """--out under a file fails before the evaluation; all-NaN ground truth is an error, not a table of nan;
    a write failure after the evaluation still leaves the metrics printed."""
    from PIL import Image

    from jaxdepth import inference
    from jaxdepth.cli import common
    from jaxdepth.cli import evaluate as cli
    model, variables = tiny(0)
    monkeypatch.setattr(common, "load_model", lambda spec: (model, variables, {}))
    rgb, gt = _data(2, 16, 24)
    for i in range(2):
        Image.fromarray(rgb[i]).save(tmp_path / f"f{i}.png")
        np.save(tmp_path / f"f{i}_depth.npy", np.full_like(gt[i], np.nan))
    (tmp_path / "file").write_text("x")
    calls = []
    real_make = inference.make_predictor
    monkeypatch.setattr(inference, "make_predictor", lambda *a, **k: calls.append(1) or real_make(*a, **k))
    assert cli.main(["--data", str(tmp_path), "--out", str(tmp_path / "file" / "res"), "--no-progress"]) == 2
    assert "is a file" in capsys.readouterr().err and not calls          # nothing was computed
    assert cli.main(["--data", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --data {tmp_path}") and "no valid pixel" in err and len(err.splitlines()) == 1
    for i in range(2):
        np.save(tmp_path / f"f{i}_depth.npy", gt[i])

    def fail(res, out):
        raise PermissionError(13, "Permission denied", str(out))
    monkeypatch.setattr(cli, "write_outputs", fail)
    assert cli.main(["--data", str(tmp_path), "--out", str(tmp_path / "res"), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "model vs gt" in captured.out and "delta1" in captured.out and "Permission denied" in captured.err


@pytest.mark.parametrize("mean", ["images", "pixels"])
def test_frames_without_ground_truth_are_counted_and_warned(mean):
    """A frame whose ground truth is all inf adds nothing: the metrics equal those of the other frames, a
    warning says so, and the result counts the frames given, without ground truth, and used."""
    model, variables = tiny()
    rgb, gt = _data(3)
    gt[1] = np.inf
    predict = make_predictor(model, variables)
    with pytest.warns(RuntimeWarning, match="1 of 3 frames have no valid ground-truth pixel"):
        res = evaluate(predict, [(rgb, gt, None)], mean=mean, max_depth=None)
    kept = evaluate(predict, [(rgb[[0, 2]], gt[[0, 2]], None)], mean=mean, max_depth=None)
    assert res["frames"] == 3 and res["frames_without_gt"] == 1 and res["accuracy"]["frames"] == 2
    assert kept["frames_without_gt"] == 0 and kept["accuracy"]["frames"] == 2
    for k in (*M.METRICS, "psnr", "pixels"):
        assert res["accuracy"][k] == pytest.approx(kept["accuracy"][k], rel=1e-6)


def test_cli_reports_frames_without_ground_truth(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from jaxdepth.cli import common
    from jaxdepth.cli import evaluate as cli
    model, variables = tiny(0)
    monkeypatch.setattr(common, "load_model", lambda spec: (model, variables, {}))
    rgb, gt = _data(2, 16, 24)
    for i in range(2):
        Image.fromarray(rgb[i]).save(tmp_path / f"f{i}.png")
        np.save(tmp_path / f"f{i}_depth.npy", np.full_like(gt[i], np.inf) if i else gt[i])
    out = tmp_path / "res"
    assert cli.main(["--data", str(tmp_path), "--mean", "images", "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "2 frames (1 with valid ground truth)" in captured.out
    assert captured.err == ("warning: 1 of 2 frames have no valid ground-truth pixel (finite, > 0.001 m, <= 10 m, "
                            "inside the crop): the metrics leave them out\n")
    res = json.loads((out / "metrics.json").read_text())
    assert res["frames"] == 2 and res["frames_without_gt"] == 1 and res["accuracy"]["frames"] == 1
    assert res["accuracy"]["pixels"] == 13 * 24          # _data zeroes frame 0's top 3 rows


def test_cli_synthetic_spec_too_large(tmp_path, capsys):
    from jaxdepth.cli import evaluate as cli
    assert cli.main(["--data", "synthetic:2:1:40000x40000", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "at most 16.8 MP" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


# ---- a KITTI-range checkpoint (metres = 80 / output in [1, 80]): the cap, PSNR peak and checks follow it ----
@pytest.mark.slow
def test_kitti_range_checkpoint_scores_ground_truth_up_to_80_m(tmp_path):
    """jaxdepth-evaluate on a KITTI-range checkpoint with ground truth from 2 to 120 m: predictions are
    clip(80 / raw, 1, 80) (flip-averaged), pixels up to 80 m are scored (not NYU's 10 m), PSNR's peak is 80 m;
    expected values from the model's raw output and numpy (`standin.kitti_expected`)."""
    from jaxdepth.cli import evaluate as cli
    from jaxdepth.io import checkpoint
    from standin import kitti_expected, kitti_frames, kitti_range_densenet
    model, v = kitti_range_densenet()
    checkpoint.save(tmp_path / "kitti", model.preset, v)
    rgb, gt = kitti_frames()
    np.savez(tmp_path / "kitti_frames.npz", images=rgb, depths=gt)
    args = cli.build_parser().parse_args(["--model", str(tmp_path / "kitti"), "--data",
                                          str(tmp_path / "kitti_frames.npz"), "--no-progress"])
    res = cli.run(args)
    assert res["config"]["crop"] is None and res["config"]["preset"] == "densedepth_kitti"
    assert res["depth_range"] == [1.0, 80.0] and res["max_depth"] == 80.0 and res["config"]["max_depth"] == 80.0
    for k, w in kitti_expected(model, v, rgb, gt).items():
        assert res["accuracy"][k] == pytest.approx(w, rel=2e-4, abs=1e-6), k
    assert res["checks"]["prediction"].max_depth == 80.0 and not res["checks"]["prediction"].problems


def test_depth_check_uses_the_model_range():
    from jaxdepth.inference import check_depth
    at_ten = np.full((4, 4), 10.0, np.float32)
    at_ten[0, 0] = 12.0
    assert "clipped_max" in check_depth(at_ten[1:]).problems                     # NYU: 10 m is the clip end
    assert "clipped_max" not in check_depth(at_ten, depth_range=(1.0, 80.0)).problems
    c = check_depth(np.full((4, 4), 80.0, np.float32), depth_range=(1.0, 80.0))
    assert "clipped_max" in c.problems and "clipped to 80.0 m" in c.describe()
