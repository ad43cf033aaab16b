"""Segmentation metrics from confusion counts accumulated over the whole split.

Averaging per-batch Dice would weight small batches (the padded last one) like full ones and
is not the Dice of the split; summing an exact integer confusion matrix over all batches and
deriving the scores once at the end is.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(true_cls, pred_cls, num_classes: int, valid):
  """(K, K) int32 counts, rows = true class, columns = predicted, padded examples excluded.

  true_cls, pred_cls: (B, H, W) ints in [0, K); valid: (B,) 1 for real, 0 for padding.
  """
  keep = (valid > 0)[:, None, None, None].astype(jnp.int32)
  t = jax.nn.one_hot(true_cls, num_classes, dtype=jnp.int32) * keep
  p = jax.nn.one_hot(pred_cls, num_classes, dtype=jnp.int32)
  return jnp.einsum("bhwi,bhwj->ij", t, p, preferred_element_type=jnp.int32)


def _safe_div(a, b):
  return float(a) / float(b) if b else float("nan")


def summarize_confusion(cm: np.ndarray, foreground: Sequence[int]) -> dict[str, float]:
  """Dice / IoU of the foreground (union of `foreground` class indices), mean IoU over classes,
  pixel accuracy."""
  cm = np.asarray(cm, np.int64)
  fg = np.zeros(cm.shape[0], bool)
  fg[list(foreground)] = True
  tp = cm[fg][:, fg].sum()
  fp = cm[~fg][:, fg].sum()
  fn = cm[fg][:, ~fg].sum()
  ious = [_safe_div(cm[k, k], cm[k, :].sum() + cm[:, k].sum() - cm[k, k])
          for k in range(cm.shape[0])]
  return {
      "dice": _safe_div(2 * tp, 2 * tp + fp + fn),
      "iou": _safe_div(tp, tp + fp + fn),
      "mean_iou": float(np.nanmean(ious)),
      "pixel_accuracy": _safe_div(np.trace(cm), cm.sum()),
  }
