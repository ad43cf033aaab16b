"""PNG outputs every family uses: learning curves and labelled image grids (matplotlib, Agg)."""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from shared import metric_writer


def _latest_per_step(records: list[dict], kind: str) -> list[dict]:
  """A resumed run may log a step twice; keep the last record of each step."""
  by_step = {r["step"]: r for r in records if r.get("kind") == kind}
  return [by_step[s] for s in sorted(by_step)]


def plot_curves(metrics_path: str, out_path: str, eval_keys: Sequence[str],
                train_keys: Sequence[str] = ("loss",)) -> None:
  """Train metrics (left) and eval metrics (right) against step, from metrics.jsonl."""
  records = metric_writer.read_metrics(metrics_path)
  train, evals = _latest_per_step(records, "train"), _latest_per_step(records, "eval")
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for key in train_keys:
    pts = [(r["step"], r[key]) for r in train if key in r]
    if pts:
      axes[0].plot(*zip(*pts), label=f"train {key}")
  axes[0].set_xlabel("step")
  axes[0].set_title("training")
  for key in eval_keys:
    pts = [(r["step"], r[key]) for r in evals if key in r]
    if pts:
      axes[1].plot(*zip(*pts), marker="o", label=key)
  axes[1].set_xlabel("step")
  axes[1].set_title("evaluation (test split)")
  for ax in axes:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend()
  fig.tight_layout()
  fig.savefig(out_path, dpi=100)
  plt.close(fig)


def save_image_table(rows: Sequence[Sequence[np.ndarray]], path: str,
                     col_titles: Sequence[str] = (), row_titles: Sequence[str] = (),
                     cmaps: Sequence[str | None] = (), tile_inches: float = 1.6) -> None:
  """Saves a table of images: rows x columns, optional titles; grayscale tiles use `cmaps[col]`.

  Images are HxW or HxWx{1,3} arrays with values in [0, 1] (or small integer class maps with a
  colormap).
  """
  n_rows, n_cols = len(rows), max(len(r) for r in rows)
  fig, axes = plt.subplots(n_rows, n_cols, figsize=(tile_inches * n_cols, tile_inches * n_rows),
                           squeeze=False)
  for i, row in enumerate(rows):
    for j in range(n_cols):
      ax = axes[i][j]
      ax.axis("off")
      if j >= len(row):
        continue
      img = np.asarray(row[j])
      if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
      cmap = cmaps[j] if j < len(cmaps) else None
      if img.ndim == 2:
        ax.imshow(img, cmap=cmap or "gray", interpolation="nearest",
                  vmin=0 if cmap is None else None, vmax=1 if cmap is None else None)
      else:
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
      if i == 0 and j < len(col_titles):
        ax.set_title(col_titles[j], fontsize=9)
      if j == 0 and i < len(row_titles):
        ax.text(-0.05, 0.5, row_titles[i], transform=ax.transAxes, ha="right", va="center",
                fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
