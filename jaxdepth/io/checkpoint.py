"""Model checkpoints: variables with orbax-checkpoint, preset / plan / metadata as JSON beside them.

Layout of a checkpoint directory::

    <path>/jaxdepth.json     {"format": "jaxdepth-checkpoint", "version": 1, "preset": {...}, "plan": {...},
                              "collections": [...], "extra": {...}}
    <path>/variables/        orbax StandardCheckpointer: {"params", "batch_stats"[, "quant"]}

    >>> from jaxdepth.io import checkpoint
    >>> checkpoint.save("ckpt/lite", "mobilenetv2_lite", variables, extra={"epochs": 3})
    >>> model, variables, info = checkpoint.load("ckpt/lite")
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional, Union

import jax
import numpy as np

FORMAT = "jaxdepth-checkpoint"
VERSION = 1
META_FILE = "jaxdepth.json"
VARIABLES_DIR = "variables"


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
    (name and full config), the plan and ``extra`` (JSON-serialisable metadata) to directory ``path``."""
    import orbax.checkpoint as ocp

    from ..models.plan import Plan
    from ..models.presets import get_preset

    preset = get_preset(preset)
    plan = Plan.make(plan)
    path = Path(path).absolute()
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"checkpoint {path} exists (pass overwrite=True to replace it)")
        if not (path / META_FILE).exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not a jaxdepth checkpoint; refusing to overwrite it")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    unknown = set(variables) - {"params", "batch_stats", "quant"}
    if unknown:
        raise ValueError(f"unexpected variable collections {sorted(unknown)}: expected params, batch_stats, quant")
    state = {k: jax.tree_util.tree_map(np.asarray, v) for k, v in variables.items() if v}
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path / VARIABLES_DIR, state)
    ckptr.wait_until_finished()
    meta = {"format": FORMAT, "version": VERSION, "preset_name": preset.name, "preset": preset.to_dict(),
            "plan": plan.to_json(), "collections": sorted(state), "extra": _jsonable(extra or {})}
    (path / META_FILE).write_text(json.dumps(meta, indent=2))
    return path


def read_info(path: Union[str, Path]) -> dict:
    """The JSON metadata of a checkpoint (preset, plan, collections, extra) without loading arrays."""
    meta_path = Path(path).absolute() / META_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{path} is not a jaxdepth checkpoint (no {META_FILE})")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: unknown format {meta.get('format')!r}")
    if int(meta.get("version", 0)) > VERSION:
        raise ValueError(f"{meta_path}: checkpoint version {meta['version']} is newer than this jaxdepth ({VERSION})")
    return meta


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
            model_plan = Plan.from_json(info.get("plan"))
        except KeyError as e:  # e.g. a table loaded from a file, saved by name only
            raise ValueError(f"{path}: the stored plan {info.get('plan')} names a multiplier this installation "
                             f"does not know ({e}); pass load(path, plan=...) to choose one") from None
    restored = ocp.StandardCheckpointer().restore(path / VARIABLES_DIR)
    variables = {k: jax.device_put(dict(v)) for k, v in restored.items()}
    return DenseDepth(preset, model_plan), variables, info
