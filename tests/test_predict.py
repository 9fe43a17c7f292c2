"""predict CLI: files written, per-image errors, unknown multipliers; a stand-in model keeps it fast."""

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
    code = predict.main([str(folder), str(bad), "--multiplier", "mul8s_1L2J",
                         "--layers", "decoder.*", "--out", str(out), "--no-progress"])
    assert code == 1                                                  # failures -> non-zero, others still done
    assert "broken.png" in capsys.readouterr().err
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


def _listing(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_rerun_removes_stale_files_and_ctrl_c_keeps_whole_sets(tmp_path, tiny, monkeypatch, capsys):
    """A run without --multiplier after one with it removes NAME_exact_* / NAME_compare.png; Ctrl-C during the
    second image leaves the first image's new set, the second image's old set, no temporary files, exit 130."""
    from jaxdepth import viz
    folder, out = _images(tmp_path), tmp_path / "out"
    assert predict.main([str(folder), "--multiplier", "mul8s_1L2J", "--out", str(out), "--no-progress"]) == 0
    before = _listing(out)
    assert len(before) == 10
    real = viz.depth_png

    def depth_png(depth, path, title=None, **kw):
        if "im1" in str(path):
            raise KeyboardInterrupt
        return real(depth, path, title=title, **kw)
    monkeypatch.setattr(viz, "depth_png", depth_png)
    capsys.readouterr()
    assert predict.main([str(folder), "--out", str(out), "--no-progress"]) == common.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted: 1 of 2 images finished" in err and "Traceback" not in err
    after = _listing(out)
    assert sorted(after) == ["im0_depth.npy", "im0_depth.png"] + sorted(n for n in before if n.startswith("im1"))
    assert all(after[n] == before[n] for n in after if n.startswith("im1"))      # untouched old set
    assert after["im0_depth.npy"] != before["im0_depth.npy"]
    exact_model_depth = np.load(out / "im0_depth.npy")                           # now the exact model's
    assert exact_model_depth.shape == (40, 60)


def test_degenerate_and_nan_outputs_are_reported(tmp_path, tiny, monkeypatch, capsys):
    import jax
    folder, out = _images(tmp_path, 1), tmp_path / "out"
    model, variables, _ = common.load_model(None)
    monkeypatch.setattr(inference, "quantized", lambda m, v, plan, calib, **kw: (TinyDepth(scale=0.0), variables))
    assert predict.main([str(folder), "--multiplier", "mul8s_1L2J", "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "approximate depth looks degenerate" in err and "constant 10.00 m" in err and "clipped to 10.0 m" in err
    nan_vars = jax.tree_util.tree_map(lambda a: a * np.nan, variables)
    monkeypatch.setattr(common, "load_model", lambda spec: (model, nan_vars, {}))
    assert predict.main([str(folder), "--out", str(tmp_path / "nan"), "--no-progress"]) == 1
    assert "NaN everywhere" in capsys.readouterr().err
    assert not any((tmp_path / "nan").iterdir())


def test_large_images_warn_and_max_side_downscales(tmp_path, tiny, monkeypatch, capsys):
    from jaxdepth.cli import predict as cli_predict
    monkeypatch.setattr(cli_predict, "LARGE_IMAGE_PIXELS", 1000)
    folder, out = _images(tmp_path, 1), tmp_path / "out"
    assert predict.main([str(folder), "--out", str(out), "--no-progress"]) == 0
    assert "--max-side" in capsys.readouterr().err
    assert predict.main([str(folder), "--out", str(out), "--no-progress", "--max-side", "30"]) == 0
    assert "--max-side" not in capsys.readouterr().err
    assert np.load(out / "im0_depth.npy").shape == (20, 30)


def test_usage_errors_before_any_work(tmp_path, tiny, capsys):
    folder = _images(tmp_path, 1)
    (tmp_path / "file").write_text("x")
    np.save(tmp_path / "t.npy", np.zeros((256, 256), np.int32))
    for argv, message in [(["--out", str(tmp_path / "file" / "o")], "is a file"),
                          (["--layers", "decoder.*"], "--layers needs --multiplier"),
                          (["--multiplier", str(tmp_path / "t.npy")], "--signed or --unsigned"),
                          (["--max-side", "0"], "positive integer")]:
        with pytest.raises(SystemExit) if "--max-side" in argv else _no_raise():
            assert predict.main([str(folder), "--no-progress", *argv]) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "imgs", "t.npy"]


def test_missing_inputs_and_clashing_names_are_usage_errors(tmp_path, tiny, capsys):
    """A named input that does not exist, or two inputs whose outputs would share names (a.png and
    other/a.jpg both write a_*), stop the run before any work: one line, exit 2, nothing written. The same
    file given twice is predicted once."""
    folder = _images(tmp_path, 1)
    other = tmp_path / "other"
    other.mkdir()
    Image.open(folder / "im0.png").save(other / "im0.jpg")
    out = tmp_path / "out"
    for argv, message in [([str(folder), str(tmp_path / "missing.jpg")], "missing.jpg: no such file"),
                          ([str(folder), str(other)], "would both write im0_*")]:
        assert predict.main([*argv, "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not out.exists()
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    for argv, message in [([str(tmp_path / "text.png")], "text.png: not a readable image"),
                          ([str(tmp_path / "text.png"), str(tmp_path / "empty.png")], "(and 1 more unreadable)")]:
        assert predict.main([*argv, "--out", str(out), "--no-progress"]) == 2   # no readable image at all
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not out.exists()
    image = str(folder / "im0.png")
    assert predict.main([image, image, str(folder), "--out", str(out), "--no-progress"]) == 0
    assert "1 of 1 images done" in capsys.readouterr().out


def _no_raise():
    import contextlib
    return contextlib.nullcontext()


@pytest.mark.skipif(not (common.DEFAULT_MODEL / "jaxdepth.json").exists(), reason="bundled model absent")
def test_layers_matching_nothing_lists_the_layers(tmp_path, capsys):
    """The bundled model: 'decodr.*' is an error with a "did you mean" and the model's layers, before anything
    is computed."""
    assert predict.main(["--multiplier", "mul8s_1KV8", "--layers", "decodr.*", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --layers: pattern(s) 'decodr.*' match no layer (did you mean 'decoder.*'")
    assert "the model's 66 layers: encoder.stem" in err and "(encoder.*: 52, decoder.*: 14)" in err
