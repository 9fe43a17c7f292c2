"""Keras DenseDepth ``.h5`` files (the authors' published ``nyu.h5`` / ``kitti.h5``, Keras 2 or 3) -> Flax.

The encoder family and its configuration come from the weights (the families with Keras support: DenseNet,
ResNet, MobileNetV2 as keras.applications builds them; block counts, growth rate, widths). What the weights
cannot show comes from the file's ``model_config`` when it has one (whole-model saves):

* ``leakyrelu_a``: whether the layer after ``up1_convA`` (the first up block's) is a LeakyReLU (the published
  ``nyu.h5``: no, the DenseDepth ``model.py`` of later commits: yes);
* ``bottleneck_relu``: whether ``conv2`` reads a ReLU of the bottleneck tap (DenseNet's ``relu`` after its
  final ``bn``) or the tap itself;
* ``bn_eps``: the BatchNormalization epsilon (keras.applications: 1.001e-5; MobileNetV2: 1e-3);
* the skip connections: each up block's ``convA`` must read the concatenation of the up-sampled decoder and
  the keras.applications layer the preset expects (DenseNet: ``pool3_pool``, ``pool2_pool``, ``pool1``,
  ``conv1/relu``; the family's ``keras_taps``); another wiring is another architecture and stops the conversion.

Weights-only files have no config: they get the family's registered Keras preset whose shapes match (DenseNet
full-width decoder: ``densedepth_nyu``, no LeakyReLU after convA, as the published files; half width:
``densedepth_half``, with it), overridable with ``--set``. Up-sampling is bilinear with align_corners (the
published files were trained with ``tf.image.resize_images(..., align_corners=True)``; the layer's config does
not record it). Detection never picks a preset with another output convention (``densedepth_kitti``: kitti.h5
holds nothing that tells it from nyu.h5; the user passes ``--preset densedepth_kitti``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..models.family import families, get_family
from ..models.presets import KERAS_BN_EPS, PRESETS, Preset, get_preset
from . import keymap as km
from .core import ConversionError, ConversionReport, assemble, listing
from .keras_h5 import KerasFileError, KerasWeights, consumers, model_graph, read_keras_h5

#: what a weights-only file (no model_config) is assumed to be, besides what its shapes show
WEIGHTS_ONLY_DEFAULTS = "the registered Keras preset with the file's decoder width (densedepth_nyu: no " \
                        "LeakyReLU after convA)"


def _encoder_config(w: dict[str, np.ndarray]) -> dict[str, Any]:
    """The encoder family and configuration from Keras layer names and shapes (families with a Keras rule)."""
    supported = []
    for family in families().values():
        if family.detect_keras is None:
            continue
        supported.append(family.name)
        try:
            cfg = family.detect_keras(w)
        except ValueError as e:
            raise ConversionError(str(e)) from None
        if cfg is not None:
            return cfg
    layers = sorted({k.rsplit("/", 1)[0] for k in w})
    raise ConversionError(f"not a keras.applications DenseNet / ResNet / MobileNetV2 DenseDepth file (no registered "
                          f"encoder family with Keras support ({', '.join(supported)}) recognises its layers, e.g. "
                          f"DenseNet's 'conv1_conv' (Keras 2: 'conv1/conv') and 'conv2_block1_1_conv')\n"
                          + listing("layers found", layers))


def _settings_from_config(kw: KerasWeights, base: Preset) -> tuple[dict[str, Any], dict[str, str]]:
    """(settings, where each came from) read from ``model_config``; checks the decoder's wiring."""
    graph = model_graph(kw.config)
    where = f"read from the Keras {kw.keras_major or '?'} model_config"
    missing = [n for n in ("conv2", "conv3", *(f"{b.name}_convA" for b in base.up_blocks)) if n not in graph]
    if missing:
        raise ConversionError(f"model_config has no DenseDepth decoder layers {missing}; not a DenseDepth model")
    settings: dict[str, Any] = {}
    after_a = consumers(graph, f"{base.up_blocks[0].name}_convA")
    kinds = {layer.class_name for layer in after_a}
    is_leaky = lambda layer: (layer.class_name == "LeakyReLU" or  # noqa: E731
                              layer.config.get("activation") in ("leaky_relu", "LeakyReLU"))
    settings["leakyrelu_a"] = any(is_leaky(layer) for layer in after_a)
    if not after_a or (not settings["leakyrelu_a"] and kinds != {"Conv2D"}):
        raise ConversionError(f"model_config: {base.up_blocks[0].name}_convA feeds {sorted(kinds) or 'nothing'}; "
                              f"expected a LeakyReLU or {base.up_blocks[0].name}_convB")
    taps = base.family_unit().keras_taps(base)
    tap = taps.get(base.taps()[base.tap_index(base.bottleneck)])
    into = graph["conv2"].inbound[0] if graph["conv2"].inbound else None
    prev = graph.get(into) if into is not None else None
    is_relu = prev is not None and (prev.class_name == "ReLU" or (
        prev.class_name == "Activation" and prev.config.get("activation") == "relu"))
    if into == tap:
        settings["bottleneck_relu"] = False
    elif is_relu and prev.inbound[:1] == (tap,):
        settings["bottleneck_relu"] = True
    else:
        raise ConversionError(f"model_config: conv2 reads {into!r}; expected the encoder's {tap!r} or a ReLU of it")
    bn_eps = {float(layer.config["epsilon"]) for layer in graph.values()
              if layer.class_name == "BatchNormalization" and "epsilon" in layer.config}
    if len(bn_eps) > 1:
        raise ConversionError(f"model_config: BatchNormalization layers with different epsilons {sorted(bn_eps)}")
    if bn_eps:
        settings["bn_eps"] = bn_eps.pop()
    wrong = []
    for blk in base.up_blocks:
        conv_a = graph[f"{blk.name}_convA"]
        concat = graph.get(conv_a.inbound[0]) if conv_a.inbound else None
        want = taps.get(base.taps()[base.tap_index(blk.skip)])
        if concat is None or concat.class_name != "Concatenate" or want not in concat.inbound[1:]:
            got = concat.inbound if concat is not None else conv_a.inbound
            wrong.append(f"{blk.name}: concatenates {list(got)}, expected [<up-sampled>, {want!r}]")
    if wrong:
        raise ConversionError("model_config: the decoder's skip connections are not DenseDepth's\n"
                              + listing("mismatched up blocks", wrong))
    return settings, {k: where for k in settings}


def _registered(cfg: dict[str, Any], settings: dict[str, Any], width: Optional[int]) -> list[Preset]:
    """Registered Keras presets with this encoder, these settings and (when known) this decoder width."""
    out = []
    for p in PRESETS.values():
        if (p.min_depth, p.max_depth) != (Preset.min_depth, Preset.max_depth):
            continue   # another output convention (densedepth_kitti): nothing in a file shows it
        if p.bn_eps != settings.get("bn_eps", KERAS_BN_EPS):
            continue
        if not all(getattr(p, k) == v for k, v in cfg.items()):
            continue
        if any(getattr(p, k) != v for k, v in settings.items()):
            continue
        if width is not None and p.decoder_features() != width:
            continue
        out.append(p)
    return out


def detect_keras_preset(kw: KerasWeights) -> tuple[Preset, str, dict[str, str]]:
    """(preset, layout, setting -> source) for a Keras file: a registered preset when one matches, else the
    closest with the detected settings substituted (name ``..._custom``)."""
    w = kw.weights
    cfg = _encoder_config(w)
    layout = "full" if "conv2/kernel" in w else "encoder"
    base = PRESETS[get_family(cfg["encoder"]).keras_preset]
    width = int(w["conv2/kernel"].shape[-1]) if layout == "full" else None
    if layout == "full" and kw.config is not None:
        settings, where = _settings_from_config(kw, base.replace(**cfg))
    else:
        settings, where = {"bn_eps": base.bn_eps}, {"bn_eps": "keras.applications default"}
        if layout == "full":
            match = _registered(cfg, settings, width)
            if match:
                return match[0], layout, {**where, "leakyrelu_a": "weights-only file: default of preset "
                                                                  f"{match[0].name}"}
            settings["leakyrelu_a"] = base.leakyrelu_a
            where["leakyrelu_a"] = f"weights-only file: default {base.leakyrelu_a}"
    match = _registered(cfg, settings, width)
    if match:
        return match[0], layout, where
    preset = base.replace(name="densedepth_custom", **cfg, **settings)
    if width is not None:
        c_in = preset.bottleneck_channels()
        if int(w["conv2/kernel"].shape[-2]) != c_in:
            raise ConversionError(f"conv2 takes {w['conv2/kernel'].shape[-2]} channels but the {preset.encoder} "
                                  f"bottleneck has {c_in}")
        ratio = width / c_in
        preset = preset.replace(decoder_width=ratio if int(c_in * ratio) == width else (width + 0.5) / c_in)
    return preset, layout, where


def convert_keras_weights(kw: KerasWeights, preset: Union[None, str, Preset] = None, *, seed: int = 0,
                          **overrides: Any) -> tuple[Preset, dict, ConversionReport]:
    """(preset, Flax variables, report) from the contents of a Keras ``.h5`` file."""
    detected, layout, where = detect_keras_preset(kw)
    chosen = get_preset(preset if preset is not None else detected, **overrides)
    for key in overrides:
        where[key] = "--set / override"
    if preset is not None:
        where = {k: v for k, v in where.items() if k in overrides}
    kmap = km.keras_keymap(chosen, full=(layout == "full"))
    variables, report = assemble(kw.weights, kmap, chosen, detected=detected, layout=layout, ignored=[],
                                 seed=seed, source="keras")
    report.skipped = kw.weightless_layers()
    report.settings = where
    return chosen, variables, report


def convert_keras_file(src: Union[str, Path], preset: Union[None, str, Preset] = None, *, seed: int = 0,
                       **overrides: Any) -> tuple[Preset, dict, ConversionReport]:
    """(preset, Flax variables, report) of a Keras ``.h5`` file; `ConversionError` on anything unexpected."""
    try:
        kw = read_keras_h5(src)
    except KerasFileError as e:
        raise ConversionError(str(e)) from None
    return convert_keras_weights(kw, preset, seed=seed, **overrides)
