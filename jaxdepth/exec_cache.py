"""Jitted functions that a later process runs without tracing them again.

JAX's persistent compilation cache (on in the CLIs) stores compiled executables, but finding one needs its
key, which is computed from the lowered module: every process still traces and lowers the model first. For
a LUT model that is most of a warm start (Python tracing of every LUT layer takes longer than loading the
compiled executable; figures in bench/results/startup.md). `cached_jit` stores
the traced and lowered program itself (`jax.export`, StableHLO) beside the compilation cache, under a key
made of everything the program is a function of when its arguments are not:

* the versions of Python, jax, jaxlib, flax, numba and numpy, the backend and its devices, the CPU's
  SIMD features (kernel choice) and a digest of jaxdepth's own source files (any edit is a new key);
* the caller's ``key``: the model (its configuration, plan and every table, by value) and the options
  that change the program (e.g. flip averaging);
* the arguments' tree structure, shapes, dtypes and shardings (weights are arguments, not constants: a
  retrained checkpoint of the same model reuses the program).

A later process with the same key deserialises the program (no tracing), registers the XLA FFI targets
it calls (the numba handlers, by name: nothing process-specific is stored), and `jax.jit` of it finds the
executable in the compilation cache. Anything unusual (no compilation cache folder, several devices: the
kernels' `custom_partitioning` cannot be exported; an export or load error) falls back to the plain jitted
function, so the cache can only save time, never change a result.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

FORMAT = b"jaxdepth-exported-1\n"
KEEP = 200  # stored entries kept (the newest; each source edit or model is a new key)
_SOURCE_DIGEST: Optional[str] = None


def folder() -> Optional[Path]:
    """Where programs are stored: ``exported/`` inside JAX's compilation cache folder (None: cache off)."""
    import jax
    base = jax.config.jax_compilation_cache_dir
    return Path(base) / "exported" if base else None


def _store(path: Path, data: bytes) -> None:
    """Write an entry atomically (errors ignored: a cache never stops a run) and drop the oldest beyond KEEP."""
    from .io.atomic import write_bytes
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, data)
        entries = sorted(path.parent.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP:]:
            old.unlink()
    except OSError:
        pass


def source_digest() -> str:
    """sha256 of every ``.py`` file of the jaxdepth package (names and contents)."""
    global _SOURCE_DIGEST
    if _SOURCE_DIGEST is None:
        h = hashlib.sha256()
        root = Path(__file__).resolve().parent
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
        _SOURCE_DIGEST = h.hexdigest()
    return _SOURCE_DIGEST


def fingerprint(obj: Any, h: Optional[Any] = None) -> str:
    """A digest of ``obj`` by value: arrays by dtype, shape and bytes; dataclasses (Flax modules, plans,
    multipliers) by type and fields (a Flax module's ``parent`` left out); containers item by item;
    functions by qualified name; anything else by ``repr``."""
    top = h is None
    h = hashlib.sha256() if top else h
    import jax
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        a = np.asarray(obj)
        h.update(f"array {a.dtype} {a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    elif isinstance(obj, (str, bytes, int, float, bool, complex, type(None))):
        h.update(f"{type(obj).__name__} {obj!r}".encode())
    elif isinstance(obj, dict) or (hasattr(obj, "items") and hasattr(obj, "keys")):
        h.update(f"map {type(obj).__name__} {len(obj)}".encode())
        for key in sorted(obj.keys(), key=repr):
            fingerprint(key, h)
            fingerprint(obj[key], h)
    elif isinstance(obj, (tuple, list, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        h.update(f"seq {type(obj).__name__} {len(items)}".encode())
        for item in items:
            fingerprint(item, h)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(f"dataclass {type(obj).__module__}.{type(obj).__qualname__}".encode())
        for f in dataclasses.fields(obj):
            if f.name != "parent":
                h.update(f.name.encode())
                fingerprint(getattr(obj, f.name), h)
    elif callable(obj) and hasattr(obj, "__qualname__"):
        h.update(f"callable {getattr(obj, '__module__', '')}.{obj.__qualname__}".encode())
    else:
        h.update(f"other {type(obj).__qualname__} {obj!r}".encode())
    return h.hexdigest() if top else ""


def _environment() -> tuple:
    import flax
    import jax
    import jaxlib
    import numba

    from .lutconv import simd
    simd_flags = tuple(sorted((k, v) for k, v in vars(simd).items() if k.startswith("HAVE_")))
    return (sys.version, jax.__version__, jaxlib.__version__, flax.__version__, numba.__version__, np.__version__,
            platform.machine(), jax.default_backend(), tuple(str(d.device_kind) for d in jax.devices()),
            bool(jax.config.jax_enable_x64), simd_flags, source_digest())


def _signature(args: tuple) -> tuple:
    import jax
    leaves, tree = jax.tree_util.tree_flatten(args)
    return (str(tree), tuple((tuple(np.shape(a)), str(getattr(a, "dtype", type(a).__name__)),
                              str(getattr(a, "sharding", ""))) for a in leaves))


def _targets(exported) -> list[str]:
    """The custom-call targets of an exported program (the FFI kernels it needs registered)."""
    return sorted(set(re.findall(r"stablehlo\.custom_call @([A-Za-z0-9_.]+)", exported.mlir_module())))


def cached_jit(fn: Callable, name: str, key: Any) -> Callable:
    """``fn`` (a `jax.jit` function) backed by a stored program, one per argument signature (module
    docstring). ``key``: what else the program depends on (model, options), taken by value."""
    programs: dict[tuple, tuple[str, Callable]] = {}

    def call(*args):
        sig = _signature(args)
        if sig not in programs:
            how, program = _program(fn, name, key, args, sig)
            if how == "jit":
                programs[sig] = how, program
            else:
                try:
                    out = program(*args)
                except Exception:  # noqa: BLE001 - e.g. a stored program whose arguments do not fit: plain jit
                    programs[sig] = "jit", fn
                    return fn(*args)
                programs[sig] = how, program
                return out
        return programs[sig][1](*args)

    call.programs = programs  # type: ignore[attr-defined]  # sig -> ("loaded" | "exported" | "jit", function)
    return call


def _program(fn: Callable, name: str, key: Any, args: tuple, sig: tuple) -> tuple[str, Callable]:
    import jax
    from jax import export

    where = folder()
    if where is None or jax.device_count() > 1:
        return "jit", fn
    digest = fingerprint((FORMAT, _environment(), key, sig))
    path = where / f"{name}-{digest[:40]}.bin"
    try:
        data = path.read_bytes()
        head, _, body = data[len(FORMAT):].partition(b"\n")
        if data.startswith(FORMAT):
            from .lutconv import register_ffi_targets
            register_ffi_targets(json.loads(head)["targets"])   # before XLA compiles or loads the program
            return "loaded", jax.jit(export.deserialize(bytearray(body)).call)
    except OSError:
        pass
    except Exception:  # noqa: BLE001 - a corrupt or foreign entry: export anew (and replace it)
        pass
    try:
        from .lutconv import ffi_target_names
        checks = [export.DisabledSafetyCheck.custom_call(t) for t in ffi_target_names()]
        exported = export.export(fn, disabled_checks=checks)(*args)
        data = FORMAT + json.dumps({"targets": _targets(exported)}).encode() + b"\n" + bytes(exported.serialize())
    except Exception:  # noqa: BLE001 - not exportable (e.g. a host callback): the plain jitted function
        return "jit", fn
    _store(path, data)
    return "exported", jax.jit(exported.call)


def remembered(name: str, key: Any, compute: Callable[[], Any]) -> Any:
    """``compute()`` (a JSON value) stored under ``key`` beside the programs, so a later process with the
    same key (and the same environment: versions, source digest) reads it instead of computing it; e.g.
    whether a checkpoint's stored calibration covers a plan, which takes a whole trace of the model to
    find out. Without a compilation cache folder it is just ``compute()``."""
    where = folder()
    if where is None:
        return compute()
    path = where / f"{name}-{fingerprint((FORMAT, _environment(), key))[:40]}.json"
    try:
        return json.loads(path.read_text())["value"]
    except (OSError, ValueError, KeyError):
        pass
    value = compute()
    _store(path, json.dumps({"value": value}).encode())
    return value
