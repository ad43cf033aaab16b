"""predictions.png: test image | ground truth | prediction, with each image's Dice."""

from __future__ import annotations

import os

import numpy as np

from shared import plotting

# RGB per class index: binary (bg, fg); trimap (pet, background, border).
BINARY_COLORS = np.array([[0, 0, 0], [1, 1, 1]], np.float32)
TRIMAP_COLORS = np.array([[1.0, 0.6, 0.1], [0, 0, 0], [1, 1, 1]], np.float32)


def colorize(classes: np.ndarray, mode: str) -> np.ndarray:
  return (BINARY_COLORS if mode == "binary" else TRIMAP_COLORS)[classes]


def write_predictions(images, true_cls, pred_cls, fg_true, fg_pred, mode: str, path: str):
  """All arrays are numpy: images (N, H, W, 3) in [0, 1]; class maps (N, H, W) ints;
  fg_true / fg_pred (N, H, W) bool foreground masks used for the per-image Dice in row titles."""
  rows, titles = [], []
  for i in range(len(images)):
    inter = np.logical_and(fg_true[i], fg_pred[i]).sum()
    total = fg_true[i].sum() + fg_pred[i].sum()
    dice = 2 * inter / total if total else 1.0
    rows.append([images[i], colorize(true_cls[i], mode), colorize(pred_cls[i], mode)])
    titles.append(f"#{i}\nDice {dice:.2f}")
  plotting.save_image_table(rows, path, col_titles=["image", "ground truth", "prediction"],
                            row_titles=titles)
  return os.path.abspath(path)
