"""Inference: a jitted, device-sharded depth predictor, the resizing around it, and plan / calibration set-up.

The predictor and helpers the CLIs (predict, evaluate), training and exploration share:

    >>> from jaxdepth import inference
    >>> predict = inference.make_predictor(model, variables, flip=True, input_size=(240, 320))
    >>> depth = predict(images_uint8)                       # (N, h, w) metres at the model's output size
    >>> full = inference.upsample_depth(depth, images_uint8.shape[1:3])

Flip averaging is DenseDepth's: the mean of the prediction and the flipped prediction of the flipped input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

Predictor = Callable[[np.ndarray], np.ndarray]


def upsample_depth(depth: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Model-resolution depth (N, h, w) -> (N, H, W), bilinear with half-pixel centres."""
    from .data.transforms import resize_depth
    return resize_depth(depth, tuple(size))


def resize_batch(images: np.ndarray, size: Optional[Sequence[int]]) -> np.ndarray:
    """uint8 (N, H, W, 3) -> uint8 (N, h, w, 3) (PIL bilinear); unchanged when ``size`` is None or equal."""
    from .data.transforms import resize_image
    if size is None or tuple(images.shape[1:3]) == tuple(size):
        return images
    return np.stack([resize_image(im, tuple(size)) for im in images])


def model_input_size(model: Any, info: Optional[dict] = None) -> Optional[tuple[int, int]]:
    """The native (H, W) a model was trained at (preset ``input_size``, else checkpoint ``extra.input_size``)."""
    size = getattr(getattr(model, "preset", None), "input_size", None) or ((info or {}).get("extra") or {}).get(
        "input_size")
    return tuple(int(v) for v in size) if size else None


def run_size(native: Optional[Sequence[int]], image_hw: Sequence[int]) -> tuple[int, int]:
    """The size an image of ``image_hw`` runs at: the model's native size, else the image's own size
    rounded down to a multiple of 32 (at least 32), as DenseNet / MobileNet encoders need."""
    if native:
        return int(native[0]), int(native[1])
    return max(32, image_hw[0] // 32 * 32), max(32, image_hw[1] // 32 * 32)


def make_predictor(model: Any, variables: dict, *, flip: bool = True, devices: Optional[list] = None,
                   input_size: Optional[Sequence[int]] = None) -> Predictor:
    """``predict(images uint8 (N, H, W, 3)) -> metres float32 (N, h, w)`` at the model's output resolution.

    ``images`` are RGB in 0..255: uint8 (or another integer type with values in 0..255); float images (e.g.
    in [0, 1]) are refused with `jaxdepth.io.images.ImageConventionError` (a ValueError) saying how to
    convert, as is any other layout (a single (H, W, 3) image, channels first, grayscale, an empty batch).
    Inputs are resized to ``input_size`` (when given), scaled to [0, 1] and run with ``flip`` averaging;
    metres follow the model's preset depth range (``predict.depth_range`` = (min, max) m: NYU's (0.1, 10),
    densedepth_kitti's (1, 80); `jaxdepth.evaluation.evaluate` caps and checks with it).
    The batch is sharded over ``devices`` (default: all JAX devices) with a `NamedSharding` over a 1-D
    mesh ("batch"); variables are replicated; a batch that does not divide is padded (and the padding
    dropped from the result). One compilation per input shape; with JAX's compilation cache on (the CLIs),
    the traced program is stored too and a later process skips tracing (`jaxdepth.exec_cache`).
    """
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from .models import depth_range, to_metres

    preset = getattr(model, "preset", None)       # its depth range (densedepth_kitti: 80 / raw in [1, 80] m)
    devices = list(devices if devices is not None else jax.devices())
    mesh = Mesh(np.array(devices), ("batch",))
    data_sharding = NamedSharding(mesh, P("batch"))
    replicated = NamedSharding(mesh, P())
    variables = jax.device_put(variables, replicated)

    def run(v, x):
        x = x.astype(jnp.float32) / 255.0
        if flip:
            both = jnp.concatenate([x, x[:, :, ::-1]], axis=0)
            m = to_metres(model.apply(v, both), preset)[..., 0]
            n = x.shape[0]
            return 0.5 * (m[:n] + m[n:, :, ::-1])
        return to_metres(model.apply(v, x), preset)[..., 0]

    fn = jax.jit(run, in_shardings=(replicated, data_sharding), out_shardings=data_sharding)
    from .exec_cache import cached_jit
    fn = cached_jit(fn, "predict", (model, flip))  # a later process skips tracing (with a compilation cache)
    n_dev = len(devices)

    from .io.images import as_uint8_rgb

    def predict(images: np.ndarray) -> np.ndarray:
        images = resize_batch(as_uint8_rgb(images, "predict (from make_predictor)"), input_size)
        n = len(images)
        pad = (-n) % n_dev
        if pad:
            images = np.concatenate([images, np.repeat(images[-1:], pad, axis=0)])
        x = jax.device_put(images, data_sharding)
        return np.asarray(fn(variables, x))[:n]

    predict.n_devices = n_dev  # type: ignore[attr-defined]
    predict.depth_range = depth_range(model)  # type: ignore[attr-defined]
    return predict


def quantized(model: Any, variables: dict, plan: Any, calib_images: np.ndarray, *,
              compensate: bool = False) -> tuple[Any, dict]:
    """The model with ``plan`` and variables carrying input quantization for it.

    The stored ``quant`` collection is reused when it serves the plan: every layer the plan quantizes (by a
    rule or by its default) has a calibration for its table's signedness (`jaxdepth.models.
    uncalibrated_layers`; a checkpoint fine-tuned for its plan keeps its ranges, learned ones too);
    otherwise the model is calibrated on ``calib_images`` (N, H, W, 3) in [0, 1].
    ``compensate``: give every layer with an inexact table an error-compensation offset
    (`jaxdepth.models.compensate`, measured on ``calib_images`` unless stored offsets serve the plan);
    without it, stored offsets are dropped, so the result is the plain approximate model.
    """
    from .models import Plan, calibrate, uncalibrated_layers
    from .models.compensate import compensate as add_offsets, strip_compensation, uncompensated_layers
    qmodel = model.clone(plan=Plan.make(plan))
    size = np.shape(calib_images)[1:3]
    if "quant" in variables and not uncalibrated_layers(qmodel, variables, size):
        qvars = variables
    else:
        base = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
        qvars = calibrate(qmodel, base, np.asarray(calib_images, np.float32))
    if not compensate:
        return qmodel, strip_compensation(qvars)
    if uncompensated_layers(qmodel, qvars, size):
        qvars = add_offsets(qmodel, qvars, np.asarray(calib_images, np.float32))
    return qmodel, qvars


def compile_kernels_ahead(plan: Any, variables: dict) -> None:
    """Give numba's kernels a head start on a first run: the FFI handlers the plan's tables would use start
    compiling on a background thread now (when numba's disk cache lacks them), while the model is
    calibrated, traced and compiled by XLA, instead of when the trace first reaches a LUT layer. Tables
    with an int8 plan (`lutconv.lowrank`) are left alone: most of their layers need no numba kernel.
    ``variables`` tell whether the model has depthwise layers (kernels (KH, KW, 1, C)) that ``auto`` would give
    to ``dwrows`` (on AVX-512BW hosts; with AVX2 only, ``direct`` runs them)."""
    from .lutconv import ffi_bridge, lowrank
    from .models import Plan

    p = Plan.make(plan)
    tables = [np.asarray(a.multiplier.table) for _, a in (*p.rules, ("", p.default))
              if not a.is_float and not a.runtime_table]
    tables = [t for t in tables if lowrank.supports(t) is not None]
    if not tables:
        return
    import jax

    kernels = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(variables.get("params", {}))
               if getattr(path[-1], "key", None) == "kernel"]
    depthwise = [np.shape(k) for k in kernels if np.ndim(k) == 4 and np.shape(k)[2] == 1 and np.shape(k)[0] > 1]
    ffi_bridge.compile_ahead(tables, ["wstat", "direct"] + (["dwrows"] if _dwrows_likely(depthwise) else []))


def _dwrows_likely(depthwise_shapes: list) -> bool:
    """Whether ``auto`` would give some depthwise layer (kernel shapes (KH, KW, 1, C)) to ``dwrows`` (asked at a
    nominal 64x64 map: the sizes are not known before tracing; a wrong guess only moves a compilation)."""
    from .lutconv import ConvSpec, registry

    for kh, kw, _, channels in depthwise_shapes:
        problem = registry.Problem((1, 64 + kh - 1, 64 + kw - 1, channels), (kh, kw, 1, channels),
                                   ConvSpec(groups=channels), None, True)
        if registry.choose(problem, platform="cpu")[0].name == "dwrows":
            return True
    return False


def exact_and_plan(model: Any, plan: Any) -> tuple[Any, Any]:
    """(the float model, the plan to compare against it): ``plan`` when given, else the model's own plan when
    it is not all-float (a checkpoint converted with ``--plan``), else None."""
    stored = getattr(model, "plan", None)
    if stored is None:
        return model, plan
    from .models import FLOAT_PLAN
    if plan is None and not stored.is_float:
        plan = stored
    return (model if stored.is_float else model.clone(plan=FLOAT_PLAN)), plan


# ---------------------------------------------------------------------------------------- degenerate output

#: DenseDepth's NYU output range in metres (``models.to_metres`` clips to it; other presets: their own range).
DEPTH_MIN, DEPTH_MAX = 0.1, 10.0


@dataclass(frozen=True)
class DepthCheck:
    """Counts that tell whether a depth output is degenerate (NaN / collapsed / clipped everywhere).

    ``problems`` lists short codes: ``"nan"`` (some non-finite pixels), ``"all_nan"``, ``"constant"`` (every
    finite pixel within ``tolerance`` m of one value), ``"clipped_min"`` / ``"clipped_max"`` (at least
    ``clip_fraction`` of the finite pixels at the ``min_depth`` / ``max_depth`` bound: the model's depth range,
    NYU's 0.1 m / 10 m by default). Empty tuple: looks like a depth map.
    Checks of several batches combine with ``a + b``.
    """
    pixels: int
    non_finite: int
    at_min: int
    at_max: int
    lo: float            # min / max of the finite pixels (nan when none)
    hi: float
    clip_fraction: float = 0.95
    tolerance: float = 1e-3
    min_depth: float = DEPTH_MIN
    max_depth: float = DEPTH_MAX

    @property
    def finite(self) -> int:
        return self.pixels - self.non_finite

    @property
    def problems(self) -> tuple[str, ...]:
        out = []
        if self.pixels and self.non_finite == self.pixels:
            return ("all_nan",)
        if self.non_finite:
            out.append("nan")
        if self.finite:
            if self.hi - self.lo <= self.tolerance:
                out.append("constant")
            if self.at_min >= self.clip_fraction * self.finite:
                out.append("clipped_min")
            if self.at_max >= self.clip_fraction * self.finite:
                out.append("clipped_max")
        return tuple(out)

    def __add__(self, other: "DepthCheck") -> "DepthCheck":
        lo = np.nanmin([self.lo, other.lo]) if self.finite or other.finite else float("nan")
        hi = np.nanmax([self.hi, other.hi]) if self.finite or other.finite else float("nan")
        return DepthCheck(self.pixels + other.pixels, self.non_finite + other.non_finite,
                          self.at_min + other.at_min, self.at_max + other.at_max, float(lo), float(hi),
                          self.clip_fraction, self.tolerance, self.min_depth, self.max_depth)

    def describe(self) -> str:
        """The problems as a short phrase (for warnings), '' when there are none."""
        texts = {"all_nan": f"every pixel is NaN/inf ({self.pixels})",
                 "nan": f"{self.non_finite} of {self.pixels} pixels are NaN/inf",
                 "constant": f"constant {self.lo:.2f} m",
                 "clipped_min": f"{self.at_min} of {self.finite} pixels clipped to {self.min_depth} m",
                 "clipped_max": f"{self.at_max} of {self.finite} pixels clipped to {self.max_depth} m"}
        return "; ".join(texts[p] for p in self.problems)


def check_depth(depth: np.ndarray, *, clip_fraction: float = 0.95, tolerance: float = 1e-3,
                depth_range: tuple[float, float] = (DEPTH_MIN, DEPTH_MAX)) -> DepthCheck:
    """A `DepthCheck` of a depth output in metres (any shape) of a model whose output is clipped to
    ``depth_range`` (min, max) metres (`jaxdepth.models.depth_range`)."""
    lo, hi = (float(v) for v in depth_range)
    d = np.asarray(depth, np.float32)
    ok = np.isfinite(d)
    f = d[ok]
    eps = 1e-4
    return DepthCheck(int(d.size), int(d.size - f.size), int((f <= lo + eps).sum()),
                      int((f >= hi - eps).sum()), float(f.min()) if f.size else float("nan"),
                      float(f.max()) if f.size else float("nan"), clip_fraction, tolerance, lo, hi)
