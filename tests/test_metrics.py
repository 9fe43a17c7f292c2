"""NYU depth metrics against hand-computed references (prediction first, ground truth second)."""
import math

import numpy as np
import pytest

from jaxdepth import metrics as M


def test_metrics_hand_computed():
    pred = np.array([[1.0, 2.0], [3.0, 8.0]])
    gt = np.array([[1.0, 1.0], [4.0, 5.0]])
    r = M.compute(pred, gt)
    # ratios max(p/g, g/p): 1, 2, 4/3, 1.6
    assert r["delta1"] == pytest.approx(1 / 4)
    assert r["delta2"] == pytest.approx(2 / 4)   # 1.25^2 = 1.5625 > 4/3
    assert r["delta3"] == pytest.approx(3 / 4)   # 1.25^3 = 1.953 > 1.6, < 2
    assert r["abs_rel"] == pytest.approx((0 + 1 / 1 + 1 / 4 + 3 / 5) / 4)
    assert r["sq_rel"] == pytest.approx((0 + 1 / 1 + 1 / 4 + 9 / 5) / 4)
    assert r["rmse"] == pytest.approx(math.sqrt((0 + 1 + 1 + 9) / 4))
    logs = [0, math.log(2), math.log(3 / 4), math.log(8 / 5)]
    assert r["rmse_log"] == pytest.approx(math.sqrt(sum(v * v for v in logs) / 4))
    assert r["log10"] == pytest.approx(sum(abs(v) / math.log(10) for v in logs) / 4)
    assert r["psnr"] == pytest.approx(10 * math.log10(100 / (11 / 4)))
    assert r["pixels"] == 4


def test_pred_gt_order_matters():
    pred, gt = np.array([2.0]), np.array([1.0])
    assert M.compute(pred, gt)["abs_rel"] == pytest.approx(1.0)
    assert M.compute(gt, pred)["abs_rel"] == pytest.approx(0.5)


def test_invalid_gt_and_mask_ignored():
    pred = np.array([[1.0, 5.0, 2.0, 3.0]])
    gt = np.array([[1.0, 0.0, np.nan, 6.0]])
    r = M.compute(pred, gt)
    assert r["pixels"] == 2
    assert r["abs_rel"] == pytest.approx((0 + 0.5) / 2)
    r2 = M.compute(pred, gt, mask=np.array([[True, True, True, False]]))
    assert r2["pixels"] == 1 and r2["abs_rel"] == 0.0 and r2["psnr"] == float("inf")


def test_crop_mask_eigen_and_scaled():
    m = M.crop_mask((480, 640), M.EIGEN_CROP)
    assert m.sum() == (459 - 20) * (615 - 24) and m[20, 24] and not m[19, 24] and not m[20, 615]
    half = M.crop_mask((240, 320), M.EIGEN_CROP)
    assert half[10, 12] and not half[9, 12] and not half[10, 11]
    assert M.crop_mask((4, 5), None).all()


def test_accumulator_pixels_vs_images():
    rng = np.random.default_rng(0)
    gts = rng.uniform(1, 9, (3, 6, 7))
    preds = gts * rng.uniform(0.7, 1.4, gts.shape)
    gts[0, :2] = 0  # fewer valid pixels in image 0
    acc_p, acc_i = M.Accumulator("pixels"), M.Accumulator("images")
    for p, g in zip(preds, gts):
        acc_p.add(p, g)
        acc_i.add(p, g)
    valid = gts > 0
    assert acc_p.result()["abs_rel"] == pytest.approx(np.mean(np.abs(preds - gts)[valid] / gts[valid]))
    per = [np.mean(np.abs(p - g)[g > 0] / g[g > 0]) for p, g in zip(preds, gts)]
    assert acc_i.result()["abs_rel"] == pytest.approx(np.mean(per))
    batch = M.Accumulator("pixels")
    batch.add(preds, gts)
    assert batch.result()["rmse"] == pytest.approx(acc_p.result()["rmse"])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        M.compute(np.ones((2, 2)), np.ones((2, 3)))
