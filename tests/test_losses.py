"""Loss values on hand-computed cases."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from unet import losses


def test_bce_known_values():
  # logits 0 -> p = 0.5 -> -log(0.5) whatever the target.
  logits = jnp.zeros((1, 2, 2, 1))
  assert losses.bce(logits, jnp.array([[[0, 1], [1, 0]]]))[0] == pytest.approx(math.log(2))
  # logit 2, target 1: log(1 + e^-2); logit 2, target 0: log(1 + e^2). Mean of the two.
  logits = jnp.array([[[[2.0], [2.0]]]])
  target = jnp.array([[[1, 0]]])
  expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(2))) / 2
  assert losses.bce(logits, target)[0] == pytest.approx(expected, rel=1e-6)


def test_bce_is_stable_for_huge_logits():
  logits = jnp.array([[[[1e4], [-1e4]]]])
  assert losses.bce(logits, jnp.array([[[1, 0]]]))[0] == pytest.approx(0.0, abs=1e-6)
  assert losses.bce(logits, jnp.array([[[0, 1]]]))[0] == pytest.approx(1e4, rel=1e-6)


def test_dice_perfect_prediction_is_zero():
  target = jnp.array([[[1, 0], [1, 1]]])
  logits = jnp.where(target[..., None] == 1, 50.0, -50.0)
  assert losses.dice(logits, target)[0] == pytest.approx(0.0, abs=1e-6)


def test_dice_hand_computed():
  # p = sigmoid(0) = 0.5 everywhere on 4 pixels, 2 foreground, smooth 1:
  # 1 - (2 * 1 + 1) / (2 + 2 + 1) = 0.4
  target = jnp.array([[[1, 0], [1, 0]]])
  assert losses.dice(jnp.zeros((1, 2, 2, 1)), target)[0] == pytest.approx(0.4)
  # smooth 0, all-wrong confident prediction: loss 1.
  logits = jnp.where(target[..., None] == 1, -50.0, 50.0)
  assert losses.dice(logits, target, smooth=0.0)[0] == pytest.approx(1.0, abs=1e-6)


def test_losses_are_per_example():
  target = jnp.array([[[1, 1]], [[0, 0]]])
  logits = jnp.array([[[[50.0], [50.0]]], [[[0.0], [0.0]]]])
  out = losses.per_example_loss("bce_dice", "binary", logits, target)
  assert out.shape == (2,)
  assert out[0] == pytest.approx(0.0, abs=1e-5)
  # example 2: bce = log 2; dice = 1 - 1 / (1 + 0 + 1) = 0.5
  assert out[1] == pytest.approx(math.log(2) + 0.5, rel=1e-6)


def test_trimap_losses():
  target = jnp.array([[[0, 1, 2]]])
  logits = jnp.zeros((1, 1, 3, 3))
  assert losses.per_example_loss("bce", "trimap", logits, target)[0] == pytest.approx(math.log(3))
  # uniform probs 1/3: per class sum(p t) = 1/3, sum(p) = 1, sum(t) = 1:
  # 1 - (2/3 + 1) / (2 + 1) = 4/9 for every class.
  assert losses.per_example_loss("dice", "trimap", logits, target)[0] == pytest.approx(4 / 9)
  perfect = 50.0 * np.eye(3)[None, None]
  assert losses.multiclass_dice(jnp.asarray(perfect), target)[0] == pytest.approx(0, abs=1e-6)


def test_unknown_loss_is_named():
  with pytest.raises(ValueError, match="seg.loss='focal'"):
    losses.per_example_loss("focal", "binary", jnp.zeros((1, 1, 1, 1)), jnp.zeros((1, 1, 1)))
