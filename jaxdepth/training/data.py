"""Training data: random batches from RGB(-D) arrays, augmentation, and opening a user's data spec.

``open_data(spec, size)`` accepts what `jaxdepth.data.load` reads (synthetic folders, npz, NYU files,
RGB-D folders, ``synthetic:N[:SEED]`` to render) and, for distillation, a plain folder of images (no depth).
A path that does not exist is an error: nothing is ever rendered into a mistyped path.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np


class TrainingDataError(ValueError):
    """Training data that cannot be used (missing path, no frames, wrong size)."""


def augment(images: np.ndarray, depths: Optional[np.ndarray], rng: np.random.Generator
            ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Random horizontal flip (p 0.5), channel permutation (p 0.25), brightness/contrast jitter (p 0.5).

    ``images`` uint8 (N, H, W, 3) -> float32 in [0, 1] (float images are refused, not divided again);
    ``depths`` (N, H, W) flipped alongside (or None).
    """
    from ..io.images import as_uint8_rgb
    x = as_uint8_rgb(images, "augment").astype(np.float32) / 255.0
    d = None if depths is None else np.array(depths, np.float32, copy=True)
    for i in range(len(x)):
        if rng.random() < 0.5:
            x[i] = x[i, :, ::-1]
            if d is not None:
                d[i] = d[i, :, ::-1]
        if rng.random() < 0.25:
            x[i] = x[i][..., rng.permutation(3)]
        if rng.random() < 0.5:
            gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-0.08, 0.08)
            x[i] = np.clip((x[i] - 0.5) * gain + 0.5 + bias, 0.0, 1.0)
    return x, d


class ArrayData:
    """Random batches from arrays (memory-mapped ``.npy`` is fine): images uint8 RGB (N, H, W, 3) in 0..255 and
    depths float metres (N, H, W) (or (N, H, W, 1)) of the same H, W, 0 / NaN = no measurement (left out of the
    loss), or ``depths=None`` for images only (distillation from a teacher).

    Float images (e.g. in [0, 1]) and depth maps of another size or an integer type (millimetres?) raise
    `TrainingDataError` saying what to pass: nothing is rescaled or resized silently."""

    def __init__(self, images: np.ndarray, depths: Optional[np.ndarray] = None, name: str = "arrays"):
        from ..io.images import ImageConventionError, as_uint8_rgb
        if len(images) == 0:
            raise TrainingDataError(f"{name}: no frames")
        try:
            images = as_uint8_rgb(images, f"{name}: ArrayData's images")
        except ImageConventionError as e:
            raise TrainingDataError(str(e)) from None
        if depths is not None:
            depths = _check_depths(depths, images.shape, name)
        self.images, self.depths, self.name = images, depths, name

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_depth(self) -> bool:
        return self.depths is not None

    @property
    def size(self) -> tuple[int, int]:
        return tuple(int(v) for v in self.images.shape[1:3])

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        idx = np.sort(idx)
        return np.asarray(self.images[idx]), None if self.depths is None else np.asarray(self.depths[idx])

    def resized(self, size: tuple[int, int]) -> "ArrayData":
        """The frames at ``size`` (H, W) (PIL bilinear for images, bilinear depth); self when already there."""
        if self.size == tuple(size):
            return self
        from ..data.transforms import resize_image, resize_measured_depth
        images = np.stack([resize_image(np.asarray(im), tuple(size)) for im in self.images])
        depths = None if self.depths is None else resize_measured_depth(self.depths, tuple(size))
        return ArrayData(images, depths, self.name)


def _check_depths(depths: np.ndarray, image_shape: tuple[int, ...], name: str) -> np.ndarray:
    """``depths`` as (N, H, W) for images of ``image_shape`` (a trailing channel of 1 dropped, a view), else
    `TrainingDataError` naming the shapes or the dtype."""
    if not hasattr(depths, "dtype"):
        depths = np.asarray(depths)
    if depths.ndim == 4 and depths.shape[-1] == 1:
        depths = depths[..., 0]
    want = tuple(image_shape[:3])
    if tuple(depths.shape) != want:
        if depths.ndim == 3 and len(depths) != want[0]:
            raise TrainingDataError(f"{name}: {want[0]} images but {len(depths)} depth maps")
        raise TrainingDataError(f"{name}: depth maps of shape {tuple(depths.shape)} do not match images "
                                f"{tuple(image_shape)}: need depths (N, H, W) = {want}, one per image pixel (resize "
                                f"depth maps with jaxdepth.data.transforms.resize_measured_depth)")
    if depths.dtype.kind != "f":
        raise TrainingDataError(f"{name}: depth maps must be float metres, got {depths.dtype} (millimetres? pass "
                                f"depths / 1000.0; metres already: depths.astype(np.float32))")
    return depths


def _image_folder(folder: Path, size: tuple[int, int]) -> ArrayData:
    """Every image of a folder (no depth), resized to ``size``: distillation data."""
    from ..data.transforms import resize_image
    from ..io.images import find_images, read_rgb
    paths = find_images([folder])
    if not paths:
        raise TrainingDataError(f"{folder}: no images (png/jpg) and no depth dataset found there")
    frames, bad = [], []
    for p in paths:
        try:
            frames.append(resize_image(read_rgb(p), tuple(size)))
        except (OSError, ValueError) as e:
            bad.append(f"{p.name} ({e})")
    if bad:
        print(f"warning: skipped {len(bad)} unreadable image(s): {', '.join(bad[:5])}", file=sys.stderr)
    if not frames:
        raise TrainingDataError(f"{folder}: none of its {len(paths)} images could be read")
    return ArrayData(np.stack(frames), None, str(folder))


def check_spec(spec: str) -> None:
    """Raise `TrainingDataError` unless ``spec`` is an existing path or a ``synthetic:N[:SEED[:HxW]]`` spec.

    Cheap (no frames read): the CLI calls it before any work starts."""
    if spec.startswith("synthetic:"):
        return
    if not Path(spec).exists():
        raise TrainingDataError(f"--data {spec!r} does not exist (to render synthetic rooms say "
                                f"synthetic:N[:SEED], or omit --data)")


def open_data(spec: str, size: tuple[int, int], *, limit: Optional[int] = None) -> ArrayData:
    """The frames of ``spec`` at ``size`` (H, W): an RGB-D dataset (`jaxdepth.data.load` formats) or a folder
    of plain images (no depth). Frames of another size are resized."""
    from ..data import load
    from ..data.loaders import DataError
    check_spec(spec)
    if spec.startswith("synthetic:") and spec.count(":") < 3:
        spec = f"{spec}{'' if spec.count(':') == 2 else ':1'}:{size[0]}x{size[1]}"   # render at the training size
    try:
        ds = load(spec)
    except (DataError, OSError) as e:
        path = Path(spec)
        if path.is_dir():
            return _image_folder(path, size)
        raise TrainingDataError(str(e)) from None
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise TrainingDataError(f"{spec}: no frames")
    try:
        images, depths = ds.arrays()
        images, depths = images[:n], depths[:n]
    except DataError:  # frames of different sizes: resize one by one
        from ..data.transforms import resize_image, resize_measured_depth
        frames = [ds.get(i) for i in range(n)]
        images = np.stack([resize_image(f[0], tuple(size)) for f in frames])
        depths = np.stack([resize_measured_depth(f[1][None], tuple(size))[0] for f in frames])
    return ArrayData(images, depths, spec).resized(size)


def render_default(frames: int, seed: int, size: tuple[int, int], cache: str) -> ArrayData:
    """Synthetic rooms rendered once into ``cache`` (reused by later runs): the data when ``--data`` is omitted."""
    from ..data import load, synthetic
    folder = Path(cache) / f"train_s{seed}_n{frames}_{size[0]}x{size[1]}"
    if not (folder / "meta.json").exists():
        print(f"rendering {frames} synthetic frames into {folder} ...", file=sys.stderr)
        synthetic.write_dataset(folder, frames, seed, *size, progress=True)
    images, depths = load(str(folder)).arrays()
    return ArrayData(images, depths, str(folder))
