"""predict CLI: files written, per-image errors, unknown multipliers; a stand-in model keeps it fast."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxdepth import inference, predict
from jaxdepth.cli import common

from standin import TinyDepth  # noqa: E402  (tests/standin.py, on sys.path via conftest)


class _Preset:
    input_size = (32, 48)


@pytest.fixture
def tiny(monkeypatch):
    import jax
    import jax.numpy as jnp
    model = TinyDepth(preset=_Preset())
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
    monkeypatch.setattr(common, "load_model", lambda spec: (model, variables, {}))
    approx = TinyDepth(scale=3.0)
    monkeypatch.setattr(inference, "quantized", lambda m, v, plan, calib, **kw: (approx, variables))
    return model


def _images(tmp_path, n=2):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 60, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_predict_writes_depth_and_png(tmp_path, tiny, capsys):
    folder = _images(tmp_path)
    out = tmp_path / "out"
    assert predict.main([str(folder), "--out", str(out), "--no-progress"]) == 0
    for i, h in ((0, 40), (1, 48)):
        d = np.load(out / f"im{i}_depth.npy")
        assert d.shape == (h, 60) and d.dtype == np.float32          # back at the input's size
        assert 0.1 <= d.min() and d.max() <= 10
        assert Image.open(out / f"im{i}_depth.png").size[0] > 100
    assert str(out.resolve()) in capsys.readouterr().out


def test_predict_with_multiplier_and_a_bad_image(tmp_path, tiny, capsys):
    folder = _images(tmp_path)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG garbage")
    out = tmp_path / "out"
    code = predict.main([str(folder), str(bad), str(tmp_path / "missing.jpg"), "--multiplier", "mul8s_1L2J",
                         "--layers", "decoder.*", "--out", str(out), "--no-progress"])
    assert code == 1                                                  # failures -> non-zero, others still done
    err = capsys.readouterr().err
    assert "broken.png" in err and "missing.jpg" in err
    exact, approx = np.load(out / "im0_exact_depth.npy"), np.load(out / "im0_depth.npy")
    assert exact.shape == approx.shape == (40, 60) and not np.allclose(exact, approx)
    assert (out / "im0_compare.png").exists() and (out / "im1_exact_depth.png").exists()


def test_unknown_multiplier_is_a_clear_error(tmp_path, tiny, capsys):
    folder = _images(tmp_path, 1)
    assert predict.main([str(folder), "--multiplier", "mul8s_NOPE", "--out", str(tmp_path / "o")]) == 2
    assert "unknown multiplier" in capsys.readouterr().err


def test_make_plan_and_table_file(tmp_path):
    from jaxdepth import multipliers
    assert common.make_plan(None) is None
    assert common.make_plan("mul8s_1L2J", ["decoder.*", "encoder.conv0"]) == {"decoder.*": "mul8s_1L2J",
                                                                              "encoder.conv0": "mul8s_1L2J"}
    np.save(tmp_path / "mine.npy", multipliers.exact().table)
    plan = common.make_plan(str(tmp_path / "mine.npy"), signed=True)
    assert plan["*"].signed and np.array_equal(plan["*"].table, multipliers.exact().table)
    np.save(tmp_path / "bad.npy", np.zeros((3, 3)))
    with pytest.raises(common.CliError, match="256, 256"):
        common.make_plan(str(tmp_path / "bad.npy"), signed=True)


def test_model_size_rule():
    assert inference.run_size((120, 160), (480, 640)) == (120, 160)
    assert inference.run_size(None, (470, 650)) == (448, 640)


def test_help_runs():
    with pytest.raises(SystemExit) as e:
        predict.build_parser().parse_args(["--help"])
    assert e.value.code == 0


@pytest.mark.slow
@pytest.mark.skipif(not (common.DEFAULT_MODEL / "jaxdepth.json").exists(), reason="bundled model absent")
def test_no_arguments_runs_bundled_model_on_samples(tmp_path, monkeypatch, capsys):
    """The real default model on the bundled synthetic samples: depth files at input size, sensible accuracy."""
    from jaxdepth import metrics
    from jaxdepth.data.loaders import read_depth
    monkeypatch.chdir(tmp_path)
    assert predict.main(["--no-progress"]) == 0
    out = tmp_path / "outputs" / "predict"
    assert str(out.resolve()) in capsys.readouterr().out
    acc = metrics.Accumulator()
    for gt_file in sorted(common.SAMPLES_DIR.glob("*_depth.png")):
        pred = np.load(out / gt_file.name.replace(".png", ".npy"))
        gt = read_depth(gt_file)
        assert pred.shape == gt.shape == (240, 320)
        acc.add(pred, gt)
    assert acc.result()["delta1"] > 0.4   # a floor against a broken pipeline (random weights: ~0.01)
