"""The ONE registry of DenseDepth presets, shared by the Flax models, the converter and the CLI.

A `Preset` is plain config data naming an encoder family (`jaxdepth.models.family`: module, feature names,
checkpoint key maps, detection) with its hyper-parameters, which encoder features feed the decoder (by the
family's tap NAMES: ``"transition2"``, ``"block17"``, ``"layer3"``; list indices are still accepted), how wide
the decoder is, and the quirks that differ between the published code bases (``conv2`` padding, whether
``leakyreluA`` is applied, whether the bottleneck is taken after ``norm5`` + ReLU, BatchNorm epsilon).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Optional, Union

import numpy as np

from ..checks import is_count, is_rate

#: torchvision DenseNet: name -> (growth_rate, block_config, num_init_features)
DENSENET_CONFIGS: dict[str, tuple[int, tuple[int, ...], int]] = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}

#: BatchNorm epsilon of keras.applications (DenseNet, ResNet, ...); PyTorch's default is 1e-5
KERAS_BN_EPS = 1.001e-5

#: torchvision MobileNetV2 inverted residual setting: (expand ratio t, channels c, repeats n, stride s)
MOBILENETV2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """torchvision's ``_make_divisible``: round channels to a multiple of ``divisor`` (at most -10%)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclasses.dataclass(frozen=True)
class UpBlock:
    """One decoder block: upsample to the skip feature's size, concat it, convA + convB."""

    name: str              # "up1", ... (the PyTorch attribute name, also the Flax module name)
    skip: Union[str, int]  # the encoder feature it concatenates: a tap name of the family (or a list index)
    divisor: int        # output channels = decoder features // divisor


class PresetError(ValueError):
    """An invalid preset setting (the message names the setting and the values it accepts)."""


class UnknownSettingError(PresetError, TypeError):
    """A preset setting that does not exist (a TypeError too, like an unknown keyword argument)."""


def _is_tap(v: Any) -> bool:
    return (isinstance(v, str) and v != "") or is_count(v, 0)


def _is_up_block(b: Any) -> bool:
    return isinstance(b, UpBlock) and isinstance(b.name, str) and b.name != "" and _is_tap(b.skip) \
        and is_count(b.divisor)


def _normalised(key: str, v: Any) -> Any:
    """Lists as tuples, [name, skip, divisor] lists / dicts as `UpBlock`, numpy scalars as Python numbers."""
    if key == "up_blocks" and isinstance(v, (list, tuple)):
        return tuple(UpBlock(**b) if isinstance(b, dict) and set(b) == {"name", "skip", "divisor"} else
                     UpBlock(*b) if isinstance(b, (list, tuple)) and len(b) == 3 else b for b in v)
    if isinstance(v, (list, tuple)):
        return tuple(int(x) if is_count(x, 0) else x for x in v)
    if isinstance(v, np.bool_):
        return bool(v)
    if is_count(v, 0):
        return int(v)
    if is_rate(v):
        return float(v)
    return v


_BOOL = ("true or false", lambda v: isinstance(v, bool))
_NUMBER = ("a positive finite number", is_rate)
_METRES = ("a positive finite number of metres", is_rate)
_COUNT = ("a positive integer", is_count)
_TEXT = ("a non-empty string", lambda v: isinstance(v, str) and v != "")

#: preset field -> (the values it accepts, is a normalised value one of them)
SETTINGS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "name": _TEXT, "encoder": _TEXT, "description": ("a string", lambda v: isinstance(v, str)),
    "up_blocks": ("a non-empty list of up blocks [name, skip feature, positive divisor]",
                  lambda v: isinstance(v, tuple) and len(v) > 0 and all(map(_is_up_block, v))),
    "bottleneck": ("an encoder feature name (or a non-negative feature index)", _is_tap),
    "bottleneck_relu": _BOOL, "leakyrelu_a": _BOOL, "stride_in_1x1": _BOOL, "conv_bias": _BOOL, "tf_padding": _BOOL,
    "decoder_width": _NUMBER, "bn_eps": _NUMBER, "width_mult": _NUMBER,
    "conv2_padding": ("a non-negative integer", lambda v: is_count(v, 0)),
    "growth_rate": _COUNT, "num_init_features": _COUNT, "bn_size": _COUNT, "round_nearest": _COUNT,
    "block_config": ("a non-empty list of positive integers, e.g. [6,12,24,16]",
                     lambda v: isinstance(v, tuple) and len(v) > 0 and all(map(is_count, v))),
    "input_size": ("null (any size) or [height, width], two positive integers",
                   lambda v: v is None or (isinstance(v, tuple) and len(v) == 2 and all(map(is_count, v)))),
    "max_depth": _METRES, "min_depth": _METRES,
}


def check_setting(key: str, value: Any) -> Any:
    """``value`` as preset setting ``key`` stores it (see `_normalised`); `UnknownSettingError` for a setting
    that does not exist, `PresetError` ``"<key>: expected <accepted values>, got <value>"`` for a bad value."""
    if key not in SETTINGS:
        raise UnknownSettingError(f"unknown preset setting {key!r}; known: {', '.join(sorted(SETTINGS))}")
    accepted, valid = SETTINGS[key]
    v = _normalised(key, value)
    if not valid(v):
        raise PresetError(f"{key}: expected {accepted}, got {_shown(value)}")
    return v


def _shown(value: Any) -> str:
    """``value`` as it would be written after --set (JSON where it can be)."""
    try:
        return json.dumps(value, default=repr)
    except (TypeError, ValueError):
        return repr(value)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A DenseDepth variant. Hashable, so it can be a Flax module attribute."""

    name: str
    encoder: str                                  # encoder family: "densenet" | "mobilenetv2" | "resnet" ...
    up_blocks: tuple[UpBlock, ...]
    bottleneck: Union[str, int]                   # the decoder input: a tap name (or a feature list index)
    bottleneck_relu: bool                         # apply ReLU to it before conv2
    decoder_width: float                          # decoder features = int(bottleneck channels * width)
    conv2_padding: int                            # padding of the 1x1 conv2 (1 in some published code)
    leakyrelu_a: bool                             # whether LeakyReLU(0.2) follows convA
    bn_eps: float = 1e-5                          # BatchNorm epsilon: PyTorch 1e-5, Keras applications 1.001e-5
    # DenseNet encoder (block_config / num_init_features: also ResNet's blocks per stage / stem width)
    growth_rate: int = 32
    block_config: tuple[int, ...] = (6, 12, 24, 16)
    num_init_features: int = 64
    bn_size: int = 4
    # MobileNetV2 encoder
    width_mult: float = 1.0
    round_nearest: int = 8
    # ResNet encoder: the stride of a stage's first block on its 1x1 conv1 (keras.applications' ResNet50 = the
    # original ResNet v1 / Caffe layout) instead of the 3x3 conv2 (torchvision, "v1.5"); conv biases (Keras
    # convolutions before their BatchNorm carry one, torchvision's do not)
    stride_in_1x1: bool = False
    conv_bias: bool = False
    # MobileNetV2 encoder: stride-2 3x3 convolutions pad like TensorFlow / Keras "same" (keras.applications'
    # correct_pad: 0 before and 1 after on an even size, 1 and 1 on an odd one) instead of PyTorch's 1 and 1
    tf_padding: bool = False
    # Native input (H, W) of the trained network; predict resizes inputs to it. None: any size.
    input_size: Optional[tuple[int, int]] = None
    # The output convention (DenseDepth's DepthNorm): metres = max_depth / output, clipped to [min_depth,
    # max_depth]. NYU: 10 m (the code's 1000 cm), 0.1 m; the published kitti.h5: 80 m, 1 m.
    max_depth: float = 10.0
    min_depth: float = 0.1
    description: str = ""

    def __post_init__(self) -> None:
        """Check every setting (`check_setting`; `PresetError` naming the first bad one) and store it normalised."""
        for f in dataclasses.fields(self):
            try:
                object.__setattr__(self, f.name, check_setting(f.name, getattr(self, f.name)))
            except PresetError as e:
                raise PresetError(f"preset {self.name!r}: {e}") from None
        if self.min_depth >= self.max_depth:
            raise PresetError(f"preset {self.name!r}: min_depth ({self.min_depth}) must be less than max_depth "
                              f"({self.max_depth})")

    # -- derived quantities -------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return self.encoder

    def family_unit(self):
        """The registered `jaxdepth.models.family.EncoderFamily` of this preset's encoder."""
        from .family import get_family
        return get_family(self.encoder)

    def taps(self) -> list[str]:
        """Names of the encoder feature list's entries (index 0 = the RGB input)."""
        return self.family_unit().taps(self)

    def tap_index(self, tap: Union[str, int]) -> int:
        """Feature list index of a tap name (an index passes through)."""
        names = self.taps()
        if isinstance(tap, (int, np.integer)):
            if not 0 <= tap < len(names):
                raise PresetError(f"preset {self.name!r}: the {self.encoder} encoder has no feature {tap}; its "
                                  f"features: 0-{len(names) - 1} ({', '.join(names)})")
            return int(tap)
        if tap not in names:
            raise PresetError(f"preset {self.name!r}: the {self.encoder} encoder has no feature {tap!r}; its "
                              f"features: {', '.join(names)}")
        return names.index(tap)

    def feature_channels(self) -> list[int]:
        """Channels of every entry of the encoder feature list (index 0 = the RGB input)."""
        return self.family_unit().feature_channels(self)

    def mobilenet_stem_channels(self) -> int:
        return make_divisible(32 * self.width_mult, self.round_nearest)

    def mobilenet_last_channels(self) -> int:
        return make_divisible(1280 * max(1.0, self.width_mult), self.round_nearest)

    def mobilenet_blocks(self) -> list[tuple[int, int, int, int]]:
        """(in channels, out channels, stride, expand ratio) of inverted residuals features.1 .. features.17."""
        out, c_in = [], self.mobilenet_stem_channels()
        for t, c, n, s in MOBILENETV2_SETTING:
            c_out = make_divisible(c * self.width_mult, self.round_nearest)
            for i in range(n):
                out.append((c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        return out

    def bottleneck_channels(self) -> int:
        return self.feature_channels()[self.tap_index(self.bottleneck)]

    def decoder_features(self) -> int:
        c_in = self.bottleneck_channels()
        n, div = int(c_in * self.decoder_width), max(b.divisor for b in self.up_blocks)
        if n < div:    # an up block would get no channels
            raise PresetError(f"preset {self.name!r}: decoder_width {self.decoder_width} gives {n} decoder features, "
                              f"fewer than the {div} an up block divides them by; expected decoder_width >= "
                              f"{div}/{c_in} ({div / c_in:.4g}) for this encoder")
        return n

    def decoder_channels(self) -> list[tuple[str, int, int]]:
        """(block name, input channels, output channels) of every up block, in order."""
        feats = self.feature_channels()
        out, prev = [], self.decoder_features()
        for blk in self.up_blocks:
            c_out = self.decoder_features() // blk.divisor
            out.append((blk.name, prev + feats[self.tap_index(blk.skip)], c_out))
            prev = c_out
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preset":
        """The inverse of `to_dict` (also for checkpoints written before taps had names: list indices become
        the family's tap names)."""
        d = dict(d)
        d["up_blocks"] = tuple(UpBlock(**b) if isinstance(b, dict) else UpBlock(*b) for b in d["up_blocks"])
        for key in ("block_config", "input_size"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown preset fields: {sorted(unknown)}")
        p = cls(**d)
        names = p.taps()
        name = lambda t: names[t] if isinstance(t, int) else t  # noqa: E731
        return dataclasses.replace(p, bottleneck=name(p.bottleneck),
                                   up_blocks=tuple(dataclasses.replace(b, skip=name(b.skip)) for b in p.up_blocks))

    def replace(self, **overrides: Any) -> "Preset":
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - fields
        if unknown:
            raise UnknownSettingError(f"unknown preset setting(s) {sorted(unknown)}; known: {sorted(fields)}")
        return dataclasses.replace(self, **overrides)


_DENSENET_UP = (UpBlock("up1", "transition2", 2), UpBlock("up2", "transition1", 4), UpBlock("up3", "pool0", 8),
                UpBlock("up4", "relu0", 16))
_MOBILENET_UP = (UpBlock("up0", "block17", 2), UpBlock("up1", "block14", 2), UpBlock("up2", "block8", 4),
                 UpBlock("up3", "block5", 8), UpBlock("up4", "block3", 8), UpBlock("up5", "block1", 16))
_RESNET_UP = (UpBlock("up1", "layer3", 2), UpBlock("up2", "layer2", 4), UpBlock("up3", "layer1", 8),
              UpBlock("up4", "relu", 16))


def _densenet(name: str, arch: Optional[str] = None, **kw: Any) -> Preset:
    growth, blocks, init = DENSENET_CONFIGS[arch or name]
    base = dict(name=name, encoder="densenet", up_blocks=_DENSENET_UP, bottleneck="norm5", bottleneck_relu=True,
                decoder_width=1.0, conv2_padding=0, leakyrelu_a=False, growth_rate=growth, block_config=blocks,
                num_init_features=init, input_size=(480, 640))
    base.update(kw)
    return Preset(**base)


PRESETS: dict[str, Preset] = {
    "densenet161": _densenet(
        "densenet161", bottleneck="denseblock4", bottleneck_relu=False, decoder_width=0.5, conv2_padding=1,
        leakyrelu_a=True,
        description="DenseDepth 2019 code: DenseNet-161, bottleneck = denseblock4 output (no norm5/ReLU), "
                    "conv2 padding 1, leakyreluA applied"),
    "densenet169": _densenet(
        "densenet169", description="DenseDepth current code: DenseNet-169, bottleneck = ReLU(norm5), "
                                   "conv2 padding 0, leakyreluA not applied"),
    "densenet121": _densenet("densenet121", description="DenseNet-121 encoder, densenet169 decoder settings"),
    "densenet201": _densenet("densenet201", description="DenseNet-201 encoder, densenet169 decoder settings"),
    "mobilenetv2": Preset(
        name="mobilenetv2", encoder="mobilenetv2", up_blocks=_MOBILENET_UP, bottleneck="head",
        bottleneck_relu=False,
        decoder_width=0.6, conv2_padding=1, leakyrelu_a=True, input_size=(480, 640),
        description="alinstein/Depth_estimation: MobileNetV2 encoder, six up blocks, ReLU6"),
    "mobilenetv2_lite": Preset(
        name="mobilenetv2_lite", encoder="mobilenetv2", up_blocks=_MOBILENET_UP, bottleneck="head",
        bottleneck_relu=False, decoder_width=0.25, conv2_padding=1, leakyrelu_a=True, width_mult=0.5,
        input_size=(240, 320),
        description="project default: MobileNetV2 x0.5 encoder, decoder width 0.25 (~2.9M params), 240x320"),
    # The authors' Keras files. nyu.h5 / kitti.h5: full-width decoder, no LeakyReLU after convA (their own
    # PyTorch/load_weight_from_keras.py loads nyu.h5 into that model); Keras BatchNorm epsilon 1.001e-5.
    "densedepth_nyu": _densenet(
        "densedepth_nyu", "densenet169", bn_eps=KERAS_BN_EPS,
        description="published Keras nyu.h5 / kitti.h5: DenseNet-169, full-width decoder, no leakyreluA, "
                    "Keras BatchNorm eps 1.001e-5"),
    "densedepth_half": _densenet(
        "densedepth_half", "densenet169", decoder_width=0.5, leakyrelu_a=True, bn_eps=KERAS_BN_EPS,
        description="DenseDepth model.py (Keras, later files): DenseNet-169, half-width decoder, LeakyReLU after "
                    "convA and convB, Keras BatchNorm eps 1.001e-5"),
    # kitti.h5: the same network and file contents as nyu.h5 (DenseDepth's model.py builds the DenseNet with
    # input_shape=(None, None, 3), so nothing in the file tells the two apart: pass --preset densedepth_kitti).
    # Depth range and input size from the authors, not from code in the repository (it has no KITTI loader):
    # utils.py predict() returns clip(DepthNorm(out, maxDepth), minDepth, maxDepth) / maxDepth with
    # DepthNorm(x, maxDepth) = maxDepth / x, and for kitti.h5 the author gives minDepth=1.0, maxDepth=80.0 and
    # "depth = 80 * outputs" in metres (ialhashim/DenseDepth issue #69; #77, #7: 80 m for KITTI), i.e.
    # metres = clip(80 / out, 1, 80); input resized to 384x1248 (issue #12: the KITTI model's input size).
    "densedepth_kitti": _densenet(
        "densedepth_kitti", "densenet169", bn_eps=KERAS_BN_EPS, input_size=(384, 1248), max_depth=80.0,
        min_depth=1.0,
        description="published Keras kitti.h5: densedepth_nyu's network, input 384x1248, metres = 80 / output "
                    "clipped to [1, 80] (pass --preset: the file cannot be told from nyu.h5)"),
    "resnet50": Preset(
        name="resnet50", encoder="resnet", up_blocks=_RESNET_UP, bottleneck="layer4", bottleneck_relu=False,
        decoder_width=0.5, conv2_padding=0, leakyrelu_a=True, block_config=(3, 4, 6, 3), num_init_features=64,
        input_size=(480, 640),
        description="torchvision ResNet-50 encoder (skips relu, layer1-3; bottleneck layer4, 2048 ch), DenseDepth "
                    "decoder width 0.5 with LeakyReLU after convA and convB"),
    # keras.applications encoders with a DenseDepth decoder written in Keras layers (no published weights: the
    # presets a Keras .h5 of these families converts to). 1x1 'same' conv2 = padding 0.
    "keras_resnet50": Preset(
        name="keras_resnet50", encoder="resnet", up_blocks=_RESNET_UP, bottleneck="layer4", bottleneck_relu=False,
        decoder_width=0.5, conv2_padding=0, leakyrelu_a=True, block_config=(3, 4, 6, 3), num_init_features=64,
        bn_eps=KERAS_BN_EPS, stride_in_1x1=True, conv_bias=True, input_size=(480, 640),
        description="keras.applications ResNet50 (v1: stride on the 1x1 conv, conv biases, eps 1.001e-5) with "
                    "resnet50's decoder (conv2 padding 0)"),
    "keras_mobilenetv2": Preset(
        name="keras_mobilenetv2", encoder="mobilenetv2", up_blocks=_MOBILENET_UP, bottleneck="head",
        bottleneck_relu=False, decoder_width=0.6, conv2_padding=0, leakyrelu_a=True, bn_eps=1e-3,
        tf_padding=True, input_size=(480, 640),
        description="keras.applications MobileNetV2 ('same' padding of strided convs, eps 1e-3) with mobilenetv2's "
                    "decoder (conv2 padding 0)"),
}


def list_presets() -> list[str]:
    return list(PRESETS)


def get_preset(preset: "str | Preset", **overrides: Any) -> Preset:
    """A registered preset by name (or a `Preset` passed through), with settings overridden."""
    if isinstance(preset, Preset):
        p = preset
    elif isinstance(preset, str):
        if preset not in PRESETS:
            raise KeyError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        p = PRESETS[preset]
    else:
        raise TypeError(f"preset must be a name or a Preset, got {type(preset).__name__}")
    return p.replace(**overrides) if overrides else p
