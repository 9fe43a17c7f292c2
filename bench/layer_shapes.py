"""Convolution layer shapes of the two DenseDepth networks at a given input size (default 480x640).

Derived from the architectures described in /work/shared/reference/densedepth.md and torchvision's
DenseNet-161 (growth 48, blocks 6/12/36/24, 96 initial features, bottleneck 4x growth) and MobileNetV2
(inverted-residual table t, c, n, s) definitions. Every entry is one convolution as jaxdepth.lutconv
sees it: input NHWC (unpadded), weights HWIO, stride, padding, groups.

    python bench/layer_shapes.py      # prints per-network layer counts and multiply-accumulates
"""
from __future__ import annotations

import dataclasses
from typing import Iterator


@dataclasses.dataclass(frozen=True)
class Layer:
    name: str
    x_shape: tuple[int, int, int, int]   # N, H, W, C
    w_shape: tuple[int, int, int, int]   # KH, KW, C // groups, O
    stride: int = 1
    padding: int = 0
    groups: int = 1

    @property
    def out_hw(self) -> tuple[int, int]:
        _, h, w, _ = self.x_shape
        kh, kw = self.w_shape[:2]
        return ((h + 2 * self.padding - kh) // self.stride + 1,
                (w + 2 * self.padding - kw) // self.stride + 1)

    @property
    def macs(self) -> int:
        ho, wo = self.out_hw
        kh, kw, cg, o = self.w_shape
        return self.x_shape[0] * ho * wo * kh * kw * cg * o

    def batched(self, n: int) -> "Layer":
        return dataclasses.replace(self, x_shape=(n,) + self.x_shape[1:])


def _conv(name, h, w, cin, cout, k=1, stride=1, padding=None, groups=1) -> Layer:
    pad = k // 2 if padding is None else padding
    return Layer(name, (1, h, w, cin), (k, k, cin // groups, cout), stride, pad, groups)


def _down(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def _decoder(blocks: list[tuple[str, int, int, int]], h: int, w: int) -> Iterator[Layer]:
    """UpSample blocks: (name, skip channels + previous channels, out channels, stride of the skip)."""
    for name, cin, cout, s in blocks:
        hs, ws = -(-h // s), -(-w // s)
        yield _conv(f"decoder.{name}.convA", hs, ws, cin, cout, 3)
        yield _conv(f"decoder.{name}.convB", hs, ws, cout, cout, 3)


def densenet161_densedepth(h: int = 480, w: int = 640, conv2_padding: int = 0) -> list[Layer]:
    """DenseNet-161 encoder (torchvision features) + the 2019 DenseDepth decoder (width 0.5)."""
    growth, bn, blocks, c = 48, 4 * 48, (6, 12, 36, 24), 96
    layers = [_conv("features.conv0", h, w, 3, c, 7, 2, 3)]
    h, w = _down(h, 7, 2, 3), _down(w, 7, 2, 3)
    h, w = _down(h, 3, 2, 1), _down(w, 3, 2, 1)  # pool0 (max pool, not a convolution)
    for b, n_layers in enumerate(blocks, start=1):
        for i in range(1, n_layers + 1):
            cin = c + (i - 1) * growth
            layers.append(_conv(f"features.denseblock{b}.denselayer{i}.conv1", h, w, cin, bn, 1))
            layers.append(_conv(f"features.denseblock{b}.denselayer{i}.conv2", h, w, bn, growth, 3))
        c += n_layers * growth
        if b < len(blocks):
            layers.append(_conv(f"features.transition{b}.conv", h, w, c, c // 2, 1))
            c //= 2
            h, w = h // 2, w // 2  # average pool 2x2
    width = c // 2  # 2208 -> 1104
    layers.append(_conv("decoder.conv2", h, w, c, width, 1, padding=conv2_padding))
    full_h, full_w = layers[0].x_shape[1:3]
    skips = [(384, 16), (192, 8), (96, 4), (96, 2)]  # transition2, transition1, pool0, relu0
    blocks_ = []
    prev = width
    for k, (skip, s) in enumerate(skips, start=1):
        out = prev // 2
        blocks_.append((f"up{k}", prev + skip, out, s))
        prev = out
    layers += list(_decoder(blocks_, full_h, full_w))
    layers.append(_conv("decoder.conv3", -(-full_h // 2), -(-full_w // 2), prev, 1, 3))
    return layers


# torchvision MobileNetV2 inverted-residual settings: expansion t, channels c, repeats n, stride s
_MBV2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
         (6, 320, 1, 1)]


def mobilenetv2_densedepth(h: int = 480, w: int = 640) -> list[Layer]:
    """MobileNetV2 encoder (torchvision features) + the alinstein/Depth_estimation decoder (width 0.6)."""
    full_h, full_w = h, w
    layers = [_conv("features.0", h, w, 3, 32, 3, 2)]
    h, w = _down(h, 3, 2, 1), _down(w, 3, 2, 1)
    c, idx = 32, 1
    for t, cout, n, s in _MBV2:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c * t
            prefix = f"features.{idx}.conv"
            if t != 1:
                layers.append(_conv(f"{prefix}.0.0(expand)", h, w, c, hidden, 1))
            layers.append(_conv(f"{prefix}.dw", h, w, hidden, hidden, 3, stride, groups=hidden))
            h, w = _down(h, 3, stride, 1), _down(w, 3, stride, 1)
            layers.append(_conv(f"{prefix}.project", h, w, hidden, cout, 1))
            c, idx = cout, idx + 1
    layers.append(_conv("features.18.0", h, w, c, 1280, 1))
    width = int(1280 * 0.6)  # 768
    layers.append(_conv("decoder.conv2", h, w, 1280, width, 1, padding=1))
    blocks = [("up0", width + 320, 384, 32), ("up1", 384 + 160, 384, 32), ("up2", 384 + 64, 192, 16),
              ("up3", 192 + 32, 96, 8), ("up4", 96 + 24, 96, 4), ("up5", 96 + 16, 48, 2)]
    layers += list(_decoder(blocks, full_h, full_w))
    layers.append(_conv("decoder.conv3", -(-full_h // 2), -(-full_w // 2), 48, 1, 3))
    return layers


NETWORKS = {"densenet161": densenet161_densedepth, "mobilenetv2": mobilenetv2_densedepth}


def summary(layers: list[Layer]) -> dict[str, float]:
    enc = sum(layer.macs for layer in layers if layer.name.startswith("features"))
    dec = sum(layer.macs for layer in layers if layer.name.startswith("decoder"))
    return {"layers": len(layers), "encoder_gmac": enc / 1e9, "decoder_gmac": dec / 1e9}


if __name__ == "__main__":
    for net, build in NETWORKS.items():
        print(net, summary(build()))
