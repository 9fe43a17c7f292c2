"""Model checkpoints: variables with orbax-checkpoint, preset / plan / metadata as JSON beside them.

Layout of a checkpoint directory::

    <path>/jaxdepth.json     {"format": "jaxdepth-checkpoint", "version": 1, "preset": {...}, "plan": {...},
                              "collections": [...], "extra": {...}, "digests": {array name: sha256}}
    <path>/variables/        orbax StandardCheckpointer: {"params", "batch_stats"[, "quant"]}
    <path>/tables.npz        the plan's product tables that its names alone do not give (a user's table,
                             a table that differs from the catalogue's of its name), with "tables":
                             {name: {"signed", "sha256"}} in jaxdepth.json; absent when there are none

    >>> from jaxdepth.io import checkpoint
    >>> checkpoint.save("ckpt/lite", "mobilenetv2_lite", variables, extra={"epochs": 3})
    >>> model, variables, info = checkpoint.load("ckpt/lite")

Saving is all or nothing: the new checkpoint is written to a temporary folder beside ``path`` and swapped
in only when complete, so an interrupted or failed save leaves the old checkpoint intact. ``jaxdepth.json``
records a SHA-256 digest of every array; `load` checks them (checkpoints saved before digests existed are
checked for non-finite values only) and raises `CheckpointError` naming the file for a truncated or
corrupted checkpoint instead of returning NaN weights.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
import shutil
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import jax
import numpy as np

FORMAT = "jaxdepth-checkpoint"
VERSION = 1
META_FILE = "jaxdepth.json"
VARIABLES_DIR = "variables"
TABLES_FILE = "tables.npz"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, truncated or corrupted (the message names the file)."""


def _leaves(tree: Any) -> list[tuple[str, Any]]:
    """(``"params/encoder/conv0/kernel"``-style name, leaf) pairs; dict keys and dataclass fields alike, so
    a tree and its orbax restoration (plain dicts) give the same names."""
    def name(entry: Any) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                return str(getattr(entry, attr))
        return str(entry)
    return [("/".join(name(e) for e in path), leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _nonfinite(tree: Any) -> list[str]:
    """Names of the float arrays of ``tree`` holding NaN or infinity."""
    return [k for k, leaf in _leaves(tree) if np.asarray(leaf).dtype.kind in "fc" and not np.isfinite(leaf).all()]


def _digests(state: dict) -> dict[str, str]:
    """SHA-256 of every array (dtype, shape and bytes), keyed by its path in the tree."""
    out = {}
    for key, leaf in _leaves(state):
        a = np.ascontiguousarray(np.asarray(leaf))
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
        out[key] = h.hexdigest()
    return out


def _unnamed_tables(plan: Any) -> dict[str, Any]:
    """{name: Multiplier} for the plan's multipliers that `jaxdepth.multipliers.get` of their name does not
    give back (same table and signedness): a checkpoint must store those tables themselves."""
    from ..multipliers import get
    out: dict[str, Any] = {}
    for m in plan.multipliers():
        try:
            known = get(m.name)
            if known.signed == m.signed and np.array_equal(known.table, m.table):
                continue
        except KeyError:
            pass
        if m.name in out and not np.array_equal(out[m.name].table, m.table):
            raise ValueError(f"the plan uses two different tables named {m.name!r}; give them different names "
                             f"(multipliers.load(..., name=...)) to save it")
        out[m.name] = m
    return out


@functools.lru_cache(maxsize=8)
def _variable_shapes(preset: Any) -> dict[str, tuple[int, ...]]:
    """{``params/...`` / ``batch_stats/...`` name: shape} of the preset's model (traced once per preset: a
    training run saves the same preset again and again)."""
    import jax.numpy as jnp

    from ..models.densedepth import DenseDepth
    model = DenseDepth(preset)
    expected = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    return {k: tuple(v.shape) for k, v in _leaves({c: expected[c] for c in ("params", "batch_stats") if c in expected})}


def _check_fits(preset: Any, state: dict) -> None:
    """ValueError when ``params`` / ``batch_stats`` are not the arrays the preset's model has (another
    preset's variables would be saved, and fail only when loaded and applied)."""
    want = _variable_shapes(preset)
    have = {k: tuple(np.shape(v)) for k, v in _leaves({c: state[c] for c in ("params", "batch_stats") if c in state})}
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    wrong = [f"{k} {have[k]} (expected {want[k]})" for k in sorted(set(want) & set(have)) if want[k] != have[k]]
    if missing or unexpected or wrong:
        parts = ([f"{len(wrong)} of another shape, e.g. {wrong[0]}"] if wrong else []) + \
                ([f"{len(missing)} missing, e.g. {missing[0]}"] if missing else []) + \
                ([f"{len(unexpected)} not in the model, e.g. {unexpected[0]}"] if unexpected else [])
        raise ValueError(f"the variables do not fit preset {preset.name!r}: {'; '.join(parts)} (variables of "
                         f"another preset?)")


def _table_digest(table: np.ndarray) -> str:
    return _digests({"t": np.asarray(table, np.int32)})["t"]


def _plan_with_tables(plan_json: Any, path: Path, info: dict) -> Any:
    """The stored plan JSON with every name of ``info["tables"]`` replaced by the `Multiplier` made from
    ``tables.npz`` (digests checked)."""
    from ..multipliers import Multiplier
    stored = info.get("tables") or {}
    if not stored:
        return plan_json
    try:
        with np.load(path / TABLES_FILE) as npz:
            arrays = {name: npz[name] for name in stored}
    except (OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path / TABLES_FILE}: cannot read the plan's tables {sorted(stored)} ({e})") from None
    tables = {}
    for name, entry in stored.items():
        if _table_digest(arrays[name]) != entry.get("sha256"):
            raise CheckpointError(f"{path / TABLES_FILE}: table {name!r} differs from the digest recorded in "
                                  f"{META_FILE} (corrupted or replaced file)")
        tables[name] = Multiplier(name, arrays[name], bool(entry["signed"]), {"source": f"checkpoint {path}"})

    def swap(value: Any) -> Any:
        if isinstance(value, str):
            return tables.get(value.strip(), value)
        if isinstance(value, dict):
            return {k: swap(v) if k == "multiplier" else v for k, v in value.items()}
        return value
    return {"rules": {p: swap(v) for p, v in plan_json.get("rules", {}).items()},
            "default": swap(plan_json.get("default", "float"))}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (np.ndarray, jax.Array)):
        return np.asarray(obj).tolist()
    return obj


def save(path: Union[str, Path], preset: Any, variables: dict, plan: Any = None,
         extra: Optional[dict] = None, *, overwrite: bool = True) -> Path:
    """Write ``variables`` (``params``, ``batch_stats`` and, when calibrated, ``quant``) plus the preset
    (name and full config), the plan and ``extra`` (JSON-serialisable metadata) to directory ``path``.

    Written to a temporary folder beside ``path`` and swapped in when complete: an existing checkpoint is
    replaced (``overwrite=True``) only by a complete new one. A folder that is not a checkpoint is refused.
    A Ctrl-C while orbax writes the arrays takes effect once its writer threads are done: the temporary
    folder is then removed and KeyboardInterrupt raised."""
    import orbax.checkpoint as ocp

    from ..models.plan import Plan
    from ..models.presets import get_preset

    preset = get_preset(preset)
    plan = Plan.make(plan)
    path = Path(path).absolute()
    unknown = set(variables) - {"params", "batch_stats", "quant"}
    if unknown:
        raise ValueError(f"unexpected variable collections {sorted(unknown)}: expected params, batch_stats, quant")
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise FileExistsError(f"{path} exists and is not a folder; refusing to overwrite it")
        if not overwrite:
            raise FileExistsError(f"checkpoint {path} exists (pass overwrite=True to replace it)")
        if not (path / META_FILE).exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not a jaxdepth checkpoint; refusing to overwrite it")
    state = {k: jax.tree_util.tree_map(np.asarray, v) for k, v in variables.items() if v}
    nonfinite = _nonfinite(state)
    if nonfinite:
        raise ValueError(f"refusing to save {len(nonfinite)} array(s) holding NaN or infinite values "
                         f"(diverged training?), e.g. {', '.join(nonfinite[:3])}")
    _check_fits(preset, state)
    tables = _unnamed_tables(plan)
    meta = {"format": FORMAT, "version": VERSION, "preset_name": preset.name, "preset": preset.to_dict(),
            "plan": plan.to_json(), "collections": sorted(state), "extra": _jsonable(extra or {}),
            "digests": _digests(state)}
    if tables:
        meta["tables"] = {name: {"signed": m.signed, "sha256": _table_digest(m.table)} for name, m in tables.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_folder(path.parent, f".{path.name}.partial-")
    try:
        with _interrupts_held() as interrupted:     # orbax's threads and event loops are never abandoned mid-write
            ckptr = ocp.StandardCheckpointer()
            try:
                ckptr.save(tmp / VARIABLES_DIR, state)
                ckptr.wait_until_finished()
            finally:
                with contextlib.suppress(Exception):
                    ckptr.close()                   # waits for any background write still running
        if interrupted():
            raise KeyboardInterrupt
        if tables:
            with open(tmp / TABLES_FILE, "wb") as f:
                np.savez(f, **{name: np.asarray(m.table, np.int32) for name, m in tables.items()})
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _new_folder(parent: Path, prefix: str) -> Path:
    """A new empty folder ``parent/<prefix><random>``, with the mode any new folder gets under the process
    umask (`tempfile.mkdtemp` makes it 0700, which the checkpoint would keep once renamed into place)."""
    for _ in range(100):
        folder = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary folder {prefix}* in {parent}")


@contextlib.contextmanager
def _interrupts_held() -> Iterator[Callable[[], bool]]:
    """Hold Ctrl-C (SIGINT) back during the block; yields a function that tells whether one came. Only in the
    main thread with Python's own handler installed; elsewhere the block runs as is."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield lambda: False
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield lambda: bool(caught)
    finally:
        signal.signal(signal.SIGINT, previous)


def _swap_in(new: Path, path: Path) -> None:
    """Move the complete folder ``new`` to ``path``; an old ``path`` is moved aside first and removed only
    after the new one is in place (if the process dies in between, it survives as ``.<name>.old-*``)."""
    if not path.exists():
        os.rename(new, path)
        return
    old = _new_folder(path.parent, f".{path.name}.old-")
    os.rename(path, old / "checkpoint")
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old / "checkpoint", path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_info(path: Union[str, Path]) -> dict:
    """The JSON metadata of a checkpoint (preset, plan, collections, extra) without loading arrays."""
    meta_path = Path(path).absolute() / META_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{path} is not a jaxdepth checkpoint (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path}: not valid JSON, the file is truncated or corrupted ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: unknown format "
                              f"{meta.get('format') if isinstance(meta, dict) else type(meta).__name__!r}")
    if int(meta.get("version", 0)) > VERSION:
        raise ValueError(f"{meta_path}: checkpoint version {meta['version']} is newer than this jaxdepth ({VERSION})")
    missing = [k for k in ("preset", "collections") if k not in meta]
    if missing:
        raise CheckpointError(f"{meta_path}: incomplete metadata, missing {missing}")
    return meta


def _check_arrays(variables: dict, info: dict, path: Path) -> None:
    """Raise `CheckpointError` when arrays differ from the digests recorded at save or are not finite."""
    where = path / VARIABLES_DIR
    recorded = info.get("digests")
    if recorded is not None:
        found = _digests(variables)
        bad = sorted(k for k in set(recorded) | set(found) if recorded.get(k) != found.get(k))
        if bad:
            raise CheckpointError(f"{where}: {len(bad)} array(s) differ from the digests recorded in {META_FILE} "
                                  f"(corrupted or replaced files), e.g. {', '.join(bad[:3])}")
    bad = _nonfinite(variables)
    if bad:
        raise CheckpointError(f"{where}: {len(bad)} array(s) hold NaN or infinite values (corrupted "
                              f"checkpoint?), e.g. {', '.join(bad[:3])}")


def _quiet_abandoned_reads() -> None:
    """After a failed restore, the reads orbax still had in flight finish on tensorstore's threads and try to
    report to orbax's closed event loop: each prints an "Event loop is closed" traceback (up to ~160 lines
    after the one-line error). Those, and only those, are dropped from `sys.unraisablehook` from now on."""
    import sys

    previous = sys.unraisablehook
    if getattr(previous, "_jaxdepth_quiet", False):
        return

    def hook(unraisable) -> None:
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(unraisable)

    hook._jaxdepth_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _named_signedness(quant: dict, info: dict, stored: Any = None) -> dict:
    """A calibration saved before its keys named the signedness of the tables it serves (``x_scale`` ...),
    renamed after the plan saved with it (``stored``, parsed from ``info`` when None;
    `jaxdepth.models.calibrate.upgrade_legacy_keys`); left as it is when that plan names a multiplier this
    installation lacks (its layers then refuse to run with it)."""
    from ..models.calibrate import has_legacy_keys, upgrade_legacy_keys
    from ..models.plan import Plan

    if not has_legacy_keys(quant):
        return quant
    if stored is None:
        try:
            stored = Plan.from_json(info.get("plan"))
        except KeyError:
            return quant
    return upgrade_legacy_keys(quant, stored)


def load(path: Union[str, Path], plan: Any = None) -> tuple[Any, dict, dict]:
    """``(model, variables, info)``: the model rebuilt from the stored preset and plan (or ``plan`` when given),
    the restored variables (jax arrays) and the metadata dict."""
    import orbax.checkpoint as ocp

    from ..models.densedepth import DenseDepth
    from ..models.plan import Plan
    from ..models.presets import Preset

    path = Path(path).absolute()
    info = read_info(path)
    preset = Preset.from_dict(info["preset"])
    if plan is not None:
        model_plan = Plan.make(plan)
    else:
        try:
            model_plan = Plan.from_json(_plan_with_tables(info.get("plan"), path, info))
        except KeyError as e:  # a table saved by name only (before tables.npz) or a circuit this version lacks
            raise ValueError(f"{path}: the stored plan {info.get('plan')} names a multiplier this installation "
                             f"does not know ({e}); pass load(path, plan=...) to choose one") from None
    try:
        # the PyTree handler reads StandardCheckpointer's files into the same numpy arrays, without the
        # standard handler's extra passes over the metadata (faster; same arrays, dtypes and tree, checked)
        restored = ocp.PyTreeCheckpointer().restore(path / VARIABLES_DIR)
    except Exception as e:  # orbax / tensorstore errors on missing, truncated or corrupted array files
        _quiet_abandoned_reads()
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path / VARIABLES_DIR}: cannot read the arrays (missing, truncated or "
                              f"corrupted checkpoint): {detail[:300]}") from None
    restored = {k: dict(v) for k, v in restored.items()}
    _check_arrays(restored, info, path)
    if "quant" in restored:
        restored["quant"] = _named_signedness(restored["quant"], info, None if plan is not None else model_plan)
    variables = {k: jax.device_put(v) for k, v in restored.items()}
    return DenseDepth(preset, model_plan), variables, info
