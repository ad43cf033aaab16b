"""CVAE pictures: labelled tile grids (wrong labels, iterations, label swaps).

Each picture is first built as a *layout* (a list of tiles: grid position, image, title) by a
pure numpy function, so tests can check the grid on arrays; `render` only draws a layout.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

from shared import plotting


@dataclasses.dataclass
class Tile:
  row: int
  col: int
  image: np.ndarray   # (H, W, C) in [0, 1]
  title: str


def grid(images: Sequence[np.ndarray], titles: Sequence[str], cols: int = 5,
         col_offset: int = 0) -> list[Tile]:
  """Row-major tiles: image i goes to (i // cols, col_offset + i % cols)."""
  if len(images) != len(titles):
    raise ValueError(f"{len(images)} images but {len(titles)} titles")
  return [Tile(i // cols, col_offset + i % cols, np.asarray(im), t)
          for i, (im, t) in enumerate(zip(images, titles))]


def render(tiles: Sequence[Tile], path: str, title: str = "", tile_inches: float = 1.3) -> None:
  rows = max(t.row for t in tiles) + 1
  cols = max(t.col for t in tiles) + 1
  fig, axes = plt.subplots(rows, cols, figsize=(tile_inches * cols, tile_inches * rows + 0.4),
                           squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for t in tiles:
    ax = axes[t.row][t.col]
    img = np.clip(t.image, 0, 1)
    if img.ndim == 3 and img.shape[-1] == 1:
      ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
      ax.imshow(img, interpolation="nearest")
    ax.set_title(t.title, fontsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=90)
  plt.close(fig)


def save_tile_grid(images, titles, path: str, title: str = "", cols: int = 5) -> None:
  render(grid(images, titles, cols), path, title)


def wrong_label_layout(inputs, decoded, true, given, names, cols: int = 5) -> list[Tile]:
  """Inputs (titled with their true class) on the left, decoded-with-the-wrong-label on the
  right (titled `true -> given`), one empty column between the two grids."""
  left = grid(inputs, [f"input: {names[t]}" for t in true], cols)
  right = grid(decoded, [f"{names[t]} -> {names[g]}" for t, g in zip(true, given)], cols,
               col_offset=cols + 1)
  return left + right


def iteration_layout(start, steps, true: int, given: int, names, cols: int = 5) -> list[Tile]:
  """The start image, then every step of feeding the output back in with the same label."""
  images = [start] + list(steps)
  titles = [f"input ({names[true]})"] + [f"step {i + 1} ({names[given]})"
                                         for i in range(len(steps))]
  return grid(images, titles, cols)


def save_label_swap_matrix(inputs, decoded, true, names, path: str) -> None:
  """decoded: (N, K, H, W, C), image n decoded with label k; one row per input image."""
  rows = [[inputs[n]] + [decoded[n, k] for k in range(decoded.shape[1])]
          for n in range(len(inputs))]
  plotting.save_image_table(rows, path, col_titles=["input"] + [str(x) for x in names],
                            row_titles=[f"true: {names[t]}" for t in true], tile_inches=1.1)
