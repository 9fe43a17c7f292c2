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
