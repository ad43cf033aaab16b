"""Confusion counts and derived metrics against a plain numpy reference."""

import jax.numpy as jnp
import numpy as np
import pytest

from unet import metrics


def _numpy_confusion(true, pred, k, valid):
  cm = np.zeros((k, k), np.int64)
  for b in range(true.shape[0]):
    if valid[b]:
      for t, p in zip(true[b].ravel(), pred[b].ravel()):
        cm[t, p] += 1
  return cm


@pytest.mark.parametrize("k", [2, 3])
def test_confusion_matches_numpy_with_padding(k):
  rng = np.random.default_rng(k)
  true = rng.integers(0, k, (5, 7, 6))
  pred = rng.integers(0, k, (5, 7, 6))
  valid = np.array([1, 1, 1, 0, 0], np.float32)  # a padded last batch
  cm = metrics.confusion_matrix(jnp.asarray(true), jnp.asarray(pred), k, jnp.asarray(valid))
  np.testing.assert_array_equal(np.asarray(cm), _numpy_confusion(true, pred, k, valid))


def test_metrics_over_batches_equal_metrics_of_whole_split():
  rng = np.random.default_rng(0)
  true = rng.integers(0, 2, (10, 8, 8))
  pred = np.where(rng.random((10, 8, 8)) < 0.8, true, 1 - true)
  # Split into batches of 4 (last padded with 2 copies of example 0).
  total = np.zeros((2, 2), np.int64)
  for start in range(0, 10, 4):
    idx = np.arange(start, start + 4)
    valid = (idx < 10).astype(np.float32)
    idx = np.where(idx < 10, idx, 0)
    total += np.asarray(metrics.confusion_matrix(jnp.asarray(true[idx]), jnp.asarray(pred[idx]),
                                                 2, jnp.asarray(valid)))
  got = metrics.summarize_confusion(total, foreground=[1])
  t, p = true.astype(bool), pred.astype(bool)
  tp, fp, fn = (t & p).sum(), (~t & p).sum(), (t & ~p).sum()
  tn = (~t & ~p).sum()
  assert got["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
  assert got["iou"] == pytest.approx(tp / (tp + fp + fn))
  assert got["pixel_accuracy"] == pytest.approx((tp + tn) / t.size)
  assert got["mean_iou"] == pytest.approx((tp / (tp + fp + fn) + tn / (tn + fp + fn)) / 2)


def test_trimap_foreground_collapses_classes():
  # classes: 0 pet, 1 background, 2 border; foreground = pet + border.
  cm = np.array([[5, 1, 2],
                 [3, 20, 0],
                 [1, 2, 4]])
  got = metrics.summarize_confusion(cm, foreground=[0, 2])
  tp = 5 + 2 + 1 + 4
  fp = 3 + 0
  fn = 1 + 2
  assert got["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
  assert got["pixel_accuracy"] == pytest.approx(29 / 38)
  ious = [5 / (8 + 9 - 5), 20 / (23 + 23 - 20), 4 / (7 + 6 - 4)]
  assert got["mean_iou"] == pytest.approx(np.mean(ious))
