"""DenseDepth written with Keras itself (test-only): keras.applications.DenseNet169 plus the decoder of the
authors' model.py in Keras layers, an align-corners x2 up-sampling layer, random weights with non-trivial
BatchNorm statistics, and a writer of the Keras 2 HDF5 layout of the published nyu.h5 (Keras 3 cannot write
it: it forbids "/" in layer names). Also keras.applications ResNet50 / MobileNetV2 with a DenseDepth-style
decoder (`family_densedepth`: the skip layers and widths written out here, an align-corners resize to each
skip's size)."""
from __future__ import annotations

import contextlib
import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

import keras  # noqa: E402

#: the keras.applications layers the decoder's up blocks concatenate (DenseDepth model.py)
SKIPS = (("up1", "pool3_pool"), ("up2", "pool2_pool"), ("up3", "pool1"), ("up4", "conv1_relu"))


class AlignCornersUp2D(keras.layers.Layer):
    """x2 bilinear up-sampling with align_corners=True (tf.image.resize_images(..., align_corners=True)), as
    interpolation matrices applied with einsum."""

    @staticmethod
    def _matrix(n: int) -> np.ndarray:
        return AlignCornersResize.matrix(2 * n, n)

    def call(self, x):
        h, w = int(x.shape[1]), int(x.shape[2])
        x = keras.ops.einsum("oh,nhwc->nowc", keras.ops.convert_to_tensor(self._matrix(h)), x)
        return keras.ops.einsum("ow,nhwc->nhoc", keras.ops.convert_to_tensor(self._matrix(w)), x)

    def compute_output_shape(self, shape):
        return (shape[0], 2 * shape[1], 2 * shape[2], shape[3])


class AlignCornersResize(keras.layers.Layer):
    """Bilinear resize with align_corners=True of the first input to the second input's height and width."""

    @staticmethod
    def matrix(n_out: int, n: int) -> np.ndarray:
        """(n_out, n) align-corners interpolation weights."""
        m = np.zeros((n_out, n), np.float32)
        for i in range(n_out):
            src = i * (n - 1) / (n_out - 1) if n_out > 1 else 0.0
            lo = min(int(np.floor(src)), n - 1)
            hi = min(lo + 1, n - 1)
            m[i, lo] += 1.0 - (src - lo)
            m[i, hi] += src - lo
        return m

    def call(self, inputs):
        x, ref = inputs
        h, w, ho, wo = int(x.shape[1]), int(x.shape[2]), int(ref.shape[1]), int(ref.shape[2])
        x = keras.ops.einsum("oh,nhwc->nowc", keras.ops.convert_to_tensor(self.matrix(ho, h)), x)
        return keras.ops.einsum("ow,nhwc->nhoc", keras.ops.convert_to_tensor(self.matrix(wo, w)), x)

    def compute_output_shape(self, shapes):
        x, ref = shapes
        return (x[0], ref[1], ref[2], x[3])


@contextlib.contextmanager
def cheap_initializers():
    """Keras' JAX backend compiles one random kernel per weight shape while building (~30-60 s for a
    DenseNet-169); every weight is overwritten by `randomize` anyway, so build with zeros."""
    import keras.src.backend.jax.random as kjr

    orig = kjr.uniform, kjr.normal, kjr.truncated_normal
    zeros = lambda shape, *a, **k: np.zeros(shape, np.float32)  # noqa: E731
    kjr.uniform = kjr.normal = kjr.truncated_normal = zeros
    try:
        yield
    finally:
        kjr.uniform, kjr.normal, kjr.truncated_normal = orig


def densenet169(height: int, width: int):
    with cheap_initializers():
        return keras.applications.DenseNet169(weights=None, include_top=False, input_shape=(height, width, 3))


def small_densenet(height: int, width: int, blocks=(2, 2, 2, 2)):
    """keras.applications' DenseNet builder with few layers per block: the same layer names, seconds to build
    and compile (for the tests that need many files or a second architecture)."""
    from keras.src.applications.densenet import DenseNet

    with cheap_initializers():
        return DenseNet(list(blocks), include_top=False, weights=None, input_shape=(height, width, 3))


def resnet50(height: int, width: int):
    with cheap_initializers():
        return keras.applications.ResNet50(weights=None, include_top=False, input_shape=(height, width, 3))


def mobilenetv2(height: int, width: int, alpha: float = 1.0):
    with cheap_initializers():
        return keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(height, width, 3),
                                              alpha=alpha)


#: (decoder width, [(up block, keras.applications layer it concatenates, output channels), ...]) of the
#: jaxdepth presets resnet50 / mobilenetv2 written out by hand: ResNet-50 (bottleneck conv5_block3_out, 2048
#: channels, width 0.5) and MobileNetV2 (bottleneck out_relu, 1280 channels, width 0.6; torchvision block i =
#: Keras block i-1)
RESNET50_DECODER = (1024, [("up1", "conv4_block6_out", 512), ("up2", "conv3_block4_out", 256),
                           ("up3", "conv2_block3_out", 128), ("up4", "conv1_relu", 64)])
MOBILENETV2_DECODER = (768, [("up0", "block_16_project_BN", 384), ("up1", "block_13_project_BN", 384),
                             ("up2", "block_7_add", 192), ("up3", "block_4_add", 96), ("up4", "block_2_add", 96),
                             ("up5", "expanded_conv_project_BN", 48)])


def family_densedepth(base, decoder, *, leaky_a: bool = True) -> keras.Model:
    """A DenseDepth decoder on ``base.output``: conv2 1x1, then per up block an align-corners resize to the
    skip's size, concatenation [up-sampled, skip], convA (+ LeakyReLU), convB + LeakyReLU; conv3."""
    filters, blocks = decoder
    with cheap_initializers():
        x = keras.layers.Conv2D(filters, 1, padding="same", name="conv2")(base.output)
        for name, skip, c in blocks:
            s = base.get_layer(skip).output
            x = AlignCornersResize(name=f"{name}_upsampling2d")([x, s])
            x = keras.layers.Concatenate(name=f"{name}_concat")([x, s])
            x = keras.layers.Conv2D(c, 3, padding="same", name=f"{name}_convA")(x)
            if leaky_a:
                x = keras.layers.LeakyReLU(negative_slope=0.2, name=f"{name}_leakyA")(x)
            x = keras.layers.Conv2D(c, 3, padding="same", name=f"{name}_convB")(x)
            x = keras.layers.LeakyReLU(negative_slope=0.2, name=f"{name}_leakyB")(x)
        x = keras.layers.Conv2D(1, 3, padding="same", name="conv3")(x)
    return keras.Model(base.input, x, name="densedepth")


def densedepth(base, *, half: bool, leaky_a: bool, prefix: str = "") -> keras.Model:
    """The DenseDepth decoder on a DenseNet base (``half``: model.py's is_halffeatures; ``leaky_a``: LeakyReLU
    after convA). ``prefix`` keeps decoder layer names distinct when two decoders share one base."""
    filters = int(base.output.shape[-1]) // (2 if half else 1)
    with cheap_initializers():
        x = keras.layers.Conv2D(filters, 1, padding="same", name=prefix + "conv2")(base.output)
        for k, (name, skip) in enumerate(SKIPS, start=1):
            x = AlignCornersUp2D(name=f"{prefix}{name}_upsampling2d")(x)
            x = keras.layers.Concatenate(name=f"{prefix}{name}_concat")([x, base.get_layer(skip).output])
            x = keras.layers.Conv2D(filters // 2 ** k, 3, padding="same", name=f"{prefix}{name}_convA")(x)
            if leaky_a:
                x = keras.layers.LeakyReLU(negative_slope=0.2, name=f"{prefix}{name}_leakyA")(x)
            x = keras.layers.Conv2D(filters // 2 ** k, 3, padding="same", name=f"{prefix}{name}_convB")(x)
            x = keras.layers.LeakyReLU(negative_slope=0.2, name=f"{prefix}{name}_leakyB")(x)
        x = keras.layers.Conv2D(1, 3, padding="same", name=prefix + "conv3")(x)
    return keras.Model(base.input, x, name=prefix + "densedepth")


def randomize(model: keras.Model, seed: int, tiny_var_layers: tuple[str, ...] = ("conv1_bn", "bn")) -> None:
    """He-normal kernels, small biases, BatchNorm gamma / beta / moving statistics like the PyTorch tests; in
    ``tiny_var_layers`` a few channels get variances of 1e-7..1e-5, where epsilon 1e-5 vs 1.001e-5 matters."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            var = (0.5 + 1.5 * rng.random(n)).astype(np.float32)
            if layer.name in tiny_var_layers:
                idx = rng.choice(n, size=max(2, n // 16), replace=False)
                var[idx] = 10.0 ** rng.uniform(-7, -5, idx.size)
            layer.set_weights([(0.5 + rng.random(n)).astype(np.float32), (0.2 * rng.standard_normal(n)).astype(
                np.float32), (0.2 * rng.standard_normal(n)).astype(np.float32), var])
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            k = layer.kernel.shape
            layer.set_weights([(rng.standard_normal(k) * np.sqrt(2.0 / np.prod(k[:2]))).astype(np.float32)])
        elif isinstance(layer, keras.layers.Conv2D):
            k = layer.kernel.shape
            values = [(rng.standard_normal(k) * np.sqrt(2.0 / np.prod(k[:3]))).astype(np.float32)]
            if layer.use_bias:
                values.append((0.05 * rng.standard_normal(k[-1])).astype(np.float32))
            layer.set_weights(values)


def keras2_name(name: str) -> str:
    """Keras 3 spelling -> the Keras 2 layer name keras.applications used (``conv1_conv`` -> ``conv1/conv``)."""
    return "conv1/" + name[len("conv1_"):] if name.startswith("conv1_") else name


def _keras2_config(model: keras.Model) -> dict:
    """The model's config in Keras 2's spelling: "/" names, inbound nodes as [[name, 0, 0, {}], ...]."""
    layers = []
    for layer in model.layers:
        cfg = dict(layer.get_config())
        cfg["name"] = keras2_name(layer.name)
        cfg.pop("dtype", None)
        inbound = []
        if layer._inbound_nodes:
            node = layer._inbound_nodes[0]
            inbound = [[[keras2_name(t._keras_history.operation.name), 0, 0, {}] for t in node.input_tensors]]
        if isinstance(layer, keras.layers.InputLayer):
            inbound = []
        layers.append({"name": keras2_name(layer.name), "class_name": layer.__class__.__name__, "config": cfg,
                       "inbound_nodes": inbound})
    return {"class_name": "Model", "config": {"name": model.name, "layers": layers,
                                              "input_layers": [[keras2_name(model.layers[0].name), 0, 0]],
                                              "output_layers": [[keras2_name(model.layers[-1].name), 0, 0]]}}


def write_keras2_h5(model: keras.Model, path, *, whole_model: bool = True) -> None:
    """The HDF5 layout Keras 2.2 wrote (the published nyu.h5): byte-string name lists, nested groups for
    "/" names, ``kernel:0`` weight names, ``model_config`` JSON (whole-model saves)."""
    with h5py.File(path, "w") as f:
        if whole_model:
            f.attrs["keras_version"] = b"2.2.4"
            f.attrs["backend"] = b"tensorflow"
            f.attrs["model_config"] = json.dumps(_keras2_config(model)).encode("utf8")
            root = f.create_group("model_weights")
        else:
            root = f
        root.attrs["layer_names"] = np.array([keras2_name(la.name).encode("utf8") for la in model.layers])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            name = keras2_name(layer.name)
            group = root.create_group(name)
            weights = layer.trainable_weights + layer.non_trainable_weights   # Keras 2's order
            # Keras 2 named a DepthwiseConv2D's kernel "depthwise_kernel" (Keras 3: "kernel")
            depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
            wnames = [f"{name}/{'depthwise_kernel' if depthwise and w.name == 'kernel' else w.name}:0"
                      for w in weights]
            group.attrs["weight_names"] = np.array([n.encode("utf8") for n in wnames])
            for n, w in zip(wnames, weights):
                group.create_dataset(n, data=np.asarray(w.numpy()))


def write_keras3_weights_h5(model: keras.Model, path) -> None:
    """Keras 3's own legacy-HDF5 weights writer (what ``model.save_weights`` wrote before ``.weights.h5``)."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def load_legacy_weights(model: keras.Model, path) -> None:
    """Keras' own order-based loader of legacy HDF5 weights (whole-model files: their model_weights group)."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "r") as f:
        legacy_h5_format.load_weights_from_hdf5_group(f["model_weights"] if "model_weights" in f else f, model)
