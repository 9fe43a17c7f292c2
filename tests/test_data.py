"""Synthetic generator and the dataset loaders (every format written small in tmp_path)."""
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxdepth.data import load, synthetic
from jaxdepth.data.loaders import DataError, detect_format
from jaxdepth.io.images import ImageError, find_images, read_rgb
from jaxdepth.metrics import EIGEN_CROP

SHARED = Path(__file__).parents[1].parent / "shared"


@pytest.fixture(scope="module")
def frames():
    return synthetic.generate(3, seed=5, height=48, width=64)


def test_generate_shapes_range_and_reproducible(frames):
    images, depths = frames
    assert images.shape == (3, 48, 64, 3) and images.dtype == np.uint8
    assert depths.shape == (3, 48, 64) and depths.dtype == np.float32
    assert depths.min() >= 0.5 and depths.max() <= 10.0
    assert images.std() > 10  # textured, shaded, not flat
    again = synthetic.generate(3, seed=5, height=48, width=64)
    np.testing.assert_array_equal(again[0], images)
    np.testing.assert_array_equal(again[1], depths)
    img2, dep2 = synthetic.render_frame(5, 2, 48, 64)
    np.testing.assert_array_equal(img2, images[2])
    other = synthetic.generate(1, seed=6, height=48, width=64)
    assert not np.array_equal(other[1][0], depths[0])


def test_floor_depth_matches_camera_geometry():
    """Rays hit the floor plane y=0 at the analytic z-depth (scene geometry check)."""
    rng = np.random.default_rng([11, 0, synthetic.GENERATOR_VERSION])
    scene = synthetic.sample_scene(rng)
    scene.prims = scene.prims[:2]          # the room shell and the floor slab only
    scene.groups = []
    _, depth = synthetic.render(scene, 60, 80, shadows=False)
    k = synthetic.intrinsics(60, 80)
    v, u = 55, 40
    d = scene.cam_rot @ np.array([(u - k["cx"]) / k["fx"], (v - k["cy"]) / k["fy"], 1.0])
    t = -scene.cam_pos[1] / d[1]
    p = scene.cam_pos + t * d
    assert d[1] < 0 and 0 < p[0] < scene.room[0] and 0 < p[2] < scene.room[2]   # this pixel sees the floor
    assert depth[v, u] == pytest.approx(t, rel=1e-3)


def test_intrinsics_scale():
    k = synthetic.intrinsics(480, 640)
    assert k["fx"] == pytest.approx(518.8579) and k["cy"] == pytest.approx(253.7362)
    h = synthetic.intrinsics(240, 320)
    assert h["fx"] == pytest.approx(518.8579 / 2)


def test_write_and_load_synthetic(tmp_path, frames):
    out = synthetic.write_dataset(tmp_path / "syn", 3, seed=5, height=48, width=64, chunk=2)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format"] == "jaxdepth-synthetic" and meta["n"] == 3
    ds = load(str(out))
    assert ds.format == "synthetic" and len(ds) == 3 and ds.crop is None
    img, dep = ds.arrays()
    np.testing.assert_array_equal(img, frames[0])
    np.testing.assert_array_equal(dep, frames[1])
    spec = load("synthetic:2:5:48x64")
    np.testing.assert_array_equal(spec.get(1)[0], frames[0][1])


def _files(folder):
    return {f.name: f.read_bytes() for f in sorted(Path(folder).iterdir())}


def test_replacing_a_dataset_is_atomic(tmp_path, monkeypatch, ctrl_c_on_call):
    """An error or Ctrl-C while the new dataset renders leaves the previous one whole (no temporaries); a
    bad seed is refused before anything is touched; a finished run replaces every file."""
    out = synthetic.write_dataset(tmp_path / "syn", 2, seed=5, height=16, width=24)
    before = _files(out)
    real = synthetic.generate
    calls = ctrl_c_on_call(synthetic, "generate", 2)          # Ctrl-C in the second chunk
    with pytest.raises(KeyboardInterrupt):
        synthetic.write_dataset(out, 3, seed=6, height=16, width=16, chunk=1)
    assert _files(out) == before and len(calls) == 2
    monkeypatch.setattr(synthetic, "generate", real)
    with pytest.raises(ValueError, match="seed"):
        synthetic.write_dataset(out, 1, seed=-1, height=16, width=16)
    assert _files(out) == before
    synthetic.write_dataset(out, 3, seed=6, height=16, width=16)
    assert sorted(_files(out)) == ["depths.npy", "images.npy", "meta.json"]
    img, dep = load(str(out)).arrays()
    np.testing.assert_array_equal(img, synthetic.generate(3, seed=6, height=16, width=16)[0])


def test_synthetic_cli_checks_options_before_replacing(tmp_path, capsys):
    """--seed -1 on an existing dataset: a usage error naming --seed, and the dataset is untouched."""
    from jaxdepth.cli import synthetic as cli
    out = synthetic.write_dataset(tmp_path / "syn", 2, seed=5, height=16, width=16)
    before = _files(out)
    with pytest.raises(SystemExit) as e:
        cli.main([str(out), "-n", "1", "--seed", "-1", "--height", "16", "--width", "16", "--no-progress"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--seed" in err and "non-negative" in err and "replacing" not in err, err
    assert _files(out) == before


def test_synthetic_spec_limits(monkeypatch):
    """synthetic:N:S:HxW renders in memory: frames above 16.8 MP, or more frames than half the memory holds,
    are refused before rendering."""
    from jaxdepth.data import loaders
    with pytest.raises(DataError, match="at most 16.8 MP"):
        load("synthetic:2:1:40000x40000")
    with pytest.raises(DataError, match="half of this machine's"):
        load("synthetic:1000000000:1:4096x4096")
    monkeypatch.setattr(loaders, "_memory_bytes", lambda: 2 * 10 * 16 * 16 * 7 - 2)   # 9 frames of 16x16 fit
    with pytest.raises(DataError, match="10 frames of 16x16"):
        load("synthetic:10:1:16x16")
    assert len(load("synthetic:9:1:16x16")) == 9
    with pytest.raises(DataError, match="SEED >= 0"):
        load("synthetic:2:-1:16x16")


def test_synthetic_folder_arrays_must_match_meta(tmp_path):
    out = synthetic.write_dataset(tmp_path / "syn", 2, seed=5, height=16, width=16)
    np.save(out / "images.npy", np.zeros((3, 16, 16, 3), np.uint8))      # from another render
    np.save(out / "depths.npy", np.ones((3, 16, 16), np.float32))
    with pytest.raises(DataError, match="does not match meta.json"):
        load(str(out))


def _nyu_like(n=2, h=480, w=640):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
            rng.uniform(0.5, 9.0, (n, h, w)).astype(np.float32))


def test_nyu_test_zip_and_folder(tmp_path):
    rgb, dep = _nyu_like()
    folder = tmp_path / "nyu"
    folder.mkdir()
    np.save(folder / "eigen_test_rgb.npy", rgb)
    np.save(folder / "eigen_test_depth.npy", dep)
    np.save(folder / "eigen_test_crop.npy", np.array([20, 459, 24, 615]))
    with zipfile.ZipFile(tmp_path / "nyu_test.zip", "w") as z:
        for f in folder.iterdir():
            z.write(f, f.name)
    for spec in (folder, tmp_path / "nyu_test.zip"):
        ds = load(str(spec))
        assert ds.format == "nyu_test" and ds.crop == EIGEN_CROP
        batches = list(ds.batches(1))
        assert len(batches) == 2
        np.testing.assert_array_equal(batches[1][0][0], rgb[1])
        np.testing.assert_array_equal(batches[1][1][0], dep[1])


def test_nyu_mat_transposed_layout(tmp_path):
    import h5py
    rgb, dep = _nyu_like(2, 24, 32)
    with h5py.File(tmp_path / "nyu.mat", "w") as f:   # MATLAB v7.3 column-major: (N, 3, W, H), (N, W, H)
        f["images"] = rgb.transpose(0, 3, 2, 1)
        f["depths"] = dep.transpose(0, 2, 1)
    ds = load(str(tmp_path / "nyu.mat"))
    assert ds.format == "nyu_mat" and len(ds) == 2 and ds.crop is None
    r, d = ds.get(1)
    np.testing.assert_array_equal(r, rgb[1])
    np.testing.assert_array_equal(d, dep[1])


def test_npz_and_folder_pairs(tmp_path):
    rgb, dep = _nyu_like(2, 20, 30)
    np.savez(tmp_path / "two.npz", images=rgb, depths=dep)
    ds = load(str(tmp_path / "two.npz"))
    assert ds.format == "npz" and ds.crop is None
    np.testing.assert_array_equal(ds.arrays()[1], dep)

    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(rgb[0]).save(flat / "a.png")
    Image.fromarray((dep[0] * 1000).astype(np.uint16)).save(flat / "a_depth.png")
    Image.fromarray(rgb[1]).save(flat / "b.jpg", quality=95)
    np.save(flat / "b_depth.npy", dep[1])
    ds = load(str(flat))
    assert ds.format == "folder" and len(ds) == 2
    r0, d0 = ds.get(0)
    np.testing.assert_array_equal(r0, rgb[0])
    np.testing.assert_allclose(d0, np.floor(dep[0] * 1000) / 1000, atol=1e-6)
    np.testing.assert_array_equal(ds.get(1)[1], dep[1])

    split = tmp_path / "split"
    (split / "rgb").mkdir(parents=True)
    (split / "depth").mkdir()
    Image.fromarray(rgb[0]).save(split / "rgb" / "x.png")
    np.save(split / "depth" / "x.npy", dep[0])
    assert len(load(str(split))) == 1

    Image.fromarray(rgb[1]).save(flat / "c.png")   # no depth for c.png
    with pytest.raises(DataError, match="c.png"):
        load(str(flat))
    Image.fromarray((dep[0] * 25).astype(np.uint8)).save(flat / "c_depth.png")   # an 8-bit picture of depth
    with pytest.raises(DataError, match="8-bit depth PNG"):
        load(str(flat)).get(2)


def test_batches_split_on_size_change(tmp_path):
    flat = tmp_path / "f"
    flat.mkdir()
    for name, (h, w) in {"a": (8, 8), "b": (8, 8), "c": (6, 9)}.items():
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(flat / f"{name}.png")
        np.save(flat / f"{name}_depth.npy", np.ones((h, w), np.float32))
    shapes = [b[0].shape for b in load(str(flat)).batches(4)]
    assert shapes == [(2, 8, 8, 3), (1, 6, 9, 3)]
    assert [b[0].shape for b in load(str(flat)).batches(1, limit=2)] == [(1, 8, 8, 3)] * 2


@pytest.mark.parametrize("kw", [{"batch_size": 0}, {"batch_size": -2}, {"limit": 0}])
def test_batches_refuse_non_positive_sizes(kw):
    """batch_size 0 (or negative) never split: every frame in one batch; refused when batches() is called."""
    with pytest.raises(ValueError, match=f"{next(iter(kw))} must be"):
        load("synthetic:2:1:32x32").batches(**kw)


def test_write_rgb_takes_uint8_and_refuses_float(tmp_path):
    """A float image in [0, 1] was cast to uint8 and written black; now refused with the conversion."""
    from jaxdepth.io.images import ImageConventionError, write_rgb
    img = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_rgb(write_rgb(tmp_path / "a.png", img)), img)
    with pytest.raises(ImageConventionError, match=r"write_rgb takes uint8 RGB \(0..255\); got float64 in \[0, 1\]: "
                                                   r"pass \(x \* 255\).round\(\).astype\(np.uint8\)"):
        write_rgb(tmp_path / "b.png", img / 255.0)
    with pytest.raises(ImageConventionError, match=r"batch of one; pass image\[0\]"):
        write_rgb(tmp_path / "c.png", img[None])
    assert not (tmp_path / "b.png").exists() and not (tmp_path / "c.png").exists()


def test_errors(tmp_path):
    with pytest.raises(DataError):
        detect_format(str(tmp_path / "missing"))
    (tmp_path / "nyu_test.zip").write_bytes(b"PK not really")
    with pytest.raises(DataError, match="not a readable zip"):
        load(str(tmp_path / "nyu_test.zip"))
    (tmp_path / "half").mkdir()
    np.save(tmp_path / "half" / "images.npy", np.zeros((1, 8, 8, 3), np.uint8))   # a render stopped early
    with pytest.raises(DataError, match="incomplete synthetic dataset"):
        load(str(tmp_path / "half"))
    with pytest.raises(DataError, match="needs the NYU Depth v2 labeled .mat file, not a folder"):
        load(str(tmp_path / "half"), fmt="nyu_mat")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="bad.png"):
        read_rgb(bad)
    with pytest.raises(ImageError, match="no such file"):
        read_rgb(tmp_path / "nope.png")
    (tmp_path / "dir").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "dir" / "g.png")
    assert read_rgb(tmp_path / "dir" / "g.png").shape == (4, 4, 3)
    assert find_images([tmp_path / "dir", tmp_path / "x.png"]) == [tmp_path / "dir" / "g.png", tmp_path / "x.png"]


@pytest.mark.skipif(not (SHARED / "data" / "nyu_v2_two_frames.npz").exists(), reason="shared data absent")
def test_shared_two_frames():
    ds = load(str(SHARED / "data" / "nyu_v2_two_frames.npz"))
    assert len(ds) == 2 and ds.crop == EIGEN_CROP
    rgb, dep, crop = next(ds.batches(2))
    assert rgb.shape == (2, 480, 640, 3) and dep.shape == (2, 480, 640)
    assert 0 < np.nanmax(dep) <= 10.5
