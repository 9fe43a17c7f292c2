"""DenseDepth = encoder (feature list) + decoder; the public `build` / `init_variables` / `to_metres`."""
from __future__ import annotations

from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .decoder import Decoder
from .family import get_family
from .layers import numpy_init
from .plan import FLOAT_PLAN, Plan, describe
from .presets import Preset, get_preset

def make_encoder(preset: Preset, plan: Plan = FLOAT_PLAN, name: Optional[str] = None) -> nn.Module:
    """The encoder alone (its family's module): ``apply(variables, images, train=False)`` returns the feature
    list, whose entries ``preset.taps()`` names."""
    return get_family(preset.encoder).module(preset, plan, name=name)


class DenseDepth(nn.Module):
    """NHWC RGB in [0, 1] -> raw DenseDepth output (N, H/2, W/2, 1); see `to_metres`."""

    preset: Preset
    plan: Plan = FLOAT_PLAN

    def setup(self) -> None:
        self.encoder = make_encoder(self.preset, self.plan)
        self.decoder = Decoder(self.preset, self.plan)

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"DenseDepth expects NHWC RGB images (N, H, W, 3), got shape {images.shape}")
        return self.decoder(self.encoder(images.astype(jnp.float32), train))

    def features(self, images: jax.Array, train: bool = False) -> list[jax.Array]:
        """The encoder's feature list (use with ``model.apply(variables, x, method="features")``)."""
        return self.encoder(images.astype(jnp.float32), train)


def build(preset: Union[str, Preset], plan: Any = None, **overrides: Any) -> DenseDepth:
    """A DenseDepth model for a preset (name or `Preset`), an arithmetic plan and preset overrides.

    ``plan``: None (all float), a `Plan`, or a dict of layer-name glob -> "float" / "int8" / multiplier.
    ``overrides``: preset settings, e.g. ``conv2_padding=0`` or ``leakyrelu_a=False``.
    """
    return DenseDepth(get_preset(preset, **overrides), Plan.make(plan))


def init_variables(model: nn.Module, rng: Any = 0, input_shape: tuple[int, ...] = (1, 64, 64, 3)) -> dict:
    """Fresh ``{"params", "batch_stats"}`` (the parameter shapes do not depend on the input size).

    The distributions are the modules' own (PyTorch / torchvision conventions: kaiming-normal encoder
    kernels, PyTorch-default decoder kernels and biases, BatchNorm 1 / 0, running mean 0 / var 1) but are
    drawn with a NumPy generator seeded by ``rng`` (an int or a JAX key): ``model.init`` gives the same
    distributions but compiles one random kernel per parameter shape, which takes minutes for DenseNets.
    """
    if not isinstance(rng, (int, np.integer)):
        rng = int(np.asarray(jax.random.key_data(rng)).ravel()[-1])
    gen = np.random.default_rng(int(rng))
    infos, shapes = describe(model, tuple(input_shape), return_shapes=True)
    layers = {i.path: i for i in infos}

    def leaf(path, sd):
        keys = tuple(getattr(k, "key", str(k)) for k in path)
        collection, module, name = keys[0], keys[1:-1], keys[-1]
        if collection == "batch_stats":
            return (np.zeros if name == "mean" else np.ones)(sd.shape, np.float32)
        if collection != "params":
            raise ValueError(f"unexpected variable collection {collection!r} at init")
        if module in layers:
            info = layers[module]
            kh, kw, cg, _ = info.w_shape
            fan_in = kh * kw * cg
            if name == "kernel":
                return numpy_init(info.init, sd.shape, fan_in, gen)
            return numpy_init("torch", sd.shape, fan_in, gen)            # conv bias
        return (np.ones if name == "scale" else np.zeros)(sd.shape, np.float32)  # BatchNorm

    variables = jax.tree_util.tree_map_with_path(leaf, dict(shapes))
    return {k: jax.device_put(variables[k]) for k in ("params", "batch_stats") if k in variables}


FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compile_apply(model: nn.Module, variables: dict, input_shape: tuple[int, ...], *, method: Any = None,
                  fast_compile: bool = False, **kwargs: Any):
    """``model.apply(variables, images, **kwargs)`` compiled ahead of time for one NHWC input shape.

    ``fast_compile=True`` compiles a DenseNet much faster and runs slower (XLA backend optimisation off):
    the right trade for one-off runs such as tests and conversions checks.
    """
    fn = jax.jit(lambda v, x: model.apply(v, x, method=method, **kwargs))
    lowered = fn.lower(variables, jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32))
    return lowered.compile(compiler_options=FAST_COMPILE_OPTIONS) if fast_compile else lowered.compile()


def to_metres(raw: Any, preset: Union[None, str, Preset] = None) -> jax.Array:
    """DenseDepth's output convention (its ``DepthNorm``): metres = max_depth / raw, clipped to [min_depth,
    max_depth] of the preset; without one NYU's 10 / raw in [0.1, 10] (densedepth_kitti: 80 / raw in [1, 80])."""
    lo, hi = (0.1, 10.0) if preset is None else depth_range(preset)
    return jnp.clip(hi / jnp.asarray(raw, jnp.float32), lo, hi)


def depth_range(preset: Union[None, str, Preset, nn.Module]) -> tuple[float, float]:
    """(min_depth, max_depth) in metres of a preset (or a model's preset); NYU's (0.1, 10) when unknown."""
    if isinstance(preset, nn.Module):
        preset = getattr(preset, "preset", None)
    if isinstance(preset, str):
        preset = get_preset(preset)
    if not isinstance(preset, Preset):
        return 0.1, 10.0
    return float(preset.min_depth), float(preset.max_depth)


def count_params(variables: dict) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(variables.get("params", variables)))
