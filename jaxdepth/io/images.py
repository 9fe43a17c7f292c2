"""Reading and writing RGB images with PIL, with clear errors for unreadable files, and the checks of the two
in-memory image conventions: uint8 RGB in 0..255 (files, datasets, predictors) and float RGB in [0, 1] (what a
model's ``apply`` takes). An array of the other convention is refused with the conversion to use, never
reinterpreted silently."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


class ImageError(ValueError):
    """An image file that does not exist or cannot be decoded."""


class ImageConventionError(ValueError):
    """An image array of the wrong layout (not (N,) H, W, 3) or value convention (uint8 0..255 vs float [0, 1])."""


def _values(x: np.ndarray) -> tuple[str, str]:
    """(``x``'s dtype and value range, e.g. "float32 in [0, 1]"; "unit" / "byte" for finite floats in [0, 1] /
    [0, 255], else "")."""
    finite = x[np.isfinite(x)] if x.dtype.kind == "f" else x
    if finite.size == 0:
        return f"{x.dtype} (no finite value)", ""
    lo, hi = float(finite.min()), float(finite.max())
    kind = ""
    if x.dtype.kind == "f" and finite.size == x.size and 0 <= lo:
        kind = "unit" if hi <= 1 else "byte" if hi <= 255 else ""
    text = {"unit": "[0, 1]", "byte": "[0, 255]"}.get(kind, f"[{lo:g}, {hi:g}]")
    return f"{x.dtype} in {text}{'' if finite.size == x.size else ', with NaN/inf'}", kind


def _check_layout(x: np.ndarray, what: str, batch: bool) -> None:
    """Raise `ImageConventionError` unless ``x`` is (N, H, W, 3) (``batch``) or (H, W, 3), naming the likely mix-up."""
    want = "(N, H, W, 3)" if batch else "(H, W, 3)"
    ndim = 4 if batch else 3
    shape = tuple(x.shape)
    hint = ""
    if batch and x.ndim == 3 and shape[-1] == 3:
        hint = ": that is a single image; add a batch axis, image[None]"
    elif not batch and x.ndim == 4 and shape[0] == 1 and shape[-1] == 3:
        hint = ": that is a batch of one; pass image[0]"
    elif x.ndim == ndim and shape[-1] != 3 and shape[-3] == 3:
        hint = (": channels first? pass " + ("images.transpose(0, 2, 3, 1)" if batch else "image.transpose(1, 2, 0)"))
    elif x.ndim == ndim and shape[-1] == 4:
        hint = ": RGBA? drop the alpha channel, x[..., :3]"
    elif x.ndim == ndim and shape[-1] == 1:
        hint = ": grayscale? repeat it, np.repeat(x, 3, axis=-1)"
    elif x.ndim == ndim - 1:
        hint = ": grayscale? add RGB channels, np.repeat(x[..., None], 3, axis=-1)"
    if x.ndim != ndim or shape[-1] != 3:
        raise ImageConventionError(f"{what} takes RGB {want}; got shape {shape}{hint}")
    if batch and shape[0] == 0:
        raise ImageConventionError(f"{what}: the batch is empty (shape {shape}); pass at least one image")
    if 0 in shape[-3:-1]:
        raise ImageConventionError(f"{what}: the image is empty (shape {shape})")


def as_uint8_rgb(images: np.ndarray, what: str, *, batch: bool = True) -> np.ndarray:
    """``images`` as uint8 RGB, (N, H, W, 3) when ``batch`` else (H, W, 3): uint8 unchanged (a memory map stays
    one), other integer arrays with every value in 0..255 converted; floats (in [0, 1] or 0..255: which one
    cannot be told safely) and anything else raise `ImageConventionError` naming ``what`` and the conversion."""
    x = images if isinstance(images, np.ndarray) else np.asarray(images)
    _check_layout(x, what, batch)
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind in "iu" and x.size and 0 <= x.min() and x.max() <= 255:
        return x.astype(np.uint8)
    got, kind = _values(x)
    fix = {"unit": ": pass (x * 255).round().astype(np.uint8)", "byte": ": pass x.round().astype(np.uint8)"}.get(kind, "")
    raise ImageConventionError(f"{what} takes uint8 RGB (0..255); got {got}{fix}")


def as_unit_rgb(images: np.ndarray, what: str, *, batch: bool = False) -> np.ndarray:
    """``images`` as float32 RGB in [0, 1], (H, W, 3) or (N, H, W, 3) when ``batch``: floats with every value in
    [0, 1] (to 1e-3) pass; uint8 / integer images (0..255) and floats outside [0, 1] raise
    `ImageConventionError` naming ``what`` and the conversion (dividing by 255 is the caller's decision)."""
    x = images if isinstance(images, np.ndarray) else np.asarray(images)
    _check_layout(x, what, batch)
    tol = 1e-3
    if x.dtype.kind == "f" and x.size and np.isfinite(x).all() and x.min() >= -tol and x.max() <= 1 + tol:
        return x.astype(np.float32, copy=False)
    got, kind = _values(x)
    fix = ": pass x.astype(np.float32) / 255" if x.dtype.kind in "iu" or kind == "byte" else ""
    raise ImageConventionError(f"{what} takes float RGB in [0, 1]; got {got}{fix}")


def read_rgb(path: Union[str, Path]) -> np.ndarray:
    """uint8 (H, W, 3) RGB from any PIL-readable file (grey / RGBA / palette / 16-bit converted)."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I", "F"):
                a = np.asarray(im, np.float64)
                a = (255 * (a - a.min()) / max(a.max() - a.min(), 1e-9)).astype(np.uint8)
                return np.repeat(a[..., None], 3, axis=-1)
            return np.asarray(im.convert("RGB"), np.uint8).copy()
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a readable image (PIL cannot identify the format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot decode image ({e})") from None


def write_rgb(path: Union[str, Path], image: np.ndarray) -> Path:
    """Write uint8 (H, W, 3) RGB (what `read_rgb` returns) to ``path`` (format from its extension); a float
    image raises `ImageConventionError` with the conversion (it is not reinterpreted)."""
    from PIL import Image
    image = as_uint8_rgb(image, "write_rgb", batch=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)
    return path


def find_images(inputs: Iterable[Union[str, Path]]) -> list[Path]:
    """Files given directly plus the image files (by extension, sorted) inside given folders.

    Inside folders, ``*_depth.*`` files are skipped (depth maps paired with RGB images, see
    `jaxdepth.data.loaders`). Paths that do not exist are kept, so the caller reports them per file.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                          and not f.stem.endswith("_depth"))
        else:
            out.append(p)
    return out
