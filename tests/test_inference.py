"""jaxdepth.inference helpers that need no model: the degenerate-depth check and the run-size rule."""
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
