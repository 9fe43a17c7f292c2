"""One interface over the RGB-D formats jaxdepth evaluates on.

`load(spec)` returns a `Dataset`; ``dataset.batches(n)`` (or `batches`) yields ``(rgb, depth, crop)``:
rgb uint8 (B, H, W, 3), depth float32 metres (B, H, W) (0 / NaN = no measurement) and the evaluation
crop ``(row start, row end, col start, col end)`` or None (whole frame).

Formats (``format="auto"`` detects them from the path):

``nyu_test``
    DenseDepth's ``nyu_test.zip`` (Eigen split, 654 frames) or a folder with its files:
    ``eigen_test_rgb.npy`` (N, 480, 640, 3) uint8, ``eigen_test_depth.npy`` (N, 480, 640) metres,
    ``eigen_test_crop.npy`` [20, 459, 24, 615]. The crop comes from the file.
``nyu_mat``
    The official NYU Depth v2 labeled set ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5, read with
    h5py). MATLAB stores column-major, so h5py sees ``images`` as (N, 3, W, H) uint8 and ``depths`` as
    (N, W, H) metres; frames are transposed back to (H, W, 3) / (H, W). Crop: the Eigen crop.
``npz``
    An ``.npz`` with ``images`` (N, H, W, 3) uint8 and ``depths`` (N, H, W) metres (optional ``crop``),
    e.g. ``shared/data/nyu_v2_two_frames.npz``. Crop: ``crop`` if stored, the Eigen crop at 480x640,
    else None.
``folder``
    RGB + depth pairs. Pairing rule: an RGB file ``NAME.png|jpg|jpeg`` pairs with ``NAME_depth.png`` or
    ``NAME_depth.npy`` in the same folder; or, with subfolders ``rgb/`` (or ``image/``, ``images/``) and
    ``depth/`` (or ``depths/``), files with the same stem pair up. ``.png`` depth is 16-bit millimetres
    (0 = invalid); ``.npy`` depth is float metres. RGB files without depth are reported as an error.
    Crop: the Eigen crop at 480x640, else None.
``synthetic``
    A folder written by `jaxdepth.data.synthetic.write_dataset` (``meta.json`` + ``images.npy`` +
    ``depths.npy``; the arrays must match its n, height and width), or ``synthetic:N[:SEED[:HxW]]`` to
    render N frames on the fly into memory (default seed 1, 240x320; at most 16.8 MP a frame, and at most
    half the machine's memory in all: render more to a folder). Crop: None (every pixel is valid).
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from ..checks import check_counts, is_count
from ..metrics import EIGEN_CROP

FORMATS = ("nyu_test", "nyu_mat", "npz", "folder", "synthetic")
_NYU_TEST_FILES = ("eigen_test_rgb.npy", "eigen_test_depth.npy", "eigen_test_crop.npy")
_RGB_EXT = (".png", ".jpg", ".jpeg")


class DataError(ValueError):
    """A dataset that cannot be read (missing files, wrong shapes, unknown format)."""


@dataclass
class Dataset:
    """Frames ``get(i) -> (rgb uint8 (H, W, 3), depth float32 metres (H, W))`` with an evaluation crop."""
    name: str
    format: str
    length: int
    getter: Callable[[int], tuple[np.ndarray, np.ndarray]]
    crop: Optional[tuple[int, int, int, int]] = None
    _arrays: Optional[tuple[np.ndarray, np.ndarray]] = None

    def __len__(self) -> int:
        return self.length

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not -self.length <= i < self.length:
            raise IndexError(f"frame {i} out of range for {self.length} frames")
        return self.getter(i % self.length)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All frames as (images (N, H, W, 3) uint8, depths (N, H, W) float32) (memory-mapped when possible)."""
        if self._arrays is not None:
            return self._arrays
        frames = [self.get(i) for i in range(self.length)]
        shapes = {f[0].shape for f in frames}
        if len(shapes) > 1:
            raise DataError(f"{self.name}: frames have different sizes {sorted(shapes)}; use batches()")
        return np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames])

    def batches(self, batch_size: int = 8, limit: Optional[int] = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray, Optional[tuple[int, int, int, int]]]]:
        """(rgb, depth, crop) batches of ``batch_size`` (>= 1) frames in order, the first ``limit`` (None: all,
        else >= 1) frames; a batch ends early where the frame size changes."""
        check_batching(batch_size, limit)       # now, not at the first next()
        return self._batches(batch_size, self.length if limit is None else min(limit, self.length))

    def _batches(self, batch_size: int, n: int
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, Optional[tuple[int, int, int, int]]]]:
        rgb: list[np.ndarray] = []
        dep: list[np.ndarray] = []
        for i in range(n):
            r, d = self.get(i)
            if rgb and (r.shape != rgb[0].shape or len(rgb) == batch_size):
                yield np.stack(rgb), np.stack(dep), self.crop
                rgb, dep = [], []
            rgb.append(r)
            dep.append(d)
        if rgb:
            yield np.stack(rgb), np.stack(dep), self.crop


def check_batching(batch_size: int, limit: Optional[int] = None) -> None:
    """Raise ValueError unless ``batch_size`` is a positive integer and ``limit`` None or a positive integer (a
    batch size of 0 would otherwise put every frame into one batch)."""
    check_counts(batch_size=batch_size)
    if limit is not None and not is_count(limit):
        raise ValueError(f"limit must be None (every frame) or an integer >= 1, got {limit!r}")


def batches(spec: str, batch_size: int = 8, fmt: str = "auto", limit: Optional[int] = None):
    """Shorthand for ``load(spec, fmt).batches(batch_size, limit)``."""
    return load(spec, fmt).batches(batch_size, limit)


def _check(images: np.ndarray, depths: np.ndarray, where: str) -> None:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{where}: images must be (N, H, W, 3), got {images.shape}")
    if depths.shape != images.shape[:3]:
        raise DataError(f"{where}: depths {depths.shape} do not match images {images.shape[:3]}")
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8, got {images.dtype}")


def _default_crop(shape: Sequence[int]) -> Optional[tuple[int, int, int, int]]:
    return EIGEN_CROP if tuple(shape[-2:]) == (480, 640) else None


def _from_arrays(name: str, fmt: str, images: np.ndarray, depths: np.ndarray, crop) -> Dataset:
    _check(images, depths, name)
    return Dataset(name, fmt, len(images), lambda i: (np.asarray(images[i]), np.asarray(depths[i], np.float32)),
                   None if crop is None else tuple(int(v) for v in crop), (images, depths))


def detect_format(path: str) -> str:
    """The format name of ``path`` (see the module docstring); raises DataError when unknown."""
    if path.startswith("synthetic:") or path == "synthetic":
        return "synthetic"
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such file or folder")
    if p.is_file():
        if p.suffix.lower() == ".npz":
            return "npz"
        if zipfile.is_zipfile(p):
            return "nyu_test"
        if p.suffix == ".mat":
            return "nyu_mat"
        if p.suffix.lower() == ".zip":
            raise DataError(f"{path}: not a readable zip file (truncated or not a zip?); expected DenseDepth's "
                            "nyu_test.zip")
        raise DataError(f"{path}: unknown dataset file type (expected nyu_test .zip, .npz or NYU .mat)")
    if (p / "meta.json").exists() and (p / "images.npy").exists():
        return "synthetic"
    if (p / "images.npy").exists() or (p / "depths.npy").exists():
        raise DataError(f"{path}: an incomplete synthetic dataset (images.npy / depths.npy without meta.json, which "
                        "is written last): an interrupted render? Render it again with jaxdepth-synthetic")
    if all((p / f).exists() for f in _NYU_TEST_FILES[:2]):
        return "nyu_test"
    return "folder"


def load(spec: str, fmt: str = "auto") -> Dataset:
    """A `Dataset` from a path (or ``synthetic:N[:SEED[:HxW]]``); ``fmt`` forces a format."""
    spec = str(spec)
    fmt = detect_format(spec) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise DataError(f"unknown dataset format {fmt!r}; known: {', '.join(FORMATS)}")
    return {"nyu_test": _load_nyu_test, "nyu_mat": _load_nyu_mat, "npz": _load_npz, "folder": _load_folder,
            "synthetic": _load_synthetic}[fmt](spec)


def _load_nyu_test(spec: str) -> Dataset:
    p = Path(spec)
    if p.is_file():
        with zipfile.ZipFile(p) as z:
            names = {Path(n).name: n for n in z.namelist()}
            missing = [f for f in _NYU_TEST_FILES[:2] if f not in names]
            if missing:
                raise DataError(f"{spec}: zip lacks {', '.join(missing)} (DenseDepth nyu_test.zip layout)")
            arr = {f: np.load(io.BytesIO(z.read(names[f]))) for f in _NYU_TEST_FILES if f in names}
    else:
        arr = {f: np.load(p / f, mmap_mode="r") for f in _NYU_TEST_FILES if (p / f).exists()}
    images, depths = arr["eigen_test_rgb.npy"], arr["eigen_test_depth.npy"]
    crop = arr.get("eigen_test_crop.npy")
    crop = tuple(int(v) for v in np.asarray(crop).ravel()[:4]) if crop is not None else _default_crop(depths.shape)
    return _from_arrays(spec, "nyu_test", images, depths, crop)


def _load_nyu_mat(spec: str) -> Dataset:
    import h5py
    if not Path(spec).is_file():
        raise DataError(f"{spec}: --format nyu_mat needs the NYU Depth v2 labeled .mat file, not a folder")
    try:
        f = h5py.File(spec, "r")
    except OSError as e:
        reason = str(e).split("(")[0].strip().rstrip(",") or type(e).__name__
        raise DataError(f"{spec}: not an HDF5 (MATLAB v7.3) file ({reason})") from None
    if "images" not in f or "depths" not in f:
        raise DataError(f"{spec}: expected datasets 'images' and 'depths' (NYU Depth v2 labeled .mat)")
    images, depths = f["images"], f["depths"]
    if images.ndim != 4 or images.shape[1] != 3 or depths.shape[0] != images.shape[0] or \
            depths.shape[1:] != images.shape[2:]:
        raise DataError(f"{spec}: images {images.shape} / depths {depths.shape} are not (N, 3, W, H) / (N, W, H)")

    def get(i: int):
        return (np.ascontiguousarray(np.asarray(images[i], np.uint8).transpose(2, 1, 0)),
                np.ascontiguousarray(np.asarray(depths[i], np.float32).T))

    h, w = images.shape[3], images.shape[2]
    return Dataset(spec, "nyu_mat", images.shape[0], get, _default_crop((h, w)))


def _load_npz(spec: str) -> Dataset:
    with np.load(spec) as z:
        if "images" not in z or "depths" not in z:
            raise DataError(f"{spec}: expected arrays 'images' and 'depths', found {sorted(z.files)}")
        images, depths = z["images"], z["depths"].astype(np.float32)
        crop = tuple(int(v) for v in z["crop"].ravel()[:4]) if "crop" in z else _default_crop(depths.shape)
    return _from_arrays(spec, "npz", images, depths, crop)


def read_depth(path: Path) -> np.ndarray:
    """A depth file in metres: 16-bit ``.png`` in millimetres (0 = invalid -> 0) or ``.npy`` in metres."""
    path = Path(path)
    if path.suffix == ".npy":
        d = np.load(path)
        if d.ndim == 3 and d.shape[-1] == 1:
            d = d[..., 0]
        if d.ndim != 2:
            raise DataError(f"{path}: depth .npy must be (H, W), got {d.shape}")
        return d.astype(np.float32)
    from ..io.images import ImageError
    from PIL import Image
    try:
        with Image.open(path) as im:
            a = np.asarray(im)
    except Exception as e:
        raise ImageError(f"{path}: cannot read depth PNG ({e})") from None
    if a.ndim == 2 and a.dtype == np.uint8:
        raise DataError(f"{path}: an 8-bit depth PNG cannot hold millimetres (at most 255 mm); depth PNGs must be "
                        "single-channel 16-bit millimetres (a visualisation is not a depth map)")
    if a.ndim != 2 or a.dtype not in (np.uint16, np.int32):
        raise DataError(f"{path}: depth PNG must be single-channel 16-bit millimetres, got {a.dtype} {a.shape}")
    return a.astype(np.float32) / 1000.0


def pair_folder(folder: Path) -> list[tuple[Path, Path]]:
    """(rgb, depth) pairs of a folder by the pairing rule in the module docstring."""
    folder = Path(folder)
    sub_rgb = next((folder / s for s in ("rgb", "image", "images") if (folder / s).is_dir()), None)
    sub_dep = next((folder / s for s in ("depth", "depths") if (folder / s).is_dir()), None)
    pairs, unpaired = [], []
    if sub_rgb is not None and sub_dep is not None:
        for f in sorted(sub_rgb.iterdir()):
            if f.suffix.lower() in _RGB_EXT:
                cands = [sub_dep / (f.stem + e) for e in (".png", ".npy")]
                d = next((c for c in cands if c.exists()), None)
                (pairs.append((f, d)) if d else unpaired.append(f.name))
    else:
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in _RGB_EXT and not f.stem.endswith("_depth"):
                cands = [folder / f"{f.stem}_depth{e}" for e in (".png", ".npy")]
                d = next((c for c in cands if c.exists()), None)
                (pairs.append((f, d)) if d else unpaired.append(f.name))
    if unpaired:
        raise DataError(f"{folder}: no depth file for {', '.join(unpaired[:5])}"
                        f"{' ...' if len(unpaired) > 5 else ''} (expected NAME_depth.png|npy or depth/NAME.png|npy)")
    if not pairs:
        raise DataError(f"{folder}: no RGB + depth pairs found (NAME.png with NAME_depth.png|npy, or rgb/ + depth/)")
    return pairs


def _load_folder(spec: str) -> Dataset:
    from ..io.images import read_rgb
    pairs = pair_folder(Path(spec))
    r0, d0 = read_rgb(pairs[0][0]), read_depth(pairs[0][1])

    def get(i: int):
        rgb, dep = read_rgb(pairs[i][0]), read_depth(pairs[i][1])
        if dep.shape != rgb.shape[:2]:
            raise DataError(f"{pairs[i][1]}: depth {dep.shape} does not match image {rgb.shape[:2]}")
        return rgb, dep

    return Dataset(spec, "folder", len(pairs), get, _default_crop(d0.shape if d0.shape == r0.shape[:2] else (0, 0)))


def _memory_bytes() -> Optional[int]:
    """This machine's physical memory in bytes (None when the OS does not say)."""
    import os
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _load_synthetic(spec: str) -> Dataset:
    if spec.startswith("synthetic"):
        parts = spec.split(":")
        try:
            n = int(parts[1]) if len(parts) > 1 and parts[1] else 16
            seed = int(parts[2]) if len(parts) > 2 else 1
            h, w = (int(v) for v in parts[3].lower().split("x")) if len(parts) > 3 else (240, 320)
        except ValueError:
            raise DataError(f"{spec!r}: expected synthetic:N[:SEED[:HxW]]") from None
        from . import synthetic
        if n < 0 or seed < 0 or h < 8 or w < 8:
            raise DataError(f"{spec!r}: expected synthetic:N[:SEED[:HxW]] with N >= 0, SEED >= 0 and a size of "
                            "at least 8x8")
        too_large = synthetic.frame_too_large(h, w)
        if too_large:
            raise DataError(f"{spec!r}: frame size {too_large}")
        need, memory = n * h * w * synthetic.BYTES_PER_PIXEL, _memory_bytes()
        if memory is not None and need > memory // 2:     # every frame is rendered into memory
            raise DataError(f"{spec!r}: {n} frames of {h}x{w} take {need / 2**30:.1f} GiB in memory, more than "
                            f"half of this machine's {memory / 2**30:.1f} GiB; render them to a folder with "
                            "jaxdepth-synthetic (read memory-mapped) and use that folder")
        images, depths = synthetic.generate(n, seed, h, w)
        return _from_arrays(spec, "synthetic", images, depths, None)
    p = Path(spec)
    meta = json.loads((p / "meta.json").read_text())
    if meta.get("format") != "jaxdepth-synthetic":
        raise DataError(f"{spec}: meta.json format is {meta.get('format')!r}, not 'jaxdepth-synthetic'")
    images = np.load(p / "images.npy", mmap_mode="r")
    depths = np.load(p / "depths.npy", mmap_mode="r")
    expect = tuple(meta.get(k) for k in ("n", "height", "width"))
    if all(isinstance(v, int) for v in expect) and images.shape[:3] != expect:
        raise DataError(f"{spec}: images.npy {images.shape} does not match meta.json (n={expect[0]}, "
                        f"{expect[1]}x{expect[2]}): files of different renders? Render it again with "
                        "jaxdepth-synthetic")
    return _from_arrays(spec, "synthetic", images, depths, None)
