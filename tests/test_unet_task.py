"""The UNet task's module-level functions: targets from trimaps, predictions from logits, the
eval sums' padding mask and the summary, on arrays small enough to check by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import run_fast

from configs import unet as unet_configs
from unet import task as unet_task

TRIMAP = np.array([[1, 2], [3, 1]], np.uint8)   # 1 pet, 2 background, 3 border


def _seg(mode, foreground=(1, 3), loss="bce"):
  return unet_task.Segmentation(mode=mode, foreground_classes=foreground, loss=loss,
                                dice_smooth=1.0)


def test_targets_binary_and_trimap():
  np.testing.assert_array_equal(unet_task.targets(_seg("binary"), TRIMAP), [[1, 0], [1, 1]])
  np.testing.assert_array_equal(unet_task.targets(_seg("binary", (1,)), TRIMAP),
                                [[1, 0], [0, 1]])
  np.testing.assert_array_equal(unet_task.targets(_seg("trimap"), TRIMAP), [[0, 1], [2, 0]])


def test_predict_binary_by_sign_and_trimap_by_argmax():
  logits = jnp.array([[[0.5], [-0.1]]])
  np.testing.assert_array_equal(unet_task.predict(_seg("binary"), logits), [[1, 0]])
  logits3 = jnp.array([[[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]]])
  np.testing.assert_array_equal(unet_task.predict(_seg("trimap"), logits3), [[1, 0]])


def test_segmentation_from_config_and_foreground_indices():
  seg = unet_task.Segmentation.from_config(unet_configs.get_config("mp_tr_bce"))
  assert seg.mode in unet_task.MODES and isinstance(seg.foreground_classes, tuple)
  assert _seg("binary").num_classes == 2 and _seg("binary").foreground_indices == [1]
  assert _seg("trimap").num_classes == 3 and _seg("trimap").foreground_indices == [0, 2]


def test_summarize_by_hand():
  """Binary confusion [[TN, FP], [FN, TP]] = [[5, 1], [2, 4]]: Dice 8/11, IoU 4/7."""
  sums = {"confusion": np.array([[5, 1], [2, 4]]), "loss_sum": np.float64(3.0),
          "count": np.int64(2)}
  out = unet_task.summarize(_seg("binary"), sums)
  assert out["dice"] == pytest.approx(8 / 11) and out["iou"] == pytest.approx(4 / 7)
  assert out["pixel_accuracy"] == pytest.approx(9 / 12) and out["loss"] == 1.5
  assert out["mean_iou"] == pytest.approx((5 / 8 + 4 / 7) / 2)


def test_eval_sums_leave_out_padding():
  """A tiny UNet: a batch with a padded second example sums to what the first alone does."""
  config = unet_configs.get_config("mp_tr_bce")
  config.model.depth, config.model.base_features = 1, 2
  task = unet_task.build_task(config)
  rng = np.random.default_rng(0)
  image = rng.random((2, 8, 8, 3), np.float32)
  trimap = rng.integers(1, 4, (2, 8, 8)).astype(np.uint8)
  one = {"image": image[:1], "trimap": trimap[:1], "valid": np.ones(1, np.float32)}
  padded = {"image": image, "trimap": trimap, "valid": np.array([1, 0], np.float32)}
  variables = run_fast(task.init, jax.random.key(0), one)
  a, b = run_fast(task.eval_sums, variables, one), run_fast(task.eval_sums, variables, padded)
  np.testing.assert_array_equal(a["confusion"], b["confusion"])
  assert int(np.sum(a["confusion"])) == 64 and float(b["count"]) == 1
  np.testing.assert_allclose(a["loss_sum"], b["loss_sum"], rtol=1e-6)
