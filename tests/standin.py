"""A tiny stand-in for a DenseDepth model, shared by the CLI / evaluation / training tests.

Same contract as `jaxdepth.models.DenseDepth`: NHWC RGB in [0, 1] -> raw depth (N, H/2, W/2, 1), metres =
10 / raw; raw lies in (1, 1 + scale). Importable from a subprocess too (``sys.path`` + ``import standin``).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class TinyDepth(nn.Module):
    """conv 3x3 -> tanh (or BatchNorm + ReLU) -> 2x2 average pool -> conv -> 1 + scale * sigmoid."""

    scale: float = 4.0
    features: int = 4
    head: tuple[int, int] = (1, 3)
    batchnorm: bool = False
    preset: Any = None          # the CLIs read model.preset.input_size

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.features, (3, 3))(x)
        if self.batchnorm:
            x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        else:
            x = jnp.tanh(x)
        x = nn.avg_pool(x, (2, 2), (2, 2))
        return 1.0 + self.scale * nn.sigmoid(nn.Conv(1, self.head)(x))


def tiny(seed: int = 0, input_shape: tuple[int, ...] = (1, 8, 8, 3), **fields: Any) -> tuple[TinyDepth, dict]:
    """``(model, variables)`` of a `TinyDepth` with ``fields``, initialised from ``seed``."""
    model = TinyDepth(**fields)
    return model, model.init(jax.random.PRNGKey(seed), jnp.zeros(input_shape))


def kitti_range_densenet(seed: int = 0, input_size: tuple[int, int] = (64, 64)) -> tuple[Any, dict]:
    """``(model, variables)``: a small DenseNet DenseDepth with densedepth_kitti's depth range (metres =
    clip(80 / output, 1, 80)); the output conv's bias raised and kernel scaled so its metres spread over
    ~8-130 m (before the clip) instead of sitting at the clip ends as a random init's would."""
    from jaxdepth import models
    p = models.get_preset("densedepth_kitti", growth_rate=8, block_config=(1, 1, 1, 1), num_init_features=16,
                          bn_size=1, input_size=input_size)
    assert (p.min_depth, p.max_depth) == (1.0, 80.0)
    model = models.build(p)
    v = models.init_variables(model, seed)
    c = v["params"]["decoder"]["conv3"]
    c["bias"], c["kernel"] = c["bias"] + 4.0, c["kernel"] * 20
    return model, v


def numpy_metrics(p: Any, g: Any, peak: float) -> dict[str, float]:
    """The depth metrics written out from their definitions (numpy, float64) over the given pixels."""
    import numpy as np
    p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
    r = np.maximum(p / g, g / p)
    mse = np.mean((p - g) ** 2)
    return {"delta1": np.mean(r < 1.25), "delta2": np.mean(r < 1.25 ** 2), "delta3": np.mean(r < 1.25 ** 3),
            "abs_rel": np.mean(np.abs(p - g) / g), "sq_rel": np.mean((p - g) ** 2 / g), "rmse": np.sqrt(mse),
            "rmse_log": np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2)),
            "log10": np.mean(np.abs(np.log10(p) - np.log10(g))), "psnr": 10 * np.log10(peak ** 2 / mse),
            "pixels": p.size}


def kitti_frames(n: int = 3, size: tuple[int, int] = (64, 64), seed: int = 7) -> tuple[Any, Any]:
    """(rgb uint8 (n, H, W, 3), ground truth metres (n, H, W) uniform in 2-120 m, a few invalid zeros)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
    gt = rng.uniform(2.0, 120.0, (n, *size)).astype(np.float32)
    gt[0, :4] = 0.0
    return rgb, gt


def kitti_expected(model: Any, variables: dict, rgb: Any, gt: Any, flip: bool = True) -> dict[str, float]:
    """The metrics a KITTI-range model's evaluation must give, from its raw output and numpy: metres =
    clip(80 / raw, 1, 80) (flip-averaged), upsampled to the ground truth, pixels with 1e-3 < gt <= 80 m,
    PSNR peak 80 m."""
    import numpy as np
    from jaxdepth.inference import upsample_depth
    x = rgb.astype(np.float32) / 255.0
    metres = lambda raw: np.clip(80.0 / np.asarray(raw, np.float64)[..., 0], 1.0, 80.0)  # noqa: E731
    pred = metres(model.apply(variables, x))
    if flip:
        pred = 0.5 * (pred + metres(model.apply(variables, x[:, :, ::-1]))[:, :, ::-1])
    assert pred.max() > 30 and pred.min() < 20          # a KITTI-scale map, far beyond NYU's 10 m
    up = upsample_depth(pred.astype(np.float32), gt.shape[1:])
    valid = (gt > 1e-3) & (gt <= 80.0)
    assert valid.sum() > 2 * ((gt > 1e-3) & (gt <= 10.0)).sum() and (~valid & (gt > 0)).sum() > 0
    return numpy_metrics(up[valid], gt[valid], peak=80.0)
