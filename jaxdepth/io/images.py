"""Reading and writing RGB images with PIL, with clear errors for unreadable files."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Union

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


class ImageError(ValueError):
    """An image file that does not exist or cannot be decoded."""


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
    from PIL import Image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path)
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
