"""The evaluation protocol: accuracy against ground truth and fidelity of an approximate model to the exact one.

Protocol (DenseDepth's NYU Depth v2 evaluation, generalised to any size):

1. the RGB frame is resized to the model's native input size (when the checkpoint records one);
2. prediction = mean of the prediction and the flipped prediction of the horizontally flipped input
   (in metres, after DenseDepth's ``clip(max_depth / raw, min_depth, max_depth)`` with the checkpoint
   preset's depth range: NYU's 0.1-10 m, densedepth_kitti's 1-80 m);
3. bilinear upsampling (x2 for DenseDepth at native size) to the ground-truth size;
4. metrics inside the evaluation crop (Eigen crop [20:459, 24:615] for NYU) over pixels with valid
   ground truth (finite, > 1e-3 m and <= the model's maximum depth: 10 m NYU, 80 m KITTI, as in the
   Eigen KITTI protocol's 80 m cap), pooled over all pixels of all images (``mean="images"`` averages
   per image instead).

Fidelity: the same metrics with the EXACT model's depth map as the reference (every pixel of the crop),
plus depth PSNR (peak = the model's maximum depth: 10 m NYU, 80 m KITTI). Predictors come from `jaxdepth.inference.make_predictor` (sharded over all
JAX devices).
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Optional, Union

import numpy as np

from . import metrics as M
from .data.loaders import check_batching
from .inference import DepthCheck, Predictor, check_depth, upsample_depth
from .io.images import as_uint8_rgb


#: NYU's (min, max) metres: the depth range of a predictor that does not record one
NYU_RANGE = (0.1, 10.0)


def evaluate(predict: Predictor, dataset: Any, *, reference: Optional[Predictor] = None, batch_size: int = 8,
             limit: Optional[int] = None, mean: str = "pixels", max_depth: Union[float, None, str] = "model",
             depth_range: Optional[tuple[float, float]] = None, progress: bool = False,
             keep: int = 0) -> dict[str, Any]:
    """Metrics of ``predict`` on ``dataset`` (a `jaxdepth.data.Dataset` or an iterable of (rgb, depth, crop)).

    Batches: rgb uint8 (N, H, W, 3) (float images are refused with the conversion: `make_predictor` takes
    0..255), ground truth metres (N, H', W') or (N, H', W', 1); ``predict(rgb)`` returns metres (N, h, w)
    (or (N, h, w, 1)). ``batch_size`` >= 1 frames a batch (a `Dataset`'s); ``limit`` None or >= 1 frames.

    ``depth_range`` = the model's (min, max) output metres (`jaxdepth.models.depth_range`); default
    ``predict.depth_range`` (`jaxdepth.inference.make_predictor` records the preset's), else NYU's (0.1, 10).
    ``max_depth``: ground truth beyond it is not scored; "model" (default) = the range's maximum (10 m NYU,
    80 m densedepth_kitti), None = no cap. The PSNR peak is the range's maximum; the degenerate-output
    checks look for pixels pinned to the range's ends.

    Returns ``{"accuracy": metrics vs gt, "frames": n, "frames_without_gt": k, "seconds": s, "depth_range":
    [min, max], "max_depth": the cap used}``; every metrics dict also holds the ``"frames"`` that contributed
    pixels to it. The ``k`` frames with no valid ground-truth pixel (in the crop, up to ``max_depth``) are left
    out of the metrics with a RuntimeWarning naming their number. With ``reference`` (the exact model)
    also ``"reference_accuracy"`` (its metrics vs gt) and ``"fidelity"`` (``predict`` vs ``reference``,
    PSNR included). ``"checks"`` holds a `jaxdepth.inference.DepthCheck` of every prediction ("prediction",
    and "reference") so callers can warn about NaN or collapsed outputs. ``keep`` > 0 also returns the first
    ``keep`` (rgb, gt, pred, ref) frames under ``"examples"`` for figures.
    """
    from tqdm import tqdm
    check_batching(batch_size, limit)      # also for plain iterables, which ignore both
    it = dataset.batches(batch_size, limit) if hasattr(dataset, "batches") else dataset
    total = (min(limit, len(dataset)) if limit else len(dataset)) if hasattr(dataset, "__len__") else None
    if depth_range is None:
        depth_range = getattr(predict, "depth_range", None) or NYU_RANGE
    lo, hi = (float(v) for v in depth_range)
    if max_depth == "model":
        max_depth = hi
    elif isinstance(max_depth, str):
        raise ValueError(f"max_depth must be a number, None or 'model', got {max_depth!r}")
    acc = M.Accumulator(mean, max_depth=max_depth, peak=hi)
    ref_acc = M.Accumulator(mean, max_depth=max_depth, peak=hi) if reference is not None else None
    fid = M.Accumulator(mean, peak=hi) if reference is not None else None
    examples: list[tuple] = []
    checks: dict[str, DepthCheck] = {}
    n = no_gt = 0
    t0 = time.time()
    bar = tqdm(total=total, desc="evaluating", unit="img", disable=not progress, dynamic_ncols=True)
    for rgb, gt, crop in it:
        rgb = as_uint8_rgb(rgb, "evaluate: the dataset's rgb batch")
        gt = _frames("ground truth", gt, len(rgb), "the dataset's depth batch")
        cmask = M.crop_mask(gt.shape, crop)
        valid = M.valid_mask(gt, acc.min_depth, max_depth) & cmask
        no_gt += int(np.count_nonzero(~valid.reshape(len(gt), -1).any(axis=1)))
        raw = _frames("prediction", predict(rgb), len(rgb), "predict(rgb)")
        _add_check(checks, "prediction", raw, (lo, hi))
        pred = upsample_depth(raw, gt.shape[1:])
        acc.add(pred, gt, cmask)
        ref = None
        if reference is not None:
            raw_ref = _frames("prediction", reference(rgb), len(rgb), "reference(rgb)")
            _add_check(checks, "reference", raw_ref, (lo, hi))
            ref = upsample_depth(raw_ref, gt.shape[1:])
            ref_acc.add(ref, gt, cmask)
            fid.add(pred, ref, cmask)
        for i in range(len(rgb)):
            if len(examples) < keep:
                examples.append((rgb[i], gt[i], pred[i], None if ref is None else ref[i]))
        n += len(rgb)
        bar.update(len(rgb))
    bar.close()
    if n == 0:
        raise ValueError("the dataset yielded no frames")
    if 0 < no_gt < n:               # none at all: acc.result() raises NoValidPixelsError
        warnings.warn(f"{no_gt} of {n} frames have no valid ground-truth pixel (finite, > {acc.min_depth:g} m"
                      f"{'' if max_depth is None else f', <= {max_depth:g} m'}, inside the crop): the metrics leave "
                      f"them out", RuntimeWarning, stacklevel=2)
    out: dict[str, Any] = {"accuracy": _with_frames(acc), "frames": n, "frames_without_gt": no_gt,
                           "seconds": time.time() - t0, "checks": checks, "depth_range": [lo, hi],
                           "max_depth": max_depth}
    if reference is not None:
        out["reference_accuracy"] = _with_frames(ref_acc)
        out["fidelity"] = _with_frames(fid)
    if keep:
        out["examples"] = examples
    return out


def _frames(kind: str, depth: Any, n: int, source: str) -> np.ndarray:
    """``depth`` as float32 (N, H, W) metres for ``n`` frames: a trailing channel of 1 is dropped; another shape
    raises a ValueError naming ``source`` and both shapes."""
    d = np.asarray(depth, np.float32)
    if d.ndim == 4 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 3 or len(d) != n:
        raise ValueError(f"{source}: {kind} of shape {np.shape(depth)} for {n} rgb frame(s); evaluate needs "
                         f"metres ({n}, H, W) (or ({n}, H, W, 1))")
    return d


def _with_frames(acc: M.Accumulator) -> dict[str, Any]:
    """``acc``'s metrics and the number of frames that contributed pixels to them (``"frames"``)."""
    return {**acc.result(), "frames": sum(r["pixels"] > 0 for r in acc.per_image)}


def _add_check(checks: dict[str, DepthCheck], key: str, depth: np.ndarray, depth_range: tuple[float, float]) -> None:
    c = check_depth(depth, depth_range=depth_range)
    checks[key] = checks[key] + c if key in checks else c
