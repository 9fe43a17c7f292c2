"""jaxdepth.export: the exported C99 reference, compiled with the system C compiler, reproduces the JAX
model's integer codes for every exported layer (bundled model; a DenseNet), the C requantization matches
an independent Python-int implementation, and bad input fails early with one-line errors."""
import json
import shutil
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxdepth import export, inference, models
from jaxdepth.cli import export as export_cli
from jaxdepth.cli.common import DEFAULT_MODEL, SAMPLES_DIR
from jaxdepth.io import checkpoint, images

from test_requant import py_mbqm

HAVE_CC = shutil.which("cc") is not None and shutil.which("make") is not None
needs_cc = pytest.mark.skipif(not HAVE_CC, reason="no C compiler (cc) or make on PATH: the exported C is not run")
CFLAGS = "CFLAGS=-O1 -std=c99 -Wall -Wextra -pedantic -Werror"

#: one export covers the three tables on every layer kind: signed EvoApprox on pointwise expand layers and
#: decoder convB, unsigned EvoApprox (zero points, non-zero pad codes) on depthwise / project / convA,
#: the exact table elsewhere
MIXED_PLAN = {"encoder.*.expand": "mul8s_1L2J", "decoder.*.convB": "mul8s_1L2J",
              "encoder.*.depthwise": "mul8u_2AC", "encoder.*.project": "mul8u_2AC", "decoder.*.convA": "mul8u_2AC",
              "*": "int8"}


def make_check(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-j2", "-C", str(folder), "check", CFLAGS], text=True,
                          capture_output=True, timeout=600)


def _image(hw):
    frame = images.read_rgb(SAMPLES_DIR / "synthetic_1.png")
    return inference.resize_batch(frame[None], hw)[0].astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def bundled_export(tmp_path_factory):
    model, variables, _ = checkpoint.load(DEFAULT_MODEL)
    model = model.clone(plan=models.Plan.make(MIXED_PLAN))
    out = tmp_path_factory.mktemp("export") / "hw"
    result = export.export_layers(model, variables, _image((32, 48)), out)
    return model, result


@pytest.mark.slow
@needs_cc
def test_bundled_model_every_layer_passes_make_check(bundled_export, tmp_path):
    model, result = bundled_export
    infos = models.describe(model, (1, 32, 48, 3))
    assert result.layers == [i.name for i in infos]                        # every layer, model order
    assert sorted(result.tables) == ["exact_s8", "mul8s_1L2J", "mul8u_2AC"]     # int8 is exact_s8
    assert result.nonzero_pad_layers                                        # unsigned layers with pad code != 0
    kinds = {(i.kind, i.arith.label) for i in infos}
    assert {("depthwise", "mul8u_2AC"), ("pointwise", "mul8s_1L2J"), ("conv", "mul8u_2AC"),
            ("conv", "mul8s_1L2J"), ("conv", "int8")} <= kinds
    copy = tmp_path / "elsewhere"                                           # self-contained: a copy works
    shutil.copytree(result.folder, copy)
    proc = make_check(copy)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    passed = [ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("PASS")]
    assert passed == result.layers
    assert f"{len(result.layers)} of {len(result.layers)} layers passed" in proc.stdout


@pytest.mark.slow
@needs_cc
def test_a_corrupted_golden_output_fails(bundled_export, tmp_path):
    _, result = bundled_export
    copy = tmp_path / "bad"
    shutil.copytree(result.folder, copy)
    name = "decoder.up2.convA"
    golden = copy / "golden" / "decoder_up2_convA.out.bin"
    data = bytearray(golden.read_bytes())
    data[5] = (data[5] + 1) % 256
    golden.write_bytes(bytes(data))
    proc = make_check(copy)
    assert proc.returncode != 0
    fails = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL")]
    assert len(fails) == 1 and name in fails[0] and "1 of" in fails[0]


@pytest.mark.slow
def test_export_files_describe_the_layers(bundled_export):
    _, result = bundled_export
    manifest = json.loads((result.folder / "manifest.json").read_text())
    layer = next(entry for entry in manifest["layers"] if entry["name"] == "encoder.block2.depthwise")
    assert layer["kind"] == "depthwise" and layer["table"] == "mul8u_2AC" and not layer["signed"]
    header = (result.folder / "layers" / "encoder_block2_depthwise.h").read_text()
    assert f"#define ENCODER_BLOCK2_DEPTHWISE_PAD_CODE {layer['pad_code']}" in header
    out = np.fromfile(result.folder / "golden" / "encoder_block2_depthwise.out.bin", np.uint8)
    assert out.size == np.prod(layer["output_hwc"])
    assert len(list((result.folder / "tables").glob("*.c"))) == 3          # each table once


# ---- the C requantization against Python ints ------------------------------------------------------------------
REQUANT_MAIN = r"""
#include <stdio.h>
#include <inttypes.h>
#include "jd_requant.h"
int main(void) {
    long long x, m, s;
    while (scanf("%lld %lld %lld", &x, &m, &s) == 3)
        printf("%" PRId32 "\n", jd_mbqm((int32_t)x, (int32_t)m, (int32_t)s));
    return 0;
}
"""


@needs_cc
def test_c_fixed_point_matches_python_ints(tmp_path):
    from test_requant import _edge_cases
    xs, ms, shifts = _edge_cases()
    rng = np.random.default_rng(3)
    xs = np.concatenate([xs, rng.integers(-2 ** 31, 2 ** 31, 2000), [-2 ** 31]])
    ms = np.concatenate([ms, rng.integers(0, 2 ** 31, 2000), [-2 ** 31]])
    shifts = np.concatenate([shifts, rng.integers(-31, 31, 2000, endpoint=True), [0]])
    src = tmp_path / "t.c"
    src.write_text(REQUANT_MAIN)
    inc = Path(export.__file__).parent / "c"
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", "-pedantic", f"-I{inc}", str(src), "-o",
                    str(tmp_path / "t")], check=True)
    stdin = "\n".join(f"{x} {m} {s}" for x, m, s in zip(xs, ms, shifts))
    got = subprocess.run([str(tmp_path / "t")], input=stdin, text=True, capture_output=True, check=True).stdout
    expect = [py_mbqm(int(x), int(m), int(s)) for x, m, s in zip(xs, ms, shifts)]
    assert [int(v) for v in got.split()] == expect


# ---- a converted-DenseNet stand-in: densenet121 with random weights at 64x64 ------------------------------------
@pytest.mark.slow
@needs_cc
def test_densenet_layers_pass_make_check(tmp_path):
    model = models.build("densenet121", plan={
        "encoder.conv0": "mul8u_2AC", "encoder.denseblock1.denselayer2.*": "mul8s_1L2J",
        "encoder.transition1.conv": "mul8u_2AC", "decoder.up2.*": "mul8s_1L2J", "decoder.conv3": "exact_u8"})
    variables = models.init_variables(model, 0)
    rng = np.random.default_rng(0)      # non-trivial BatchNorm statistics, so folding matters

    def perturb(path, a):
        shape = np.shape(a)
        v = rng.normal(0, 0.1, shape) if path[-1].key == "mean" else rng.uniform(0.5, 1.5, shape)
        return v.astype(np.float32)
    variables["batch_stats"] = jax.tree_util.tree_map_with_path(perturb, variables["batch_stats"])
    result = export.export_layers(model, variables, _image((64, 64)), tmp_path / "d121")
    assert len(result.layers) == 7
    proc = make_check(result.folder)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("PASS") == 7


# ---- bad input: one-line errors, exit 2, before any work ----------------------------------------------------
@pytest.mark.parametrize("argv,message", [
    (["--multiplier", "int8", "--select", "decoder.nothing*"], "match no layer"),
    (["--multiplier", "int8", "--layers", "nomatch*"], "--layers: pattern(s) 'nomatch*' match no layer"),
    (["--multiplier", "int8", "--layers", "decoder.*", "--select", "encoder.stem"], "run in float"),
    (["--multiplier", "no_such_circuit"], "no_such_circuit"),
    (["--multiplier", "int8", "--plan", "{}"], "either --plan or --multiplier"),
    (["--plan", '{"decoder.up1.*": "int8", "decoder.up2.convX": "int8"}'],
     "--plan: pattern(s) 'decoder.up2.convX' match no layer (did you mean 'decoder.up2.convB'"),
    ([], "all float"),
])
def test_cli_bad_input(argv, message, tmp_path, capsys):
    code = export_cli.main([*argv, "--out", str(tmp_path / "o"), "--no-compile-cache"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_cli_unwritable_or_occupied_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert export_cli.main(["--multiplier", "int8", "--out", str(blocker / "sub"), "--no-compile-cache"]) == 2
    assert "is a file" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    assert export_cli.main(["--multiplier", "int8", "--out", str(busy), "--no-compile-cache"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (busy / "keep.txt").read_text() == "x"


def test_cli_size_cap_checked_before_the_model(tmp_path, monkeypatch, capsys):
    """--size 40000 40000 (a ~20 GB input) is refused up front with one line naming --size."""
    from jaxdepth.cli import common

    def no_model(spec):
        raise AssertionError("the model was loaded before --size was checked")
    monkeypatch.setattr(common, "load_model", no_model)
    code = export_cli.main(["--multiplier", "int8", "--size", "40000", "40000", "--select", "decoder.up1.*",
                            "--out", str(tmp_path / "o"), "--no-compile-cache"])
    err = capsys.readouterr().err
    assert code == 2 and "--size 40000 40000" in err and "at most 16.8 MP" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_image_size_without_size_is_capped(tmp_path, monkeypatch):
    """Without --size an image runs at its own size (rounded to 32): a too large one is refused, naming it."""
    from jaxdepth.cli.common import CliError
    from jaxdepth.data import synthetic
    monkeypatch.setattr(synthetic, "MAX_FRAME_PIXELS", 64 * 64)
    images.write_rgb(tmp_path / "big.png", np.zeros((100, 70, 3), np.uint8))    # runs at 96x64
    with pytest.raises(CliError, match="big.png.*smaller --size.*96x64"):
        export_cli._image(str(tmp_path / "big.png"), None, None)
    assert export_cli._image(str(tmp_path / "big.png"), (64, 64), None).shape == (64, 64, 3)


def test_cli_missing_image_creates_no_folders(tmp_path, capsys):
    """A missing input image is reported before any output folder is created."""
    out = tmp_path / "x" / "a" / "b"
    code = export_cli.main([str(tmp_path / "nonexistent.png"), "--multiplier", "int8", "--out", str(out),
                            "--no-compile-cache"])
    err = capsys.readouterr().err
    assert code == 2 and "nonexistent.png: no such file" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()
    assert export.check_output_dir(out) == out and not (tmp_path / "x").exists()   # the check creates nothing


def test_export_layers_takes_float_images_in_0_1(tmp_path):
    """A uint8 image (0..255) was taken as float values up to 255 (activation codes of a 255x brighter image);
    now it, and uint8 calib_images, are refused before any work, with the conversion."""
    from jaxdepth.io.images import ImageConventionError
    model, variables, _ = checkpoint.load(DEFAULT_MODEL)
    model = model.clone(plan=models.Plan.make({"*": "int8"}))
    frame = (_image((32, 48)) * 255).round().astype(np.uint8)
    out = tmp_path / "o"
    with pytest.raises(ImageConventionError, match=r"export_layers' image takes float RGB in \[0, 1\]; got uint8 .*"
                                                   r"pass x.astype\(np.float32\) / 255"):
        export.export_layers(model, variables, frame, out)
    with pytest.raises(ImageConventionError, match=r"export_layers' calib_images takes float RGB in \[0, 1\]; got "
                                                   r"float32 in \[0, 255\]"):
        export.export_layers(model, variables, _image((32, 48)), out, calib_images=frame[None].astype(np.float32))
    with pytest.raises(ImageConventionError, match=r"batch of one; pass image\[0\]"):
        export.export_layers(model, variables, _image((32, 48))[None], out)
    assert not out.exists()


@pytest.mark.slow
@needs_cc
def test_compensated_layers_fold_their_offsets_into_the_bias_and_pass_make_check(tmp_path):
    model, variables, _ = checkpoint.load(DEFAULT_MODEL)
    model = model.clone(plan=models.Plan.make({"decoder.up1.*": "mul8u_NLX", "decoder.up2.*": "mul8s_1KV8",
                                               "*": "int8"}))
    image = _image((32, 48))
    plain = export.export_layers(model, variables, image, tmp_path / "plain", layers=["decoder.up1.*", "decoder.up2.*"])
    comp = export.export_layers(model, variables, image, tmp_path / "comp", layers=["decoder.up1.*", "decoder.up2.*"],
                                compensate=True)
    assert json.loads((comp.folder / "manifest.json").read_text())["compensated"] is True
    for layer in comp.layers:             # the C bias differs from the uncompensated one: the offsets are in it
        ident = layer.replace(".", "_")
        assert (plain.folder / "layers" / f"{ident}.h").read_text() != (comp.folder / "layers" / f"{ident}.h").read_text()
    proc = make_check(comp.folder)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{len(comp.layers)} of {len(comp.layers)} layers passed" in proc.stdout
