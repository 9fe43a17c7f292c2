"""Per-layer arithmetic plans: layer-name glob patterns -> "float", "int8" or a multiplier.

    >>> plan = Plan.make({"decoder.up1.convA": "mul8s_1L2J", "decoder.*": "mul8s_1KV8", "encoder.*": "int8"})
    >>> plan.resolve("decoder.up2.convB").name
    'mul8s_1KV8'

Rules are tried in order and the first match wins; unmatched layers use ``default`` ("float").
A rule's value is ``"float"``, ``"int8"`` (the exact signed table, which the fast kernels run natively),
any name `jaxdepth.multipliers.get` accepts, a `Multiplier`, or ``{"multiplier": name, "impl": kernel}``
to force a `jaxdepth.lutconv` kernel (``impl="auto"`` otherwise; a list of kernels: auto among those).
``"requant": "integer"`` in that dict rescales the accumulators with integer arithmetic
(`jaxdepth.quant.requant`) instead of the default float ``s_x * s_w * acc + bias``.
``{"multiplier": name, "runtime_table": true}`` makes the layer read its table from the ``"lut"`` variable
collection (``variables["lut"][<layer path>]["table"]``) at run time, so one compiled model serves any table of
that signedness (the named multiplier only fixes the signedness; `jaxdepth.explore` uses this).
Layer names are the Flax module paths joined by dots, e.g. ``encoder.denseblock3.denselayer7.conv2``,
``encoder.block4.depthwise``, ``decoder.up1.convA``; `describe` lists them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import json
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from ..multipliers import Multiplier, get as get_multiplier

FLOAT = "float"


@functools.lru_cache(maxsize=None)
def _multiplier(name: str) -> Multiplier:
    return get_multiplier(name)


@dataclasses.dataclass(frozen=True)
class Arithmetic:
    """How one layer multiplies: exact float, or integer codes through ``multiplier``'s table."""

    multiplier: Optional[Multiplier] = None     # None = float
    impl: Union[str, tuple[str, ...]] = "auto"  # "auto", a kernel, or the kernels auto chooses among
    label: str = FLOAT                          # what the plan said ("float", "int8", a circuit name)
    runtime_table: bool = False                 # the table is read from variables["lut"] at run time
    requant: str = "float"                      # "float": s_x s_w acc + bias; "integer": jaxdepth.quant.requant

    @property
    def is_float(self) -> bool:
        return self.multiplier is None

    def __hash__(self) -> int:
        return hash((self.label, self.impl, id(self.multiplier), self.runtime_table, self.requant))


FLOAT_ARITH = Arithmetic()
REQUANT_MODES = ("float", "integer")

RuleValue = Union[str, Multiplier, Mapping[str, Any]]


def _arith(value: RuleValue) -> Arithmetic:
    if isinstance(value, Arithmetic):
        return value
    if isinstance(value, Multiplier):
        return Arithmetic(value, "auto", value.name)
    if isinstance(value, Mapping):
        unknown = set(value) - {"multiplier", "impl", "runtime_table", "requant"}
        if unknown or "multiplier" not in value:
            raise ValueError(f"a plan rule dict needs 'multiplier' (and optional 'impl', 'runtime_table', "
                             f"'requant'), got {dict(value)}")
        requant = value.get("requant", "float")
        if requant not in REQUANT_MODES:
            raise ValueError(f"plan rule 'requant' must be one of {', '.join(REQUANT_MODES)}, got {requant!r}")
        inner = _arith(value["multiplier"])
        if inner.is_float:
            return inner
        impl = value.get("impl", "auto")
        from ..lutconv import check_impl  # lazy: plans are made without loading the kernels
        check_impl(impl, "plan rule 'impl'")
        impl = impl if isinstance(impl, str) else tuple(impl)
        runtime = bool(value.get("runtime_table", False))
        label = f"runtime ({'signed' if inner.multiplier.signed else 'unsigned'})" if runtime else inner.label
        return dataclasses.replace(inner, impl=impl, runtime_table=runtime, label=label, requant=requant)
    if not isinstance(value, str):
        raise TypeError(f"plan value must be 'float', a multiplier name, a Multiplier or a dict, got {value!r}")
    key = value.strip()
    if key.lower() in ("float", "fp32", "none"):
        return FLOAT_ARITH
    return Arithmetic(_multiplier(key), "auto", key)


def _parsed(text: str) -> Any:
    """A plan's JSON text parsed, or a ValueError that shows the form a plan takes."""
    try:
        plan = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"a plan given as a string must be JSON, e.g. '{{\"decoder.*\": \"mul8u_NLX\"}}', got "
                         f"{text!r}; for every layer: {{\"*\": {json.dumps(text.strip())}}}") from None
    if not isinstance(plan, (Mapping, list)):
        raise ValueError(f"a plan must be a JSON object {{layer glob: arithmetic}}, got {json.dumps(plan)}")
    return plan


def _jsonable(value: Any) -> Any:
    if isinstance(value, Multiplier):
        return value.name
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class Plan:
    """Ordered (pattern, arithmetic) rules; hashable, so it can be a Flax module attribute."""

    rules: tuple[tuple[str, Arithmetic], ...] = ()
    default: Arithmetic = FLOAT_ARITH
    source: str = '{"rules": {}, "default": "float"}'   # the plan as JSON, for saving and printing

    @classmethod
    def make(cls, plan: Union[None, "Plan", Mapping[str, RuleValue], Iterable[tuple[str, RuleValue]], str] = None,
             default: RuleValue = FLOAT) -> "Plan":
        """A plan from a dict (insertion order = priority), a list of pairs, a JSON string or a plan."""
        if isinstance(plan, Plan):
            return plan
        if plan is None:
            plan = {}
        if isinstance(plan, str):
            plan = _parsed(plan)
        pairs = list(plan.items()) if isinstance(plan, Mapping) else [tuple(p) for p in plan]
        rules = []
        for pattern, value in pairs:
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"plan patterns must be non-empty strings, got {pattern!r}")
            rules.append((pattern, _arith(value)))
        source = json.dumps({"rules": {p: _jsonable(v) for p, v in pairs}, "default": _jsonable(default)})
        return cls(tuple(rules), _arith(default), source)

    def resolve(self, layer: str) -> Arithmetic:
        for pattern, arith in self.rules:
            if fnmatch.fnmatchcase(layer, pattern):
                return arith
        return self.default

    @property
    def is_float(self) -> bool:
        return self.default.is_float and all(a.is_float for _, a in self.rules)

    def to_json(self) -> dict[str, Any]:
        """``{"rules": {pattern: value}, "default": value}``; `Plan.from_json` inverts it."""
        return json.loads(self.source)

    @classmethod
    def from_json(cls, data: Union[str, Mapping[str, Any], None]) -> "Plan":
        if data is None:
            return FLOAT_PLAN
        if isinstance(data, str):
            data = _parsed(data)
        if "rules" in data:
            extra = set(data) - {"rules", "default"}
            if extra:
                raise ValueError(f"a saved plan has the keys 'rules' and 'default', got also {sorted(extra)}")
            return cls.make(data["rules"], data.get("default", FLOAT))
        return cls.make(data)

    def multipliers(self) -> list[Multiplier]:
        """The multipliers the plan uses (rules, then the default), each once."""
        out: list[Multiplier] = []
        for arith in [a for _, a in self.rules] + [self.default]:
            if arith.multiplier is not None and not any(arith.multiplier is m for m in out):
                out.append(arith.multiplier)
        return out

    def unused_patterns(self, layers: Iterable[str]) -> list[str]:
        layers = list(layers)
        return [p for p, _ in self.rules if not any(fnmatch.fnmatchcase(n, p) for n in layers)]


FLOAT_PLAN = Plan()


# ---- describing a model: every QConv / QDense with its arithmetic --------------------------------------------
@dataclasses.dataclass
class LayerInfo:
    name: str
    kind: str                 # "conv", "depthwise", "pointwise", "dense"
    x_shape: tuple[int, ...]  # NHWC input
    w_shape: tuple[int, ...]  # HWIO
    stride: int
    padding: int
    groups: int
    arith: Arithmetic
    folded_bn: bool
    init: str = "torch"       # kernel initializer kind (see layers.kernel_initializer)
    use_bias: bool = False
    activation: str = "none"  # fused activation (jaxdepth.quant.requant.ACTIVATIONS)

    @property
    def path(self) -> tuple[str, ...]:
        """The Flax module path (``()`` for a layer applied on its own)."""
        return tuple(p for p in self.name.split(".") if p)

    @property
    def out_hw(self) -> tuple[int, int]:
        kh, kw = self.w_shape[:2]
        h, w = self.x_shape[1:3]
        return ((h + 2 * self.padding - kh) // self.stride + 1, (w + 2 * self.padding - kw) // self.stride + 1)

    @property
    def macs(self) -> int:
        kh, kw, cg, o = self.w_shape
        ho, wo = self.out_hw
        return self.x_shape[0] * ho * wo * kh * kw * cg * o

    def choice(self) -> Any:
        """`lutconv.explain`'s `Choice` for this layer under its plan rule (None for a float layer)."""
        if self.arith.is_float:
            return None
        from .. import lutconv
        return lutconv.explain(self.x_shape, self.w_shape, self.arith.multiplier, stride=self.stride,
                               padding=self.padding, groups=self.groups, traced=True, impl=self.arith.impl)

    def kernel(self, verbose: bool = False) -> str:
        """The kernel the layer runs (with its estimated time; ``verbose``: lutconv.explain's reason)."""
        if self.arith.is_float:
            return "xla conv (float32)"
        try:
            choice = self.choice()
        except Exception as e:  # a listing must never break
            return f"? ({e})"
        if verbose:
            return choice.format()
        if choice.kernel is None:
            return "none (empty)"
        if choice.how == "forced":
            return f"{choice.kernel} (forced by the plan)"
        if choice.estimate is None:
            return choice.kernel
        value, unit = choice.estimate * 1e3, "ms"
        if value >= 1000:
            value, unit = value / 1000, "s"
        return f"{choice.kernel} (est. {value:.3g} {unit})"


_RECORDER: list[list[LayerInfo]] = []


def record(info: LayerInfo) -> None:
    """Called by QConv / QDense while tracing; a no-op unless `describe` / `recording` is listening."""
    if _RECORDER:
        _RECORDER[-1].append(info)


@contextlib.contextmanager
def recording():
    """Collect the `LayerInfo` of every QConv / QDense traced inside the block (first record per name)."""
    _RECORDER.append([])
    out: list[LayerInfo] = []
    try:
        yield out
    finally:
        seen = set()
        for info in _RECORDER.pop():
            if info.name not in seen:
                seen.add(info.name)
                out.append(info)


def describe(model: Any, input_shape: tuple[int, ...] = (1, 480, 640, 3), *, return_shapes: bool = False):
    """Every multiplying layer of ``model`` for an NHWC input of ``input_shape`` (traced, nothing computed).

    With ``return_shapes=True`` also returns the abstract variables (``jax.eval_shape`` of ``model.init``).
    """
    import jax
    import jax.numpy as jnp

    with recording() as infos:
        x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
        shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    return (infos, shapes) if return_shapes else infos


def layer_names(model: Any, size: Optional[Sequence[int]] = None) -> list[str]:
    """The names of ``model``'s multiplying layers in order (what plan patterns and ``--layers`` globs match),
    traced at an input of ``size`` (H, W; default 64x64) under the float plan, so no calibration is needed."""
    if getattr(model, "plan", None) is not None:
        model = model.clone(plan=FLOAT_PLAN)
    h, w = size or (64, 64)
    return [i.name for i in describe(model, (1, h, w, 3))]


def unmatched_patterns(patterns: Any, names: Sequence[str], where: str = "") -> Optional[str]:
    """``"pattern(s) 'a', 'b' match no layer<where><hint>"`` for the layer globs in ``patterns`` (a `Plan`, its
    dict, or a list of globs, e.g. ``--layers``) that match none of the layer ``names`` (hint:
    `_unmatched_hint`); None when every pattern matches. The one wording for every tool that takes globs."""
    if isinstance(patterns, (Plan, Mapping)):
        unused = Plan.make(patterns).unused_patterns(names)
    else:
        unused = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if not unused:
        return None
    return f"pattern(s) {', '.join(repr(u) for u in unused)} match no layer{where}{_unmatched_hint(unused, names)}"


def _unmatched_hint(unused: Sequence[str], names: Sequence[str]) -> str:
    """For an error about patterns that match no layer: close layer names / module globs (``did you mean``),
    and the model's layers with their counts per top module."""
    import difflib
    names = list(names)
    globs = sorted({".".join(n.split(".")[:d]) + ".*" for n in names for d in range(1, n.count(".") + 1)})
    close = [c for u in unused for c in difflib.get_close_matches(u, globs + names, n=2, cutoff=0.6)]
    tops: dict[str, int] = {}
    for n in names:
        tops[n.split(".")[0]] = tops.get(n.split(".")[0], 0) + 1
    text = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    shown = ", ".join(names) if len(names) <= 16 else ", ".join(names[:4] + ["..."] + names[-4:])
    return text + f"; the model's {len(names)} layers: {shown} ({', '.join(f'{t}.*: {k}' for t, k in tops.items())})"


def plan_table(model: Any, input_shape: tuple[int, ...] = (1, 480, 640, 3), kernels: bool = True,
               verbose: bool = False) -> str:
    """The model's resolved plan as a table (see `format_table`), plus the plan patterns that match nothing."""
    infos = describe(model, input_shape)
    table = format_table(infos, kernels, verbose)
    unused = model.plan.unused_patterns(i.name for i in infos) if hasattr(model, "plan") else []
    if unused:
        table += "\nwarning: plan patterns matching no layer: " + ", ".join(unused)
    return table


def format_table(infos: list[LayerInfo], kernels: bool = True, verbose: bool = False) -> str:
    """The resolved plan as a text table: layer, kind, shape, MACs, multiplier, kernel."""
    rows = [("layer", "kind", "in -> out (NHWC), kernel", "MACs", "multiplier", "kernel")]
    total, by_mult = 0, {}
    for i in infos:
        ho, wo = i.out_hw
        kh, kw, cg, o = i.w_shape
        shape = f"{i.x_shape[1]}x{i.x_shape[2]}x{i.x_shape[3]} -> {ho}x{wo}x{o}, {kh}x{kw}"
        if i.stride != 1:
            shape += f"/{i.stride}"
        mult = i.arith.label + (" +BN" if i.folded_bn and not i.arith.is_float else "")
        mult += " int-requant" if i.arith.requant == "integer" and not i.arith.is_float else ""
        rows.append((i.name, i.kind, shape, f"{i.macs / 1e6:,.1f}M", mult, i.kernel(verbose) if kernels else ""))
        total += i.macs
        by_mult[i.arith.label] = by_mult.get(i.arith.label, 0) + i.macs
    widths = [max(len(r[c]) for r in rows) for c in range(6)]
    lines = ["  ".join(cell.ljust(widths[c]) for c, cell in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    summary = ", ".join(f"{k}: {v / 1e9:.3f} G ({100 * v / max(total, 1):.1f}%)" for k, v in by_mult.items())
    lines.append(f"{len(infos)} layers, {total / 1e9:.3f} GMACs total; {summary}")
    return "\n".join(lines)
