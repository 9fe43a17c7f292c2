"""Atomic file writes: a reader (or an interrupted run) sees the old file or the whole new one, never half.

Every writer goes to a temporary name in the destination's own folder (same file system) and is then
renamed over the destination with `os.replace`; on any error, Ctrl-C included, the temporary file is
removed and the destination is untouched.

    >>> from jaxdepth.io import atomic
    >>> atomic.save_npy("out/a_depth.npy", depth)
    >>> atomic.write_json("out/metrics.json", results)
    >>> with atomic.replacing("out/figure.png") as tmp:    # any writer that takes a path
    ...     fig.savefig(tmp)
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]


def write_obstacle(path: PathLike) -> Optional[str]:
    """Why ``path`` could not be created (with any missing parent folders), found without creating anything:
    ``"<p> is a file, not a folder"`` when a file sits where a folder must be, ``"<folder> is not writable"``
    when the nearest existing folder is not; None when nothing stands in the way."""
    p = Path(path)
    nearest = next((q for q in (p, *p.parents) if q.exists()), None)
    if nearest is not None and not nearest.is_dir():
        return f"{nearest} is a file, not a folder"
    if nearest is None or not os.access(nearest, os.W_OK | os.X_OK):
        return f"{nearest or p} is not writable"
    return None


def temp_name(path: PathLike) -> Path:
    """A hidden temporary name beside ``path`` that keeps its suffix (writers such as matplotlib pick the
    format from it): ``out/a.png`` -> ``out/.a.tmp-<pid>.png``."""
    p = Path(path)
    return p.with_name(f".{p.stem}.tmp-{os.getpid()}{p.suffix}")


@contextlib.contextmanager
def replacing(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (creating the parent folder),
    on any exception (KeyboardInterrupt included) it is deleted and ``path`` is left as it was."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(p)
    try:
        yield tmp
        os.replace(tmp, p)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.filename is not None and Path(e.filename) == tmp:
            raise type(e)(e.errno, e.strerror, str(p)) from e      # name the file the user asked for
        raise


@contextlib.contextmanager
def replacing_all(paths: Sequence[PathLike]) -> Iterator[list[Path]]:
    """`replacing` for a SET of files that belong together (e.g. one image's depth .npy, .png and figure):
    all are written to temporary names first and renamed together at the end, so an interrupted run leaves
    either the old set or the new one (a temporary the body did not create is skipped)."""
    ps = [Path(p) for p in paths]
    tmps = [temp_name(p) for p in ps]
    for p in ps:
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmps
        for tmp, p in zip(tmps, ps):
            if tmp.exists():
                os.replace(tmp, p)
    except BaseException:
        for tmp in tmps:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``Path(path)``."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: PathLike, obj: Any, *, indent: int = 1) -> Path:
    """``obj`` as JSON (non-JSON values through ``str``) to ``path`` atomically, with a final newline."""
    return write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


def save_npy(path: PathLike, array: Any) -> Path:
    """``np.save`` to ``path`` atomically (``path`` is used as given: no ``.npy`` is appended)."""
    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
    return Path(path)
