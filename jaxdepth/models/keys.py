"""Checkpoint key-map primitives shared by the encoder families and the converter.

A key map sends one checkpoint tensor name to ``Target(collection, flax_path, transform)``:

* ``conv``: PyTorch Conv2d weight (O, I/groups, KH, KW) -> HWIO kernel (KH, KW, I/groups, O)
* ``depthwise``: Keras DepthwiseConv2D kernel (KH, KW, C, 1) -> grouped HWIO kernel (KH, KW, 1, C)
* ``copy``: everything else (Keras kernels are already HWIO; biases; BatchNorm ``weight``/``gamma`` ->
  ``scale``, running / moving mean and variance -> ``batch_stats`` ``mean`` / ``var``)

Flax names: a BatchNorm that follows a convolution lives inside that convolution's module as ``bn`` (it is
folded into it in the quantized modes); the others keep their own names.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class Target(NamedTuple):
    collection: str               # "params" | "batch_stats"
    path: tuple[str, ...]
    transform: str                # "conv" | "copy"


KeyMap = dict[str, Target]


def transform(value: np.ndarray, kind: str) -> np.ndarray:
    value = np.asarray(value, np.float32)
    if kind == "conv":
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
    if kind == "depthwise":
        return np.ascontiguousarray(value.transpose(0, 1, 3, 2))
    if kind == "copy":
        return value
    raise ValueError(f"unknown transform {kind!r}")


def target_shape(torch_shape: tuple[int, ...], kind: str) -> tuple[int, ...]:
    if kind == "conv":
        o, i, kh, kw = torch_shape
        return (kh, kw, i, o)
    if kind == "depthwise":
        kh, kw, c, m = torch_shape
        return (kh, kw, m, c)
    return tuple(torch_shape)


class Naming(NamedTuple):
    """How a checkpoint format spells a layer's tensors: ``<layer><suffix>``."""

    kernel: str
    kernel_transform: str
    bias: str
    bn: tuple[str, str, str, str]      # scale, shift, running mean, running variance


TORCH = Naming(".weight", "conv", ".bias", (".weight", ".bias", ".running_mean", ".running_var"))
KERAS = Naming("/kernel", "copy", "/bias", ("/gamma", "/beta", "/moving_mean", "/moving_variance"))


def add_conv(km: KeyMap, name: str, flax_path: tuple[str, ...], bias: bool = False, naming: Naming = TORCH) -> None:
    km[name + naming.kernel] = Target("params", (*flax_path, "kernel"), naming.kernel_transform)
    if bias:
        km[name + naming.bias] = Target("params", (*flax_path, "bias"), "copy")


def add_keras_depthwise(km: KeyMap, name: str, flax_path: tuple[str, ...]) -> None:
    """A Keras ``DepthwiseConv2D`` without bias (``<name>/kernel``: Keras 2's ``depthwise_kernel`` is read under
    Keras 3's name), depth multiplier 1."""
    km[name + "/kernel"] = Target("params", (*flax_path, "kernel"), "depthwise")


def add_bn(km: KeyMap, name: str, flax_path: tuple[str, ...], naming: Naming = TORCH) -> None:
    for suffix, (collection, leaf) in zip(naming.bn, (("params", "scale"), ("params", "bias"),
                                                       ("batch_stats", "mean"), ("batch_stats", "var"))):
        km[name + suffix] = Target(collection, (*flax_path, leaf), "copy")


def count_groups(present: Any, pattern: str, first: int = 1, first_member: int = 1) -> list[int]:
    """Members per numbered group, groups from ``first`` on while ``pattern.format(group, first_member)`` is in
    ``present``, members counted up from ``first_member`` (DenseNet blocks' layers, ResNet stages' blocks)."""
    counts, g = [], first
    while pattern.format(g, first_member) in present:
        n = 1
        while pattern.format(g, first_member + n) in present:
            n += 1
        counts.append(n)
        g += 1
    return counts
