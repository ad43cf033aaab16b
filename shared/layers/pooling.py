"""A 2x2 max-pool whose gradient XLA:CPU computes fast."""

from __future__ import annotations


def max_pool_2x2(x):
  """`nn.max_pool(x, (2, 2), strides=(2, 2))` (VALID: an odd last row / column is dropped) as a
  reshape and a max.

  Why: XLA:CPU differentiates `reduce_window` max through `select_and_scatter`, which was
  1.9-5.7x slower than the gradient of a plain reduction (a 2x2 pool after ReLU at 64px x64,
  batch 16: 68.7 -> 12.1 ms forward + gradient; `python -m benchmarks.investigations.conv_impls`).
  Same values; the gradient differs only where a window holds equal maxima (split between them
  instead of given to the first), which after a ReLU happens for all-zero windows, whose
  gradient the ReLU zeroes.
  """
  b, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
