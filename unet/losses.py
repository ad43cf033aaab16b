"""Segmentation losses, per example (shape (B,)), so callers can weight out padded examples.

Binary mode: logits (B, H, W, 1), target (B, H, W) in {0, 1}.
Trimap mode: logits (B, H, W, K), target (B, H, W) integer classes in [0, K).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

LOSSES = ("bce", "dice", "bce_dice")


def bce(logits, target):
  """Binary cross-entropy on logits, mean over pixels: max(x,0) - x*t + log(1 + exp(-|x|))."""
  per_pixel = optax.sigmoid_binary_cross_entropy(logits[..., 0], target.astype(logits.dtype))
  return per_pixel.mean(axis=(1, 2))


def soft_dice(probs, target, smooth: float = 1.0):
  """1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s) per example and channel -> mean over channels.

  probs, target: (B, H, W, C) with values in [0, 1].
  """
  inter = jnp.sum(probs * target, axis=(1, 2))
  denom = jnp.sum(probs, axis=(1, 2)) + jnp.sum(target, axis=(1, 2))
  return jnp.mean(1.0 - (2.0 * inter + smooth) / (denom + smooth), axis=-1)


def dice(logits, target, smooth: float = 1.0):
  """Soft Dice loss of the foreground (sigmoid probabilities)."""
  return soft_dice(jax.nn.sigmoid(logits), target[..., None].astype(logits.dtype), smooth)


def cross_entropy(logits, target):
  """Softmax cross-entropy over K classes, mean over pixels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, target).mean(axis=(1, 2))


def multiclass_dice(logits, target, smooth: float = 1.0):
  """Soft Dice averaged over the K classes (softmax probabilities vs one-hot targets)."""
  onehot = jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype)
  return soft_dice(jax.nn.softmax(logits, axis=-1), onehot, smooth)


def per_example_loss(name: str, mode: str, logits, target, smooth: float = 1.0):
  """`name` in {bce, dice, bce_dice}; in trimap mode "bce" is the softmax cross-entropy."""
  ce_fn, dice_fn = (bce, dice) if mode == "binary" else (cross_entropy, multiclass_dice)
  if name == "bce":
    return ce_fn(logits, target)
  if name == "dice":
    return dice_fn(logits, target, smooth)
  if name == "bce_dice":
    return ce_fn(logits, target) + dice_fn(logits, target, smooth)
  raise ValueError(f"seg.loss={name!r}; allowed: 'bce', 'dice', 'bce_dice'")
