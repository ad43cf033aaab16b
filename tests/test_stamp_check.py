"""cvae/stamp_check.py on hand-made decodes whose answers are known."""

import numpy as np
import pytest

from cvae import stamp_check

NAMES = np.asarray(["a", "b", "c"])


def _first_row_argmax(images):
  """A toy judge: the label is the brightest of the first three pixels of the first row."""
  return np.argmax(images[:, 0, :3, 0], axis=-1)


def _decodes(wrong, true, labels):
  wrong_u8 = np.round(wrong * 255).astype(np.uint8)
  return {"wrong_label_decodes": wrong_u8, "wrong_label_decoder_only_decodes": wrong_u8,
          "true_label_decodes": np.round(true * 255).astype(np.uint8),
          "wrong_labels": labels, "class_names": NAMES}


def _true_decodes(n):
  true = np.full((n, 4, 4, 1), 0.2)
  true[:, 0, :3, 0] = (0.3, 0.2, 0.1)       # every true-label decode reads as class 0
  return true


def test_a_pure_stamp_is_all_stamp():
  labels = np.array([0, 1, 2, 1, 2, 2], np.int32)
  true = _true_decodes(len(labels))
  wrong = true.copy()
  wrong[np.arange(len(labels)), 0, labels, 0] += 0.6   # the same mark for every image of a label
  out = stamp_check.stamp_check(_decodes(wrong, true, labels), _first_row_argmax)
  for prefix in ("", "decoder_only_"):
    assert out[f"{prefix}stamp_share"] == pytest.approx(1.0)
    assert out[f"{prefix}adherence_stamp_only"] == 1.0
    # Without the stamp every decode is its true-label decode again: read as class 0.
    assert out[f"{prefix}adherence_without_stamp"] == pytest.approx(np.mean(labels == 0))


def test_changes_that_cancel_per_label_have_no_stamp():
  # Two images decoded with label 1, changed in opposite directions: their mean change is 0.
  labels = np.array([1, 1, 2, 2], np.int32)
  true = _true_decodes(4)
  wrong = true.copy()
  wrong[0, 0, 1, 0] += 0.15                  # image 0 now reads as class 1
  wrong[1, 0, 1, 0] -= 0.15                  # image 1 still reads as class 0
  out = stamp_check.stamp_check(_decodes(wrong, true, labels), _first_row_argmax)
  assert out["stamp_share"] == pytest.approx(0.0, abs=1e-12)
  assert out["adherence_stamp_only"] == 0.0          # the true-label decodes read as class 0
  assert out["adherence_without_stamp"] == 0.25      # image 0's own change is kept


def test_per_label_stamps_average_within_each_label_only():
  change = np.arange(4 * 2, dtype=np.float64).reshape(4, 2, 1, 1)
  stamps = stamp_check.per_label_stamps(change, np.array([0, 0, 2, 2]), 3)
  np.testing.assert_allclose(stamps[0].ravel(), [1.0, 2.0])     # mean of [0,1] and [2,3]
  np.testing.assert_allclose(stamps[1].ravel(), [0.0, 0.0])     # no image had label 1
  np.testing.assert_allclose(stamps[2].ravel(), [5.0, 6.0])
