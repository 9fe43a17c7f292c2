"""jaxdepth.inference helpers: the degenerate-depth check, the run-size rule, reusing a stored calibration."""
import numpy as np

from jaxdepth import inference


def test_check_depth_flags_nan_constant_and_clipped_outputs():
    rng = np.random.default_rng(0)
    good = rng.uniform(0.5, 8, (2, 30, 40)).astype(np.float32)
    assert inference.check_depth(good).problems == ()
    const = np.full((30, 40), 0.1, np.float32)                  # e.g. mul8u_197B on every layer
    assert inference.check_depth(const).problems == ("constant", "clipped_min")
    far = good.copy()
    far[:, :, :39] = 10.0                                         # 97.5 % at the 10 m bound
    c = inference.check_depth(far)
    assert c.problems == ("clipped_max",) and c.at_max == 2 * 30 * 39
    some_nan = good.copy()
    some_nan[0, :2] = np.nan
    c = inference.check_depth(some_nan)
    assert c.problems == ("nan",) and c.non_finite == 80 and "80 of 2400" in c.describe()
    assert inference.check_depth(np.full((4, 4), np.nan)).problems == ("all_nan",)
    both = inference.check_depth(const) + inference.check_depth(good)   # batches combine
    assert both.pixels == 1200 + 2400 and both.problems == () and both.lo == np.float32(0.1)


def test_run_size_rule():
    assert inference.run_size((120, 160), (480, 640)) == (120, 160)
    assert inference.run_size(None, (470, 650)) == (448, 640)
    assert inference.run_size(None, (20, 20)) == (32, 32)


def test_compile_kernels_ahead_registers_the_handlers_a_plan_needs(monkeypatch):
    """The head start on a first run registers (so starts compiling) the numba FFI handlers of the plan's
    table dtype for wstat and direct, dwrows only for a model with depthwise kernels that ``auto`` would
    give to dwrows; nothing for a table with an int8 plan (lowrank runs most layers) or an all-float plan."""
    import dataclasses

    from jaxdepth.lutconv import ffi_bridge, registry

    asked: list[tuple[str, str]] = []
    monkeypatch.setattr(ffi_bridge.FfiKernel, "register", lambda self, kind: asked.append((self.name, kind)))
    dense = {"params": {"conv": {"kernel": np.zeros((3, 3, 8, 16))}}}
    depthwise = {"params": {"block": {"dw": {"kernel": np.zeros((3, 3, 1, 16))}}}}
    inference.compile_kernels_ahead({"*": "mul8u_197B"}, dense)
    assert asked == [("jaxdepth_wstat", "u16"), ("jaxdepth_direct", "u16")]
    asked.clear()
    dwrows = registry.get_kernel("dwrows")
    for cost, wanted in ((0.0, True), (1e9, False)):   # dwrows cheapest (AVX-512BW hosts) or not (AVX2)
        monkeypatch.setitem(registry._KERNELS, "dwrows", dataclasses.replace(dwrows, estimate=lambda p, c=cost: c))
        inference.compile_kernels_ahead({"decoder.*": "mul8u_197B", "encoder.*": "mitchell_s8"}, depthwise)
        kernels = ("wstat", "direct") + (("dwrows",) if wanted else ())
        assert sorted(asked) == sorted((f"jaxdepth_{k}", kind) for k in kernels for kind in ("u16", "s16"))
        asked.clear()
    inference.compile_kernels_ahead({"*": "mul8s_1KV8"}, dense)   # an int8 plan: lowrank
    inference.compile_kernels_ahead({"*": "float"}, dense)
    assert asked == []


def test_quantized_reuses_a_stored_calibration_only_for_its_signedness():
    """The plan's default counts like its rules: the bundled model's signed calibration is reused for a signed
    default, and an unsigned default is calibrated anew (as the same plan written as a "*" rule)."""
    from pathlib import Path

    from jaxdepth import models
    from jaxdepth.io import checkpoint, images
    folder = Path(inference.__file__).parent / "assets"
    fm, v, _ = checkpoint.load(folder / "default_model" / "checkpoint")
    x = images.read_rgb(str(folder / "samples" / "synthetic_0.png"))[None, :120, :160].astype(np.float32) / 255
    assert inference.quantized(fm, v, models.Plan.make({}, default="int8"), x)[1] is v
    qm, qv = inference.quantized(fm, v, models.Plan.make({}, default="exact_u8"), x)
    assert qv is not v and qm.plan.default.label == "exact_u8"
    _, rule = inference.quantized(fm, v, {"*": "exact_u8"}, x)
    assert jax_equal(qv["quant"], rule["quant"]) and "x_scale_uint8" in qv["quant"]["decoder"]["conv2"]


def jax_equal(a, b) -> bool:
    import jax
    return jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) and all(
        np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_predictor_takes_uint8_rgb_batches_and_names_other_inputs():
    """Float images in [0, 1] were cast to uint8 (all 0 / 1: a wrong depth map, no error); now every input that
    is not a uint8 (N, H, W, 3) batch is refused with the mix-up named and the conversion to use."""
    import pytest

    from jaxdepth.io.images import ImageConventionError
    from standin import tiny
    model, variables = tiny()
    predict = inference.make_predictor(model, variables)
    u8 = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    want = predict(u8)
    np.testing.assert_array_equal(predict(u8.astype(np.int64)), want)      # integers in 0..255: lossless
    cases = {"(x * 255).round().astype(np.uint8)": u8 / 255.0, "got float32 in [0, 255]": u8.astype(np.float32),
             "add a batch axis, image[None]": u8[0], "images.transpose(0, 2, 3, 1)": u8.transpose(0, 3, 1, 2),
             "np.repeat(x[..., None], 3, axis=-1)": u8[..., 0], "the batch is empty": u8[:0],
             "got int64 in [256, 511]": u8.astype(np.int64) + 256}
    for expect, bad in cases.items():
        with pytest.raises(ImageConventionError, match=r"predict \(from make_predictor\)") as e:
            predict(bad)
        assert expect in str(e.value), (expect, str(e.value))
