"""PyTorch -> Flax conversion against independent PyTorch reference models (random weights, non-trivial
BatchNorm statistics): every preset matches PyTorch in float mode to 1e-4 of the output's scale."""
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxdepth import models  # noqa: E402
from jaxdepth.convert import ConversionError, convert_file, convert_state_dict, load_state_dict  # noqa: E402
from jaxdepth.convert import torch_reference as tr  # noqa: E402
from jaxdepth.io import checkpoint  # noqa: E402

H, W = 64, 96


def _input(seed=0):
    return np.random.default_rng(seed).random((1, H, W, 3), dtype=np.float32)


def _torch_run(model, x):
    with torch.no_grad():
        out = model(torch.from_numpy(x).permute(0, 3, 1, 2))
    if isinstance(out, list):
        return [o.permute(0, 2, 3, 1).numpy() for o in out]
    return out.permute(0, 2, 3, 1).numpy()


def _torch_model(preset, seed=0, **overrides):
    torch.manual_seed(seed)
    return tr.randomize_batchnorm(tr.DenseDepth(models.get_preset(preset, **overrides)), seed).eval()


def _legacy(key):
    """torchvision's current DenseNet names -> the old released ones (denselayer1.norm.1.weight)."""
    import re
    return re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key)


# (preset, how the checkpoint is saved)
CASES = [("densenet161", "state_dict"), ("densenet169", "dataparallel"), ("densenet121", "legacy"),
         ("densenet201", "wrapped"), ("mobilenetv2", "pickled_model"), ("mobilenetv2_lite", "state_dict"),
         ("resnet50", "state_dict")]
FAST_CASES = {("mobilenetv2_lite", "state_dict")}   # the fast subset's one (the big encoders take 15-40 s each)


@pytest.mark.parametrize("preset,how", [c if c in FAST_CASES else pytest.param(*c, marks=pytest.mark.slow)
                                         for c in CASES])
def test_float_model_matches_pytorch(preset, how, tmp_path):
    tm = _torch_model(preset)
    sd = tm.state_dict()
    src = tmp_path / "model.pth"
    if how == "pickled_model":
        torch.save(tm, src)
    elif how == "dataparallel":
        torch.save({f"module.{k}": v for k, v in sd.items()}, src)
    elif how == "legacy":
        torch.save({_legacy(k): v for k, v in sd.items()}, src)
        assert any(".norm.1." in k for k in torch.load(src))
    elif how == "wrapped":
        torch.save({"state_dict": sd, "epoch": 3}, src)
    else:
        torch.save(sd, src)
    if preset in ("densenet161", "mobilenetv2"):   # the file -> orbax checkpoint -> model path
        report = convert_file(src, tmp_path / "ck", trust_pickle=(how == "pickled_model"))  # a whole model
        model, variables, info = checkpoint.load(tmp_path / "ck")
        assert info["extra"]["layout"] == "full"
    else:                                          # (orbax writes ~1000 leaves slowly: in memory here)
        chosen, variables, report = convert_state_dict(load_state_dict(src))
        model = models.build(chosen)
    assert report.preset.name == preset and report.layout == "full"
    assert model.preset == models.get_preset(preset)
    x = _input()
    ref = _torch_run(tm, x)
    out = np.asarray(models.compile_apply(model, variables, x.shape, fast_compile=True)(variables, x))
    assert out.shape == ref.shape == (1, H // 2, W // 2, 1)
    scale = float(np.abs(ref).max())
    assert scale > 0
    assert float(np.abs(out - ref).max()) <= 1e-4 * scale


def test_torchvision_mobilenet_v2_width_half_encoder_alone(tmp_path):
    """torchvision-style mobilenet_v2(width_mult=0.5) weights alone -> mobilenetv2_lite, encoder features equal."""
    torch.manual_seed(1)
    enc = tr.randomize_batchnorm(tr.mobilenet_v2(width_mult=0.5), 1).eval()
    torch.save(enc.state_dict(), tmp_path / "mnv2.pth")
    report = convert_file(tmp_path / "mnv2.pth", tmp_path / "ck")
    assert report.preset.name == "mobilenetv2_lite" and report.decoder_initialised
    model, variables, _ = checkpoint.load(tmp_path / "ck")
    x = _input(1)
    ref = _torch_run(tr.Encoder(enc), x)
    feats = models.compile_apply(model, variables, x.shape, method="features", fast_compile=True)(variables, x)
    assert len(feats) == len(ref) == 20
    for i in (2, 4, 6, 9, 15, 18, 19):
        scale = float(np.abs(ref[i]).max())
        assert float(np.abs(np.asarray(feats[i]) - ref[i]).max()) <= 1e-4 * scale, i
    assert set(variables["params"]["decoder"]) == {"conv2", "conv3", "up0", "up1", "up2", "up3", "up4", "up5"}


@pytest.fixture(scope="module")
def lite_state_dict():
    return {k: v.clone() for k, v in _torch_model("mobilenetv2_lite", 2).state_dict().items()}


def test_missing_unexpected_and_misshaped_keys_are_listed(lite_state_dict):
    sd = dict(lite_state_dict)
    del sd["decoder.up2.convA.bias"]
    sd["decoder.up9.convA.weight"] = torch.zeros(3, 3, 3, 3)
    sd["encoder.original_model.features.3.conv.1.0.weight"] = torch.zeros(5, 1, 3, 3)
    with pytest.raises(ConversionError) as err:
        convert_state_dict(sd)
    msg = str(err.value)
    assert "missing keys (1)" in msg and "decoder.up2.convA.bias" in msg
    assert "unexpected keys (1)" in msg and "decoder.up9.convA.weight" in msg
    assert "mis-shaped keys (1)" in msg and "features.3.conv.1.0.weight: checkpoint (5, 1, 3, 3)" in msg
    with pytest.raises(ConversionError, match="no key starts with"):
        convert_state_dict({"foo.weight": torch.zeros(2)})


def test_pickled_model_with_unimportable_class(tmp_path, lite_state_dict):
    """A whole pickled model whose class cannot be imported any more still yields its tensors."""
    mod = types.ModuleType("gone_module")
    sys.modules["gone_module"] = mod

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tr.DenseDepth("mobilenetv2_lite")

    Model.__module__, Model.__qualname__ = "gone_module", "Model"
    mod.Model = Model
    m = Model()
    m.inner.load_state_dict(lite_state_dict)
    torch.save(m, tmp_path / "whole.pth")
    del sys.modules["gone_module"]
    with pytest.raises(ConversionError, match="--trust-pickle"):     # unpickling runs code: never silently
        load_state_dict(tmp_path / "whole.pth")
    sd = load_state_dict(tmp_path / "whole.pth", trust_pickle=True)
    assert set(sd) == {f"inner.{k}" for k in lite_state_dict}
    np.testing.assert_array_equal(sd["inner.decoder.conv3.weight"], lite_state_dict["decoder.conv3.weight"].numpy())


@pytest.mark.slow
def test_cli_preset_override(tmp_path, capsys):
    """--preset / --set: a conv2 padding the weights cannot show, converted faithfully."""
    from jaxdepth.convert.__main__ import main

    tm = _torch_model("mobilenetv2_lite", 3, conv2_padding=0, leakyrelu_a=False)
    torch.save(tm.state_dict(), tmp_path / "m.pth")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--preset" in capsys.readouterr().out
    res = subprocess.run([sys.executable, "-m", "jaxdepth.convert", str(tmp_path / "m.pth"), str(tmp_path / "ck"),
                          "--preset", "mobilenetv2_lite", "--set", "conv2_padding=0", "--set", "leakyrelu_a=false"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    model, variables, _ = checkpoint.load(tmp_path / "ck")
    assert model.preset.conv2_padding == 0 and not model.preset.leakyrelu_a
    x = _input(3)
    ref = _torch_run(tm, x)
    out = np.asarray(models.compile_apply(model, variables, x.shape, fast_compile=True)(variables, x))
    assert float(np.abs(out - ref).max()) <= 1e-4 * float(np.abs(ref).max())
    assert main([str(tmp_path / "m.pth"), str(tmp_path / "c2"), "--preset", "mobilenetv2"]) == 2
    assert "mis-shaped keys" in capsys.readouterr().err


def test_cli_bad_inputs_are_one_line_errors_before_any_work(tmp_path, capsys, lite_state_dict):
    """Junk bytes, a whole pickled model without --trust-pickle, a bad --plan, an existing output folder:
    each one line on stderr, exit 2, nothing written."""
    from jaxdepth.cli.convert import main

    (tmp_path / "junk.pth").write_bytes(b"hello, not a checkpoint" * 10)
    (tmp_path / "junk.h5").write_bytes(b"hello, not a checkpoint" * 10)
    torch.save(lite_state_dict, tmp_path / "sd.pth")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pth")
    (tmp_path / "exists").mkdir()
    (tmp_path / "afile").write_text("keep me")
    cases = [(["junk.pth", "o1"], "not a PyTorch checkpoint"),
             (["junk.h5", "o6"], "not an HDF5 file"),
             (["whole.pth", "o2"], "--trust-pickle"),
             (["sd.pth", "o3", "--plan", "{bad"], "--plan is not valid JSON"),
             (["sd.pth", "o4", "--plan", '{"decoder.*": "mul8s_NOPE"}'], "unknown multiplier"),
             (["sd.pth", "o7", "--plan", '{"decodr.*": "mul8s_1L2J"}'],
              "plan pattern(s) 'decodr.*' match no layer of mobilenetv2_lite (did you mean 'decoder.*'"),
             (["sd.pth", "exists"], "pass --overwrite"),
             (["sd.pth", "afile"], "afile is a file, not a checkpoint folder"),     # never "pass --overwrite"
             (["sd.pth", "afile", "--overwrite"], "afile is a file, not a checkpoint folder"),
             (["missing.pth", "o5"], "no such file")]
    for argv, message in cases:
        assert main([str(tmp_path / argv[0]), str(tmp_path / argv[1]), *argv[2:]]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "exists", "junk.h5", "junk.pth", "sd.pth",
                                                          "whole.pth"]
    assert not any((tmp_path / "exists").iterdir()) and (tmp_path / "afile").read_text() == "keep me"


def test_cli_set_values_are_checked_before_anything_is_written(tmp_path, capsys, lite_state_dict):
    """--set: an unknown key, a value of the wrong type or range, min_depth >= max_depth: one line naming --set,
    the key and the accepted values, exit 2, nothing written. Valid values are stored normalised."""
    from jaxdepth.cli.convert import main

    torch.save(lite_state_dict, tmp_path / "sd.pth")
    cases = [("foo=1", "--set foo=1: unknown preset setting 'foo'; known: block_config, bn_eps"),
             ("input_size=[0,-5]", "--set input_size: expected null (any size) or [height, width], two positive "
                                   "integers, got [0, -5]"),
             ("input_size=[240]", "--set input_size: expected null"),
             ("max_depth=-1", "--set max_depth: expected a positive finite number of metres, got -1"),
             ("min_depth=Infinity", "--set min_depth: expected a positive finite number of metres, got Infinity"),
             ("leakyrelu_a=maybe", '--set leakyrelu_a: expected true or false, got "maybe"'),
             ("decoder_width=nan", '--set decoder_width: expected a positive finite number, got "nan"'),
             ("decoder_width=NaN", "--set decoder_width: expected a positive finite number, got NaN"),
             ("conv2_padding=1.5", "--set conv2_padding: expected a non-negative integer, got 1.5"),
             ("round_nearest=0", "--set round_nearest: expected a positive integer, got 0"),
             ("encoder=nope", "--set encoder=nope: unknown encoder family; known: densenet, mobilenetv2, resnet"),
             ("min_depth=20", "--set: preset 'mobilenetv2_lite': min_depth (20) must be less than max_depth (10.0)"),
             ("decoder_width=0.001", "--set: preset 'mobilenetv2_lite': decoder_width 0.001 gives 1 decoder "
                                     "features, fewer than the 16"),
             ("bottleneck=99", "--set: preset 'mobilenetv2_lite': the mobilenetv2 encoder has no feature 99")]
    for setting, message in cases:
        assert main([str(tmp_path / "sd.pth"), str(tmp_path / "ck"), "--set", setting]) == 2, setting
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1, err
    assert [p.name for p in tmp_path.iterdir()] == ["sd.pth"]
    assert main([str(tmp_path / "sd.pth"), str(tmp_path / "ck"), "--set", "input_size=[64,96]", "--set",
                 "max_depth=80", "--set", "min_depth=1"]) == 0, capsys.readouterr().err
    stored = checkpoint.read_info(tmp_path / "ck")["preset"]
    assert (stored["input_size"], stored["max_depth"], stored["min_depth"]) == ([64, 96], 80.0, 1.0)


def test_preset_settings_are_validated_by_the_library():
    """The library refuses the same configs (PresetError, a ValueError), whatever builds them."""
    from jaxdepth.models.presets import Preset, PresetError

    for bad in (dict(input_size=(0, -5)), dict(max_depth=-1.0), dict(max_depth=float("nan")),
                dict(leakyrelu_a="maybe"), dict(decoder_width="nan"), dict(block_config=()), dict(bn_eps=0.0),
                dict(min_depth=10.0), dict(up_blocks=())):
        with pytest.raises(PresetError, match=next(iter(bad)) if "up_blocks" not in bad else "up_blocks"):
            models.get_preset("mobilenetv2_lite", **bad)
    with pytest.raises(TypeError, match="unknown preset setting"):
        models.get_preset("mobilenetv2_lite", foo=1)
    d = models.get_preset("densenet169").to_dict()
    with pytest.raises(ValueError, match="max_depth: expected a positive finite number of metres, got -1"):
        Preset.from_dict({**d, "max_depth": -1})                       # e.g. a hand-edited jaxdepth.json
    p = models.get_preset("mobilenetv2_lite", input_size=[480, 640], block_config=[np.int64(2)], max_depth=80,
                          up_blocks=[["up1", "block3", 2]])
    assert p.input_size == (480, 640) and p.block_config == (2,) and type(p.block_config[0]) is int
    assert p.max_depth == 80.0 and p.up_blocks == (models.UpBlock("up1", "block3", 2),)
    hash(p)                                                           # still a valid Flax module attribute


def test_checkpoint_folders_get_the_umask_mode(tmp_path, lite_vars):
    """A saved (or replaced) checkpoint folder has the mode of any new folder under the umask, not 0700."""
    import os
    import stat

    variables = lite_vars
    before = os.umask(0o022)
    try:
        checkpoint.save(tmp_path / "ck", "mobilenetv2_lite", variables)
        assert stat.S_IMODE((tmp_path / "ck").stat().st_mode) == 0o755
        os.umask(0o027)
        checkpoint.save(tmp_path / "ck", "mobilenetv2_lite", variables, overwrite=True)
        assert stat.S_IMODE((tmp_path / "ck").stat().st_mode) == 0o750
    finally:
        os.umask(before)
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_ctrl_c_during_save_leaves_nothing_behind(tmp_path, capsys, monkeypatch, lite_state_dict, lite_vars,
                                                 python_sigint):
    """Ctrl-C while orbax writes in the background (simulated: SIGINT right after its save() returns): the one
    ``interrupted:`` line, exit 130, no partial folder, no orbax thread left running, an old checkpoint intact."""
    import signal
    import threading

    import orbax.checkpoint as ocp

    from jaxdepth.cli.convert import main

    checkpoint.save(tmp_path / "old", "mobilenetv2_lite", lite_vars)
    torch.save(lite_state_dict, tmp_path / "sd.pth")
    original = ocp.StandardCheckpointer.save

    def save_then_ctrl_c(self, *args, **kwargs):
        original(self, *args, **kwargs)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", save_then_ctrl_c)
    threads = set(threading.enumerate())
    for out, extra in (("new", []), ("old", ["--overwrite"])):
        assert main([str(tmp_path / "sd.pth"), str(tmp_path / out), *extra]) == 130
        err = capsys.readouterr().err
        assert err.strip().startswith("interrupted: 0 of 1 conversions finished") and len(err.strip().splitlines()) == 1
        assert not [t.name for t in threading.enumerate() if t not in threads and t.is_alive()]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["old", "sd.pth"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert checkpoint.read_info(tmp_path / "old")["preset_name"] == "mobilenetv2_lite"
    for a, b in zip(jax.tree_util.tree_leaves(lite_vars), jax.tree_util.tree_leaves(checkpoint.load(tmp_path / "old")[1])):
        np.testing.assert_array_equal(a, b)

    def wrapped(*args, **kwargs):                 # Python 3.11 / JAX re-raise a Ctrl-C in some places as another error
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance") from e

    monkeypatch.setattr("jaxdepth.convert.files.convert", wrapped)
    assert main([str(tmp_path / "sd.pth"), str(tmp_path / "new")]) == 130
    assert "interrupted:" in capsys.readouterr().err


@pytest.mark.slow
def test_resnet_family_detected_from_torchvision_keys():
    """The ResNet family's rule: torchvision resnet50 weights alone (fc ignored) -> resnet50 with a fresh
    decoder; other bottleneck block counts -> resnet50_custom with those counts."""
    torch.manual_seed(4)
    chosen, variables, report = convert_state_dict(tr.resnet50().state_dict())
    assert chosen.name == "resnet50" and report.layout == "encoder" and report.decoder_initialised
    assert "fc.weight" in report.ignored and "decoder" in variables["params"]
    np.testing.assert_array_equal(np.asarray(variables["batch_stats"]["encoder"]["layer4_2"]["conv3"]["bn"]["var"]),
                                  np.ones(2048, np.float32))
    small = tr.ResNet((2, 1, 1, 2), 16).state_dict()
    chosen, _, report = convert_state_dict(small)
    assert chosen.name == "resnet50_custom" and chosen.block_config == (2, 1, 1, 2)
    assert chosen.num_init_features == 16 and report.converted == len([k for k in small if "num_batches" not in k
                                                                       and not k.startswith("fc.")])
