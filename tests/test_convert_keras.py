"""Keras .h5 -> Flax conversion verified against Keras itself (Keras 3 on JAX, test-only dependency).

A DenseDepth model is built with keras.applications.DenseNet169 and the decoder in Keras layers (random
weights, non-trivial BatchNorm statistics with some tiny variances), saved by Keras 3 (legacy HDF5) and in the
Keras 2 layout of the published nyu.h5 (checked by loading it back with Keras), converted with the CLI /
library and run in Flax: max |diff| / max |output| <= 1e-4 against Keras' own output.
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "jax":  # pragma: no cover - depends on the environment
    pytest.skip("the Keras reference runs on Keras' JAX backend (KERAS_BACKEND=jax)", allow_module_level=True)

import h5py  # noqa: E402
import jax  # noqa: E402

import keras_densedepth as kd  # noqa: E402
from jaxdepth import convert, models  # noqa: E402
from jaxdepth.convert import ConversionError  # noqa: E402
from jaxdepth.io import checkpoint  # noqa: E402
from jaxdepth.models.densedepth import FAST_COMPILE_OPTIONS  # noqa: E402

H, W = 64, 96
TOL = 1e-4


def _keras_run(model, x):
    """Keras' own forward pass (inference mode), compiled with XLA's fast options like the Flax side."""
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    fn = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
    return np.asarray(fn.lower(tv, ntv, x).compile(compiler_options=FAST_COMPILE_OPTIONS)(tv, ntv, x))


def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def _rel_err(out, ref):
    scale = float(np.abs(ref).max())
    assert scale > 0 and out.shape == ref.shape
    return float(np.abs(out - ref).max()) / scale


@pytest.fixture(scope="module")
def nyu(tmp_path_factory):
    """The published nyu.h5 architecture in Keras (full-width decoder, no LeakyReLU after convA), one input,
    its Keras 3 and Keras 2 saves; Keras' output (`_keras_ref`) and the Flax forward pass compiled once."""
    d = tmp_path_factory.mktemp("keras_nyu")
    base = kd.densenet169(H, W)
    model = kd.densedepth(base, half=False, leaky_a=False)
    kd.randomize(model, 0)
    x = np.random.default_rng(0).random((1, H, W, 3), dtype=np.float32)
    model.save(d / "keras3.h5")
    kd.write_keras2_h5(model, d / "keras2.h5")
    return {"base": base, "model": model, "x": x, "dir": d, "fn": None}


def _keras_ref(nyu):
    if "ref" not in nyu:
        nyu["ref"] = _keras_run(nyu["model"], nyu["x"])
    return nyu["ref"]


def _flax_out(nyu, variables):
    """The converted densedepth_nyu model's output (compiled once per session)."""
    if nyu["fn"] is None:
        nyu["fn"] = models.compile_apply(models.build("densedepth_nyu"), variables, nyu["x"].shape, fast_compile=True)
    return np.asarray(nyu["fn"](variables, nyu["x"]))


@pytest.mark.slow
def test_keras3_save_converted_by_cli_matches_keras(nyu, tmp_path):
    res = subprocess.run([sys.executable, "-m", "jaxdepth.convert", str(nyu["dir"] / "keras3.h5"),
                          str(tmp_path / "ck")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "preset densedepth_nyu" in res.stdout and "keras full checkpoint" in res.stdout
    assert "leakyrelu_a = False (read from the Keras 3 model_config)" in res.stdout
    model, variables, info = checkpoint.load(tmp_path / "ck")
    assert model.preset == models.get_preset("densedepth_nyu") and info["extra"]["source"] == "keras"
    assert model.preset.bn_eps == pytest.approx(1.001e-5)
    err = _rel_err(_flax_out(nyu, variables), _keras_ref(nyu))
    print(f"densedepth_nyu from a Keras 3 save: max |diff| / max |output| = {err:.2e}")
    assert err <= TOL


@pytest.mark.slow
def test_keras2_layout_of_the_published_files_matches_keras(nyu):
    """The Keras 2 file ("conv1/conv" groups, "kernel:0", byte-string names) holds the model's weights (Keras'
    own loader reads them back) and converts to the same outputs."""
    path = nyu["dir"] / "keras2.h5"
    with h5py.File(path) as f:
        assert "conv1" in f["model_weights"] and "conv" in f["model_weights/conv1"]
        assert isinstance(f["model_weights"].attrs["layer_names"][0], bytes)
        assert "conv1/conv/kernel:0" in f["model_weights/conv1/conv"].attrs["weight_names"][0].decode()
    model = nyu["model"]
    original = model.get_weights()
    try:
        model.set_weights([np.zeros_like(w) for w in original])
        kd.load_legacy_weights(model, path)
        assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), original))
    finally:
        model.set_weights(original)
    preset, variables, report = convert.convert(path)
    assert preset.name == "densedepth_nyu" and report.source == "keras"
    assert report.settings["leakyrelu_a"] == "read from the Keras 2 model_config"
    assert "conv1_relu" in report.skipped and "pool3_pool" in report.skipped
    assert len(report.used) == report.converted == len(model.weights)
    err = _rel_err(_flax_out(nyu, variables), _keras_ref(nyu))
    print(f"densedepth_nyu from the Keras 2 layout: max |diff| / max |output| = {err:.2e}")
    assert err <= TOL


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A DenseDepth on keras.applications' DenseNet builder with blocks (2, 2, 2, 2) (same layer names, a
    custom encoder configuration), both decoder variants, saved by Keras 3."""
    d = tmp_path_factory.mktemp("keras_small")
    out = {"dir": d, "x": np.random.default_rng(2).random((1, H, W, 3), dtype=np.float32)}
    for name, half, leaky in (("full", False, False), ("half", True, True)):
        model = kd.densedepth(kd.small_densenet(H, W), half=half, leaky_a=leaky)   # one base each
        kd.randomize(model, 3 if half else 4)
        model.save(d / f"{name}.h5")
        out[name] = model
    return out


@pytest.mark.slow
def test_half_width_leaky_convA_variant_matches_keras(small):
    """Decoder width 0.5 with LeakyReLU after convA (DenseDepth model.py), on a DenseNet with a custom block
    configuration: every setting comes from the file (model_config and shapes), outputs match Keras."""
    preset, variables, report = convert.convert(small["dir"] / "half.h5")
    assert preset.name == "densedepth_custom" and preset.block_config == (2, 2, 2, 2)
    assert preset.leakyrelu_a and preset.decoder_features() == 64 and preset.bn_eps == pytest.approx(1.001e-5)
    assert report.settings["leakyrelu_a"] == "read from the Keras 3 model_config"
    fn = models.compile_apply(models.build(preset), variables, small["x"].shape, fast_compile=True)
    assert _rel_err(np.asarray(fn(variables, small["x"])), _keras_run(small["half"], small["x"])) <= TOL


@pytest.mark.slow
def test_detection_of_each_keras_preset(nyu, tmp_path):
    """nyu.h5 architecture -> densedepth_nyu (above); model.py's half-width decoder with LeakyReLU after convA
    -> densedepth_half; keras.applications DenseNet169 alone -> encoder layout (fresh decoder). (Files that
    match no registered preset -> densedepth_custom: test_half_width_leaky_convA_variant_matches_keras.)"""
    half = kd.densedepth(nyu["base"], half=True, leaky_a=True)
    half.save(tmp_path / "half.h5")
    preset, layout, source = convert.detect_file(tmp_path / "half.h5")
    assert (preset.name, layout, source) == ("densedepth_half", "full", "keras")
    assert preset.leakyrelu_a and preset.decoder_features() == 832
    (tmp_path / "half.h5").unlink()
    nyu["base"].save(tmp_path / "enc.h5")
    preset, layout, _ = convert.detect_file(tmp_path / "enc.h5")
    assert layout == "encoder" and preset.name == "densedepth_nyu"


def test_weights_only_saves_use_the_documented_default(small, tmp_path):
    """Keras 2 ``save_weights`` layout and Keras 3's legacy weights writer: no model_config, so LeakyReLU after
    convA takes the documented default (False, as nyu.h5); the arrays equal the whole-model conversion."""
    model = small["full"]
    kd.write_keras2_h5(model, tmp_path / "w2.h5", whole_model=False)
    kd.write_keras3_weights_h5(model, tmp_path / "w3.h5")
    whole_preset, whole, _ = convert.convert(small["dir"] / "full.h5")
    ref = dict(jax.tree_util.tree_leaves_with_path(whole))
    for name in ("w2.h5", "w3.h5"):
        preset, variables, report = convert.convert(tmp_path / name)
        assert preset == whole_preset and not preset.leakyrelu_a, name
        assert report.settings["leakyrelu_a"].startswith("weights-only file"), name
        leaves = jax.tree_util.tree_leaves_with_path(variables)
        assert len(leaves) == len(ref) == len(model.weights)
        assert all(np.array_equal(v, ref[k]) for k, v in leaves), name


@pytest.mark.slow
def test_bad_files_fail_with_one_clear_error_naming_the_keys(small, tmp_path):
    # another architecture
    inp = keras.Input((32, 32, 3))
    other = keras.Model(inp, keras.layers.Conv2D(4, 3, name="my_conv")(keras.layers.Conv2D(8, 3, name="stem")(inp)))
    other.save(tmp_path / "other.h5")
    with pytest.raises(ConversionError, match="not a keras.applications DenseNet") as err:
        convert.convert(tmp_path / "other.h5")
    assert "my_conv" in str(err.value) and "stem" in str(err.value)
    # truncated file
    kd.write_keras2_h5(small["full"], tmp_path / "keras2.h5")
    src = tmp_path / "keras2.h5"
    with open(src, "rb") as f, open(tmp_path / "cut.h5", "wb") as g:
        g.write(f.read(os.path.getsize(src) // 2))
    with pytest.raises(ConversionError, match="truncated"):
        convert.convert(tmp_path / "cut.h5")
    # a layer missing (group and name list entry removed): nothing converted, the keys listed
    shutil.copy(src, tmp_path / "missing.h5")
    with h5py.File(tmp_path / "missing.h5", "r+") as f:
        mw = f["model_weights"]
        del mw["up2_convA"]
        mw.attrs["layer_names"] = np.array([n for n in mw.attrs["layer_names"] if n != b"up2_convA"])
    with pytest.raises(ConversionError) as err:
        convert.convert(tmp_path / "missing.h5")
    msg = str(err.value)
    assert "missing keys (2)" in msg and "up2_convA/kernel" in msg and "up2_convA/bias" in msg
    assert "nothing was converted" in msg
    # a skip connection wired elsewhere in model_config: another architecture, not converted
    shutil.copy(src, tmp_path / "rewired.h5")
    with h5py.File(tmp_path / "rewired.h5", "r+") as f:
        cfg = _text(f.attrs["model_config"])
        f.attrs["model_config"] = cfg.replace('["pool2_pool", 0, 0, {}]]]', '["pool3_pool", 0, 0, {}]]]').encode()
    with pytest.raises(ConversionError, match="skip connections") as err:
        convert.convert(tmp_path / "rewired.h5")
    assert "up2: concatenates" in str(err.value)
    # Keras 3's native weights format has no layer names
    small["full"].save_weights(tmp_path / "native.weights.h5")
    with pytest.raises(ConversionError, match="native weights file"):
        convert.convert(tmp_path / "native.weights.h5")
    # the CLI: exit 2, one line on stderr, no checkpoint written
    from jaxdepth.cli.convert import main
    assert main([str(tmp_path / "cut.h5"), str(tmp_path / "ck")]) == 2
    assert not (tmp_path / "ck").exists()


# ---- the ResNet-50 and MobileNetV2 families: keras.applications encoders with a DenseDepth decoder --------------
def _family_case(tmp_path, base, decoder, tiny, seed):
    """Keras model (random weights, tiny variances in ``tiny``) -> Keras 3 .h5 -> CLI -> (preset, rel. error)."""
    model = kd.family_densedepth(base, decoder)
    kd.randomize(model, seed, tiny_var_layers=tiny)
    model.save(tmp_path / "model.h5")
    res = subprocess.run([sys.executable, "-m", "jaxdepth.convert", str(tmp_path / "model.h5"),
                          str(tmp_path / "ck")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    flax_model, variables, _ = checkpoint.load(tmp_path / "ck")
    x = np.random.default_rng(seed).random((1, H, W, 3), dtype=np.float32)
    fn = models.compile_apply(flax_model, variables, x.shape, fast_compile=True)
    out = np.asarray(fn(variables, x))
    err = _rel_err(out, _keras_run(model, x))
    print(f"{flax_model.preset.name}: max |diff| / max |output| = {err:.2e}")
    return flax_model.preset, res.stdout, err, len(model.weights), (variables, x, out)


@pytest.mark.slow
def test_keras_resnet50_densedepth_matches_keras(tmp_path):
    """keras.applications ResNet50 (v1: stride on the 1x1 convolutions, conv biases, eps 1.001e-5, ZeroPadding +
    'valid' stem and max pool) + the resnet50 decoder in Keras layers -> keras_resnet50, outputs match Keras."""
    preset, out, err, n_weights, _ = _family_case(tmp_path, kd.resnet50(H, W), kd.RESNET50_DECODER,
                                               ("conv1_bn", "conv5_block3_3_bn", "conv4_block1_0_bn"), 5)
    assert preset == models.get_preset("keras_resnet50"), out
    assert preset.stride_in_1x1 and preset.conv_bias and preset.bn_eps == pytest.approx(1.001e-5)
    assert f"{n_weights} tensors converted" in out and "bottleneck_relu = False" in out
    assert err <= TOL, err


@pytest.mark.slow
def test_keras_mobilenetv2_densedepth_matches_keras(tmp_path):
    """keras.applications MobileNetV2 ('same' padding of the strided convolutions: 0 before, 1 after; eps 1e-3;
    depthwise kernels (3, 3, C, 1)) + the mobilenetv2 decoder in Keras layers -> keras_mobilenetv2, outputs match
    Keras; the torchvision padding (tf_padding=False) on the same weights does not."""
    base = kd.mobilenetv2(H, W)
    preset, out, err, n_weights, (variables, x, ref) = _family_case(tmp_path, base, kd.MOBILENETV2_DECODER,
                                               ("bn_Conv1", "Conv_1_bn", "block_13_depthwise_BN"), 6)
    assert preset == models.get_preset("keras_mobilenetv2"), out
    assert preset.tf_padding and preset.bn_eps == pytest.approx(1e-3)
    assert f"{n_weights} tensors converted" in out
    assert err <= TOL, err
    torch_pad = models.build(preset, tf_padding=False)
    fn = models.compile_apply(torch_pad, variables, x.shape, fast_compile=True)
    torch_err = _rel_err(np.asarray(fn(variables, x)), ref)
    print(f"keras_mobilenetv2 with tf_padding=False: max |diff| / max |output| = {torch_err:.2e}")
    assert torch_err > 100 * TOL


def test_keras_family_detection_and_wiring(tmp_path):
    """Weights-only / encoder-only Keras files of the new families are detected (the DenseNet rule does not take a
    ResNet for a DenseNet: both name layers conv2_block1_1_conv); a decoder skip wired to another layer stops."""
    base = kd.mobilenetv2(H, W, alpha=0.5)
    base.save(tmp_path / "enc.h5")
    preset, layout, source = convert.detect_file(tmp_path / "enc.h5")
    assert (layout, source, preset.encoder, preset.width_mult, preset.tf_padding) == (
        "encoder", "keras", "mobilenetv2", 0.5, True)
    kd.resnet50(H, W).save(tmp_path / "resnet.h5")
    preset, layout, _ = convert.detect_file(tmp_path / "resnet.h5")
    assert (layout, preset.name) == ("encoder", "keras_resnet50")
    width, blocks = kd.MOBILENETV2_DECODER       # up2 reads block_8_add (same size) instead of block_7_add
    wrong = (width, [(n, "block_8_add" if n == "up2" else s, c) for n, s, c in blocks])
    kd.family_densedepth(base, wrong).save(tmp_path / "wired.h5")
    with pytest.raises(ConversionError, match="skip connections") as err:
        convert.convert(tmp_path / "wired.h5")
    assert "up2: concatenates" in str(err.value) and "block_7_add" in str(err.value)


@pytest.mark.slow
def test_kitti_preset_converts_and_reports_metres_the_documented_way(tmp_path):
    """kitti.h5's architecture (nyu.h5's: full-width decoder, no LeakyReLU after convA) on a small DenseNet at a
    KITTI-like aspect ratio. The file says nothing about KITTI: detection gives the NYU convention and the CLI
    says to pass --preset densedepth_kitti; with it the metres are DenseDepth's utils.predict(model, images,
    minDepth=1, maxDepth=80) * 80 (the author's recipe for kitti.h5, issue #69) computed here from Keras' output."""
    from jaxdepth import inference
    from jaxdepth.cli.convert import main

    h, w = 64, 192
    model = kd.densedepth(kd.small_densenet(h, w), half=False, leaky_a=False)
    kd.randomize(model, 7)
    x = np.random.default_rng(7).random((2, h, w, 3), dtype=np.float32)
    raw = _keras_run(model, x)
    # spread the raw output over KITTI's DepthNorm range (80 / depth for 1..80 m) and beyond, both clips hit
    kernel, bias = model.get_layer("conv3").get_weights()
    lo, hi = np.percentile(raw, [5, 95])
    scale = (100.0 - 0.5) / (hi - lo)                  # raw 5th / 95th percentiles -> 0.5 / 100 (conv3 is linear)
    model.get_layer("conv3").set_weights([kernel * scale, bias * scale + 0.5 - scale * lo])
    raw = _keras_run(model, x)
    assert raw.min() < 1 and raw.max() > 80
    src = tmp_path / "kitti.h5"
    kd.write_keras2_h5(model, src)
    preset, _, _ = convert.detect_file(src)
    assert preset.max_depth == 10.0 and preset.name != "densedepth_kitti"
    args = ["--preset", "densedepth_kitti", "--set", "block_config=[2,2,2,2]"]
    assert main([str(src), str(tmp_path / "ck"), *args]) == 0
    flax_model, variables, _ = checkpoint.load(tmp_path / "ck")
    p = flax_model.preset
    assert (p.max_depth, p.min_depth, p.input_size) == (80.0, 1.0, (384, 1248))
    assert models.depth_range(flax_model) == (1.0, 80.0)
    predict = inference.make_predictor(flax_model, variables, flip=False)
    metres = predict(np.round(x * 255).astype(np.uint8))
    raw_q = _keras_run(model, np.round(x * 255).astype(np.float32) / 255)[..., 0]
    expected = np.clip(80.0 / raw_q, 1.0, 80.0) / 80.0 * 80.0          # utils.predict(..., 1, 80) * 80
    assert metres.shape == expected.shape
    assert np.abs(metres - expected).max() <= 1e-4 * 80
    assert metres.min() == 1.0 and metres.max() == 80.0 and (metres > 10).mean() > 0.05   # beyond NYU's 10 m


@pytest.mark.slow
def test_keras2_weights_only_mobilenetv2_reads_depthwise_kernel(tmp_path):
    """A Keras 2 weights-only save of a MobileNetV2 DenseDepth (DepthwiseConv2D weights named
    "depthwise_kernel:0", byte-string names, no model_config) converts to keras_mobilenetv2 with the same arrays
    as the Keras 3 whole-model save of the same model."""
    model = kd.family_densedepth(kd.mobilenetv2(H, W), kd.MOBILENETV2_DECODER)
    kd.randomize(model, 8)
    model.save(tmp_path / "whole.h5")
    kd.write_keras2_h5(model, tmp_path / "w2.h5", whole_model=False)
    with h5py.File(tmp_path / "w2.h5") as f:
        names = [n.decode() for n in f["block_1_depthwise"].attrs["weight_names"]]
    assert names == ["block_1_depthwise/depthwise_kernel:0"]
    whole_preset, whole, _ = convert.convert(tmp_path / "whole.h5")
    preset, variables, report = convert.convert(tmp_path / "w2.h5")
    assert preset == whole_preset == models.get_preset("keras_mobilenetv2")
    assert report.settings["bn_eps"] == "keras.applications default"
    ref = dict(jax.tree_util.tree_leaves_with_path(whole))
    leaves = jax.tree_util.tree_leaves_with_path(variables)
    assert len(leaves) == len(ref) == len(model.weights)
    assert all(np.array_equal(v, ref[k]) for k, v in leaves)


def test_kitti_file_name_without_preset_gets_a_note(small, tmp_path, capsys):
    from jaxdepth.cli.convert import main

    shutil.copy(small["dir"] / "full.h5", tmp_path / "kitti.h5")
    assert main([str(tmp_path / "kitti.h5"), str(tmp_path / "ck")]) == 0
    err = capsys.readouterr().err
    assert "--preset densedepth_kitti" in err
