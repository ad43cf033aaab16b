"""The judge classifiers and their training pieces: the residual net's shapes and flip
test-time view, the random translation, SGD with Nesterov momentum and L2, label smoothing.
The loader restoring batch-norm statistics from a real run is tested in tests/test_cvae.py
(the tiny CIFAR-10 end-to-end run trains such a judge)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests.conftest import run_fast

from configs import classifier as classifier_configs
from cvae import augment
from cvae import classifier_task
from cvae import models
from shared import optim


def _tiny_resnet():
  return models.ResNetClassifier(num_classes=10, features=(4, 8, 8, 8))


def test_resnet_judge_shapes_params_and_state():
  model = _tiny_resnet()
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  variables = run_fast(model.init, jax.random.key(1), x)
  assert run_fast(model.apply, variables, x).shape == (2, 10)
  # stem 3*3*3*4; per stage conv (3*3*in*out) + residual conv (3*3*out*out); head 8*10, no
  # biases; every BN has a scale and a bias per channel, and keeps a mean and a variance.
  convs = 27 * 4 + (9 * 4 * 8 + 9 * 64) + 2 * (9 * 64 + 9 * 64)
  bn = 2 * (4 + 3 * (8 + 8))
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
  assert count == convs + bn + 8 * 10
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["batch_stats"])) == bn


def test_without_bn_scale_the_batch_norms_only_shift():
  model = models.ResNetClassifier(num_classes=10, features=(4, 8, 8, 8), bn_scale=False)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  params = run_fast(model.init, jax.random.key(1), x)["params"]
  names = {path[-1].key for path, _ in jax.tree_util.tree_leaves_with_path(params)}
  assert names == {"kernel", "bias"}
  # The same count as above less one scale per BN channel.
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  assert count == 27 * 4 + (9 * 4 * 8 + 9 * 64) + 2 * (9 * 64 + 9 * 64) + (4 + 3 * (8 + 8)) + 80


def test_patch_whitening_decorrelates_2x2_patches():
  # Colour images with strongly correlated neighbouring pixels and channels.
  rng = np.random.default_rng(0)
  base = rng.normal(size=(64, 17, 17, 1)).repeat(2, axis=1).repeat(2, axis=2)[:, :33, :33]
  images = jnp.asarray(0.5 + 0.1 * base * np.array([1.0, 0.8, 0.6])
                       + 0.01 * rng.normal(size=(64, 33, 33, 3)), jnp.float32)
  kernel, bias = models.patch_whitening(images, 24, rel_eps=1e-6)
  assert kernel.shape == (2, 2, 3, 24) and bias.shape == (24,)
  out = jax.lax.conv_general_dilated(images, kernel, (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
  flat = np.asarray(out, np.float64).reshape(-1, 24)
  np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-3)       # the bias centres
  # The 12 directions come out uncorrelated with unit variance; the last 12 are their negatives.
  np.testing.assert_allclose(np.cov(flat[:, :12].T), np.eye(12), atol=2e-2)
  np.testing.assert_allclose(flat[:, 12:], -flat[:, :12], atol=1e-4)
  # A narrower stem keeps the directions of largest variance: the first ones of the full set.
  narrow, _ = models.patch_whitening(images, 8, rel_eps=1e-6)
  np.testing.assert_allclose(np.abs(narrow[..., :4]), np.abs(kernel[..., :4]), rtol=1e-3,
                             atol=1e-3)


def test_whitening_stem_is_state_not_params_and_convs_start_as_identity():
  model = models.ResNetClassifier(num_classes=10, features=(8, 8, 16, 16), stem="whiten")
  x = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
  variables = run_fast(model.init, jax.random.key(1), x)
  # The whitening conv is computed from x (the flip view doubles the batch at eval-time init)
  # and kept out of "params", so neither gradients nor weight decay ever change it.
  kernel, bias = variables["whitening"]["stem"]
  expected_kernel, _ = models.patch_whitening(jnp.concatenate([x, x[:, :, ::-1]]), 8)
  np.testing.assert_allclose(kernel, expected_kernel, rtol=1e-4, atol=1e-4)
  assert "stem" not in variables["params"] and "stem_bn" not in variables["params"]
  # 2x2 VALID stem: 32 -> 31, then 15, 7, 3 after the pools; the logits are finite.
  logits = run_fast(model.apply, variables, x)
  assert logits.shape == (4, 10) and bool(jnp.all(jnp.isfinite(logits)))
  # Partial identity: the 8 -> 16 conv's first 8 filters pass their own input channel through.
  w = np.asarray(variables["params"]["stage1_conv"]["kernel"])
  eye = np.zeros((3, 3, 8, 8))
  eye[1, 1] = np.eye(8)
  np.testing.assert_array_equal(w[..., :8], eye)
  assert np.std(w[..., 8:]) > 0      # the other filters keep their random init


def test_flip_tta_averages_the_image_and_its_mirror():
  model = _tiny_resnet()
  x = jax.random.uniform(jax.random.key(0), (3, 32, 32, 3))
  variables = run_fast(model.init, jax.random.key(1), x)
  plain = models.ResNetClassifier(num_classes=10, features=(4, 8, 8, 8), flip_tta=False)
  tta = run_fast(model.apply, variables, x)
  expected = 0.5 * (run_fast(plain.apply, variables, x)
                    + run_fast(plain.apply, variables, x[:, :, ::-1]))
  np.testing.assert_allclose(tta, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(run_fast(model.apply, variables, x[:, :, ::-1]), tta, rtol=1e-5,
                             atol=1e-6)


def test_shift_tta_adds_the_pair_shifted_one_pixel_each_way():
  x = jax.random.uniform(jax.random.key(0), (3, 32, 32, 3))
  plain = models.ResNetClassifier(num_classes=10, features=(4, 8, 8, 8), flip_tta=False)
  variables = run_fast(plain.init, jax.random.key(1), x)
  shifted = models.ResNetClassifier(num_classes=10, features=(4, 8, 8, 8), shift_tta=True)
  one = lambda v: np.asarray(run_fast(plain.apply, variables, v))
  pair = lambda v: 0.5 * (one(v) + one(v[:, :, ::-1]))
  padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
  up_left, down_right = padded[:, :32, :32], padded[:, 2:, 2:]
  # Row 0 of the up-left view is the reflected row 1: the image moved down-right by 1 px.
  np.testing.assert_array_equal(up_left[:, 1:, 1:], np.asarray(x)[:, :31, :31])
  expected = 0.5 * pair(x) + 0.25 * pair(up_left) + 0.25 * pair(down_right)
  np.testing.assert_allclose(run_fast(shifted.apply, variables, x), expected, rtol=1e-5,
                             atol=1e-6)


def test_random_translate_is_a_crop_of_the_reflect_padded_image():
  images = jnp.arange(2 * 5 * 5, dtype=jnp.float32).reshape(2, 5, 5, 1)
  out = augment.random_translate(jax.random.key(3), images, 2)
  assert out.shape == images.shape
  padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
  for i in range(2):
    crops = [padded[i, r:r + 5, c:c + 5] for r in range(5) for c in range(5)]
    assert any(np.array_equal(np.asarray(out[i]), c) for c in crops)
  np.testing.assert_array_equal(augment.random_translate(jax.random.key(3), images, 0), images)
  # Over many draws every one of the 5 x 5 offsets appears.
  many = augment.random_translate(jax.random.key(4), jnp.repeat(images[:1], 400, 0), 2)
  assert len({np.asarray(m).tobytes() for m in many}) == 25


def test_random_flip_and_view():
  images = jax.random.uniform(jax.random.key(0), (64, 4, 4, 2))
  flipped = augment.random_flip(jax.random.key(1), images)
  same = np.all(np.asarray(flipped == images), axis=(1, 2, 3))
  mirrored = np.all(np.asarray(flipped == images[:, :, ::-1]), axis=(1, 2, 3))
  assert np.all(same | mirrored) and 10 < same.sum() < 54
  np.testing.assert_array_equal(augment.random_view(jax.random.key(2), images, 0, False), images)
  assert augment.random_view(jax.random.key(2), images, 1, True).shape == images.shape


def test_sgd_nesterov_with_l2_one_step_by_hand():
  cfg = ml_collections.ConfigDict({
      "name": "sgd", "learning_rate": 0.1, "schedule": "constant", "warmup_epochs": 0.0,
      "end_lr_fraction": 0.0, "weight_decay": 0.5, "momentum": 0.9, "nesterov": True,
      "grad_clip_norm": 0.0})
  tx, _ = optim.make_optimizer(cfg, 10, 100)
  w = jnp.array([2.0])
  state = tx.init(w)
  g = jnp.array([1.0])
  # g' = g + wd * w = 2; momentum buffer m = g' = 2; Nesterov step = g' + 0.9 m = 3.8.
  updates, state = tx.update(g, state, w)
  np.testing.assert_allclose(updates, [-0.1 * 3.8], rtol=1e-6)
  w = w + updates                                    # 1.62
  updates, _ = tx.update(g, state, w)
  g2 = 1.0 + 0.5 * 1.62                              # 1.81; m = 1.81 + 0.9 * 2 = 3.61
  np.testing.assert_allclose(updates, [-0.1 * (g2 + 0.9 * 3.61)], rtol=1e-5)


def test_bias_lr_scale_steps_biases_faster_with_less_l2_by_hand():
  cfg = ml_collections.ConfigDict({
      "name": "sgd", "learning_rate": 0.1, "schedule": "constant", "warmup_epochs": 0.0,
      "end_lr_fraction": 0.0, "weight_decay": 0.5, "momentum": 0.0, "nesterov": False,
      "grad_clip_norm": 0.0, "bias_lr_scale": 64.0})
  tx, _ = optim.make_optimizer(cfg, 10, 100)
  params = {"bn": {"bias": jnp.array([2.0]), "scale": jnp.array([2.0])},
            "conv": {"kernel": jnp.array([2.0])}}
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # bias: rate 0.1 * 64, L2 0.5 / 64: -6.4 * (1 + 2 / 128); the rest: -0.1 * (1 + 0.5 * 2).
  np.testing.assert_allclose(updates["bn"]["bias"], [-6.4 * (1 + 2 / 128)], rtol=1e-6)
  np.testing.assert_allclose(updates["bn"]["scale"], [-0.2], rtol=1e-6)
  np.testing.assert_allclose(updates["conv"]["kernel"], [-0.2], rtol=1e-6)


def test_label_smoothing_loss_by_hand():
  config = classifier_configs.get_config("cifar10")
  config.model.features = (4, 8, 8, 8)
  config.augment.translate = 0
  task = classifier_task.build_task(config)
  batch = {"image": jnp.zeros((2, 32, 32, 3)), "label": jnp.array([0, 3])}
  variables = run_fast(task.init, jax.random.key(0), batch)
  params = variables.pop("params")
  loss, (_, new_state) = run_fast(task.loss, params, variables, batch, jax.random.key(1))
  logits, _ = run_fast(lambda p, v, b: task_logits(config, p, v, b), params, variables, batch)
  logp = jax.nn.log_softmax(logits)
  # Smoothing 0.2 over 10 classes: 0.82 on the true class, 0.02 on each other one.
  target = np.full((2, 10), 0.02)
  target[0, 0] = target[1, 3] = 0.82
  np.testing.assert_allclose(loss, -np.mean(np.sum(target * logp, -1)), rtol=1e-5)
  # Batch statistics moved (training mode).
  before, after = jax.tree.leaves(variables), jax.tree.leaves(new_state)
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def task_logits(config, params, state, batch):
  model = models.classifier_from_config(config.model, 10)
  return model.apply({"params": params, **state}, batch["image"], train=True,
                     mutable=["batch_stats"])


def test_bad_judge_fields_are_named():
  config = classifier_configs.get_config("cifar10")
  for field, value in (("model.arch", "vit"), ("loss.label_smoothing", 1.0),
                       ("augment.translate", -1), ("model.stem", "patchify"),
                       ("model.features", (25, 64, 256, 256)),
                       ("model.features", (26, 64, 256, 256))):
    bad = classifier_configs.get_config("cifar10")
    bad.model.stem = "whiten"     # (the stem width is checked for the whitening stem)
    group, name = field.split(".")
    bad[group][name] = value
    with pytest.raises(ValueError, match=field):
      classifier_task.check_config(bad)
  classifier_task.check_config(config)
