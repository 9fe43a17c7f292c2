"""Evaluate many per-layer multiplier configurations of one model on one dataset, compiling once per structure.

A `Config` assigns a multiplier (or float) to every layer through ordered glob rules. The `Evaluator`
holds the model, the frames (decoded and resized once), the exact model's predictions (computed once:
every configuration's fidelity reference) and a cache of compiled executables keyed by the plan's
*structure* -- for each layer: float, or quantized with a signed / unsigned table. The tables themselves
are a runtime operand (``variables["lut"]``, plan rule ``runtime_table``), so a sweep over N circuits of
one signedness on the same layers compiles once, not N times. (Tables as operands rule out the ``lowrank``
kernel, which factorises a known table at trace time; the callback / FFI kernels run them instead.)

Per configuration it reports what ``python -m jaxdepth.evaluate`` reports for the same plan (accuracy vs
ground truth through `jaxdepth.evaluate.evaluate`, fidelity vs the exact model: depth PSNR and the other
metrics), plus the relative rms of the depth difference and of the decoder output (raw model output,
unflipped input) at the model's resolution, the relative hardware cost (`jaxdepth.explore.cost`) and a
warning when the depth map is degenerate (near-constant or pinned to the clip range).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from ..multipliers import Multiplier
from .cost import network_cost
from .store import digest

FLOAT = None
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "default_model" / "checkpoint"


def _has_unsigned_calibration(variables: dict) -> bool:
    """Whether ``variables["quant"]`` holds input ranges for unsigned tables (any layer)."""
    from flax import traverse_util

    from ..models.calibrate import qparam_keys
    keys = set(qparam_keys("x", False))
    return any(path[-1] in keys for path in traverse_util.flatten_dict(dict(variables.get("quant") or {})))


def table_id(m: Optional[Multiplier]) -> str:
    """``name#hash`` of a multiplier's table (``float`` for None): what a stored plan is keyed by."""
    if m is None:
        return "float"
    return f"{m.name}#{hashlib.sha1(np.ascontiguousarray(m.table).tobytes()).hexdigest()[:10]}"


@dataclasses.dataclass(frozen=True)
class Config:
    """One configuration: ordered (layer glob, multiplier or None = float) rules, first match wins."""

    label: str
    rules: tuple[tuple[str, Optional[Multiplier]], ...]
    default: Optional[Multiplier] = None
    kind: str = "sweep"
    meta: tuple[tuple[str, Any], ...] = ()       # e.g. (("multiplier", name), ("layers", "decoder.*"))

    def resolve(self, layer_names: Sequence[str]) -> dict[str, Optional[Multiplier]]:
        """The multiplier (None = float) of every layer; ValueError when a rule's glob matches no layer (its
        layers would silently stay float)."""
        import fnmatch

        from ..models.plan import unmatched_patterns
        problem = unmatched_patterns([p for p, _ in self.rules], layer_names, where=f" (configuration {self.label!r})")
        if problem:
            raise ValueError(problem)
        out = {}
        for name in layer_names:
            out[name] = next((m for p, m in self.rules if fnmatch.fnmatchcase(name, p)), self.default)
        return out

    @classmethod
    def per_layer(cls, label: str, assignment: Mapping[str, Optional[Multiplier]], kind: str = "search",
                  meta: Iterable[tuple[str, Any]] = ()) -> "Config":
        return cls(label, tuple(assignment.items()), None, kind, tuple(meta))


@dataclasses.dataclass(frozen=True)
class Protocol:
    """What `jaxdepth.evaluate` would be run with (every field changes the results, so it keys the store)."""

    flip: bool = True
    mean: str = "pixels"
    batch_size: int = 8
    calib_frames: int = 8
    max_depth: Optional[float] = None   # ground-truth cap in metres; None: the model's (10 m NYU, 80 m KITTI)
    compensate: bool = False            # error compensation (`jaxdepth.models.compensate`) on the calib frames


def _nest(entries: Mapping[tuple[str, ...], Any]) -> dict:
    out: dict = {}
    for path, leaf in entries.items():
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = leaf
    return out


def _get(tree: Mapping, path: Sequence[str]) -> Any:
    for p in path:
        if not isinstance(tree, Mapping) or p not in tree:
            return None
        tree = tree[p]
    return tree


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:32]


#: Kernels that take the table as a runtime operand (lowrank factorises a concrete table at trace time).
RUNTIME_KERNELS = ("wstat", "dwrows", "direct", "gather")


def runtime_kernel(info: Any, signed: bool, batch: int) -> str:
    """The kernel for a layer whose table is a runtime operand: what ``auto`` picks among `RUNTIME_KERNELS`
    for the exact table of that signedness (every 8x8 product table narrows to 16 bits like it; without a
    concrete table ``auto`` would assume 32-bit entries and pick the slower ``direct``)."""
    from .. import lutconv
    from ..multipliers import get
    x_shape = (batch, *info.x_shape[1:])
    choice = lutconv.explain(x_shape, info.w_shape, get("exact_s8" if signed else "exact_u8"), stride=info.stride,
                             padding=info.padding, groups=info.groups, traced=True, impl=list(RUNTIME_KERNELS))
    return choice.kernel or "auto"   # None: an empty call, no kernel runs


class Evaluator:
    """Configurations of one model on one dataset under one protocol (see the module docstring).

    ``model, variables, info``: as `jaxdepth.io.checkpoint.load` returns them; ``batches``: a list of
    ``(rgb uint8 (B, H, W, 3), depth metres (B, H, W), crop)``; ``description``: what the model and the data
    are (it keys the results store together with the protocol).
    """

    def __init__(self, model: Any, variables: dict, info: dict, batches: list, *, description: dict,
                 protocol: Protocol = Protocol(), calib_images: Optional[np.ndarray] = None):
        from ..inference import model_input_size, resize_batch
        from ..models import FLOAT_PLAN, describe
        if not batches:
            raise ValueError("no frames to evaluate")
        from ..models import depth_range
        #: the model's (min, max) output metres (its preset's DepthNorm range) and the ground-truth cap
        self.depth_range = depth_range(model)
        if protocol.max_depth is None:   # resolved: an NYU model's store keys are those of the former 10.0 default
            protocol = dataclasses.replace(protocol, max_depth=self.depth_range[1])
        self.protocol = protocol
        self.model = model.clone(plan=FLOAT_PLAN) if getattr(model, "plan", None) is not None else model
        self.variables = variables
        self.info = info
        self.input_size = model_input_size(model, info)
        self.batches = batches
        self._x = {id(b[0]): resize_batch(np.asarray(b[0], np.uint8), self.input_size) for b in batches}
        shape = next(iter(self._x.values())).shape
        self.infos = describe(self.model, (1, *shape[1:]))
        self.layer_names = [i.name for i in self.infos]
        self.description = dict(description)
        context = {"description": self.description, "protocol": dataclasses.asdict(protocol), "version": 1}
        if not protocol.compensate:     # stores made before the field existed keep their keys
            del context["protocol"]["compensate"]
        if _has_unsigned_calibration(variables):
            # results of such checkpoints changed when their stored unsigned ranges began to serve every unsigned
            # table (before: the checkpoint's own only); other stores keep their keys
            context["stored_unsigned_ranges"] = "every table"
        self.context = digest(context)
        calib = calib_images if calib_images is not None else np.concatenate([b[0] for b in batches])[
            :protocol.calib_frames]
        self._calib = resize_batch(np.asarray(calib, np.uint8), self.input_size).astype(np.float32) / 255.0
        self._base = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
        self._calibrated: dict[bool, dict] = {}
        self._compiled: dict[Any, Any] = {}
        self._models: dict[tuple, Any] = {}
        self.compile_seconds = 0.0
        self.frames = sum(len(b[0]) for b in batches)
        self._exact_cache: Optional[dict[int, tuple[np.ndarray, np.ndarray]]] = None

    @property
    def _exact(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The exact (float) model's (metres, raw) per batch, computed on first use."""
        if self._exact_cache is None:
            exact = self._function(tuple(("float",) for _ in self.layer_names))
            self._exact_cache = {}
            for b in self.batches:
                metres, raw = exact(self._base, self._x[id(b[0])])
                self._exact_cache[id(b[0])] = (np.asarray(metres), np.asarray(raw))
        return self._exact_cache

    # ---- keys -------------------------------------------------------------------------------------------
    def assignment(self, config: Config) -> dict[str, Optional[Multiplier]]:
        return config.resolve(self.layer_names)

    def key(self, config: Config) -> str:
        """The store key of ``config`` in this context (the resolved per-layer tables)."""
        a = self.assignment(config)
        return digest({"context": self.context, "plan": [[n, table_id(a[n])] for n in self.layer_names]})

    # ---- compiled functions -------------------------------------------------------------------------------
    def _function(self, structure: tuple):
        """The jitted ``(variables, uint8 images) -> (metres flip-averaged, raw unflipped)`` for a structure."""
        import jax
        import jax.numpy as jnp
        from ..models import to_metres
        if structure in self._compiled:
            return self._compiled[structure]
        flip = self.protocol.flip
        model = self._model(structure)
        preset = getattr(self.model, "preset", None)      # metres in its depth range (densedepth_kitti: 1-80 m)

        def run(v, x):
            x = x.astype(jnp.float32) / 255.0
            if flip:
                both = jnp.concatenate([x, x[:, :, ::-1]], axis=0)
                raw = model.apply(v, both)
                m = to_metres(raw, preset)[..., 0]
                n = x.shape[0]
                return 0.5 * (m[:n] + m[n:, :, ::-1]), raw[:n]
            raw = model.apply(v, x)
            return to_metres(raw, preset)[..., 0], raw

        jitted = jax.jit(run)
        cache: dict[tuple, Any] = {}

        def call(v, x):
            sig = (x.shape, jax.tree_util.tree_structure(v))
            if sig not in cache:
                t0 = time.time()
                cache[sig] = jitted.lower(v, x).compile()
                self.compile_seconds += time.time() - t0
            return cache[sig](v, x)

        self._compiled[structure] = call
        return call

    def _model(self, structure: tuple) -> Any:
        """The model whose quantized layers read their tables at run time, for a structure (one object per
        structure: it keys the compiled functions)."""
        from ..models import Plan
        if structure not in self._models:
            batch = self.protocol.batch_size * (2 if self.protocol.flip else 1)
            rules = {}
            for info, s in zip(self.infos, structure):
                if s[0] == "table":
                    rules[info.name] = {"multiplier": "exact_s8" if s[1] else "exact_u8", "runtime_table": True,
                                        "impl": runtime_kernel(info, s[1], batch)}
            self._models[structure] = self.model.clone(plan=Plan.make(rules))
        return self._models[structure]

    def structure(self, assignment: Mapping[str, Optional[Multiplier]]) -> tuple:
        return tuple(("float",) if assignment[n] is None else ("table", assignment[n].signed)
                     for n in self.layer_names)

    def _quant(self, assignment: Mapping[str, Optional[Multiplier]]) -> dict:
        """Input quantization as `python -m jaxdepth.evaluate` chooses it (`jaxdepth.inference.quantized`): the
        checkpoint's stored ``quant`` when it holds a calibration of the right signedness for every quantized
        layer (a checkpoint fine-tuned for a plan keeps its ranges, learned ones too), else calibration on the
        first ``calib_frames`` frames (per layer, for the layer's signedness; observers see the float model, so
        one calibration per signedness serves every configuration)."""
        from ..models import Plan, calibrate
        from ..models.calibrate import qparam_keys
        used = [n for n in self.layer_names if assignment[n] is not None]
        stored = self.variables.get("quant")
        path = {i.name: i.path for i in self.infos}
        if stored is not None and all(all(k in (_get(stored, path[n]) or {}) for k in
                                          qparam_keys("x", assignment[n].signed)) for n in used):
            return stored
        entries = {}
        for n in used:
            signed = assignment[n].signed
            if signed not in self._calibrated:
                plan = Plan.make({"*": "exact_s8" if signed else "exact_u8"})
                self._calibrated[signed] = calibrate(self.model.clone(plan=plan), self._base, self._calib)["quant"]
            entries[path[n]] = _get(self._calibrated[signed], path[n])
        return _nest(entries)

    def variables_for(self, assignment: Mapping[str, Optional[Multiplier]]) -> dict:
        import jax.numpy as jnp
        path = {i.name: i.path for i in self.infos}
        tables = {path[n]: {"table": jnp.asarray(m.table)} for n, m in assignment.items() if m is not None}
        v = dict(self._base)
        if tables:
            v["quant"] = self._quant(assignment)
            v["lut"] = _nest(tables)
            if self.protocol.compensate:      # offsets of these tables, measured on the calibration frames
                from ..models.compensate import compensate
                v = compensate(self._model(self.structure(assignment)), v, self._calib)
        return v

    # ---- evaluation ---------------------------------------------------------------------------------------
    def evaluate(self, config: Config) -> dict[str, Any]:
        """Evaluate one configuration; returns the record the store keeps (see the module docstring)."""
        from ..evaluation import evaluate
        t0 = time.time()
        compile0 = self.compile_seconds
        assignment = self.assignment(config)
        fn = self._function(self.structure(assignment))
        v = self.variables_for(assignment)
        sums = {"raw_d": 0.0, "raw_e": 0.0, "dep_d": 0.0, "dep_e": 0.0}

        def predict(rgb):
            x = self._x[id(rgb)]
            metres, raw = fn(v, x)
            metres, raw = np.asarray(metres), np.asarray(raw, np.float64)
            ref_m, ref_raw = self._exact[id(rgb)]
            sums["raw_d"] += float(np.sum((raw - ref_raw) ** 2))
            sums["raw_e"] += float(np.sum(ref_raw.astype(np.float64) ** 2))
            sums["dep_d"] += float(np.sum((metres.astype(np.float64) - ref_m) ** 2))
            sums["dep_e"] += float(np.sum(ref_m.astype(np.float64) ** 2))
            return metres

        def reference(rgb):
            return self._exact[id(rgb)][0]

        res = evaluate(predict, self.batches, reference=reference, mean=self.protocol.mean,
                       max_depth=self.protocol.max_depth, depth_range=self.depth_range)
        check = res["checks"]["prediction"]
        cost = network_cost(self.infos, assignment)
        return {
            "key": self.key(config), "context": self.context, "label": config.label, "kind": config.kind,
            "meta": dict(config.meta),
            "plan": {n: (None if m is None else m.name) for n, m in assignment.items()},
            "accuracy": res["accuracy"], "reference_accuracy": res["reference_accuracy"],
            "fidelity": {**res["fidelity"],
                         "depth_rel_rms": math.sqrt(sums["dep_d"] / max(sums["dep_e"], 1e-300)),
                         "decoder_rel_rms": math.sqrt(sums["raw_d"] / max(sums["raw_e"], 1e-300))},
            "cost": cost, "frames": res["frames"],
            "warning": check.describe() if check.problems else None,
            "seconds": time.time() - t0, "compile_seconds": self.compile_seconds - compile0,
        }


def model_layer_names(model: Any, info: Optional[dict] = None) -> list[str]:
    """The multiplying layers of ``model`` in order, as an `Evaluator` of it names them, without any data
    (so layer patterns can be checked before the frames are loaded)."""
    from ..inference import model_input_size
    from ..models import layer_names
    return layer_names(model, model_input_size(model, info))


# ---- building an evaluator from paths (the CLI and the Ray workers use this) --------------------------------
@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """Where the model and the data come from, and the protocol: enough to rebuild an `Evaluator` anywhere."""

    model: Optional[str] = None                 # checkpoint folder (None: the bundled model)
    data: str = "synthetic:32:1000"
    format: str = "auto"
    limit: Optional[int] = None
    protocol: Protocol = Protocol()

    def model_path(self) -> Path:
        return Path(self.model) if self.model else DEFAULT_CHECKPOINT

    def describe(self) -> dict:
        path = self.model_path().resolve()
        data: dict[str, Any] = {"spec": self.data, "format": self.format, "limit": self.limit}
        p = Path(self.data)
        if p.exists():
            st = p.stat()
            data.update(path=str(p.resolve()), size=st.st_size, mtime=st.st_mtime)
        return {"model": {"path": str(path), "digest": _file_digest(path)}, "data": data}

    def load_model(self) -> tuple[Any, dict, dict]:
        """(model, variables, info) of the checkpoint, without the data (raises FileNotFoundError / ValueError)."""
        from ..io import checkpoint
        return checkpoint.load(self.model_path())

    def build(self, loaded: Optional[tuple[Any, dict, dict]] = None) -> Evaluator:
        """Load the checkpoint (unless ``loaded`` is `load_model`'s result) and the frames and build the
        evaluator (raises FileNotFoundError / ValueError)."""
        from ..data import load
        model, variables, info = loaded if loaded is not None else self.load_model()
        ds = load(self.data, self.format)
        batches = list(ds.batches(self.protocol.batch_size, self.limit))
        calib = np.concatenate([b[0] for b in ds.batches(self.protocol.calib_frames, self.protocol.calib_frames)])
        return Evaluator(model, variables, info, batches, description=self.describe(), protocol=self.protocol,
                         calib_images=calib)
