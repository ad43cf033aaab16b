"""The judge: a CNN classifier on MNIST or CIFAR-10, trained by the shared loop.

Its test accuracy goes in its own eval.json; the CVAE's eval loads its latest checkpoint (see
`classifier_loader.py`) to measure whether decoded images look like the label they were given.
Training augments with random translations (`augment.translate`, on device) and mirror flips
(`augment.flip`, by the data package) and smooths the labels (`loss.label_smoothing`).
Module-level functions of the model and config values, bound by `build_task`.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cvae import augment
from cvae import input_pipeline
from cvae import models
from cvae import pictures
from shared import layers
from shared.errors import ConfigError
from shared.task import Task


def check_config(config) -> None:
  input_pipeline.check_dataset(config.data.name)
  layers.check_impl(config.model.get("conv_impl", "auto"))
  layers.check_dtype(config.model.get("dtype", "float32"))
  if config.model.get("arch", "cnn") not in models.CLASSIFIER_ARCHS:
    raise ConfigError(f"model.arch={config.model.arch!r}; allowed: {models.CLASSIFIER_ARCHS}")
  stem = config.model.get("stem", "conv")
  if stem not in models.CLASSIFIER_STEMS:
    raise ConfigError(f"model.stem={stem!r}; allowed: {models.CLASSIFIER_STEMS}")
  if stem == "whiten" and config.model.get("arch", "cnn") == "resnet":
    channels = input_pipeline.IMAGE_SHAPES[config.data.name][-1]
    stem_width = config.model.features[0]
    if stem_width % 2 or not 2 <= stem_width <= 8 * channels:
      raise ConfigError(f"model.features[0]={stem_width}: the whitening stem needs an even "
                        f"width in [2, {8 * channels}] (2 x the {4 * channels} values of a "
                        f"2x2 patch)")
  if not 0.0 <= config.loss.label_smoothing < 1.0:
    raise ConfigError(f"loss.label_smoothing={config.loss.label_smoothing}; must be in [0, 1)")
  if config.augment.translate < 0:
    raise ConfigError(f"augment.translate={config.augment.translate}; must be >= 0 pixels")


def init(model, rng, batch):
  return model.init({"params": rng}, batch["image"], train=False)


def loss(model, num_classes: int, label_smoothing: float, max_shift: int, params, model_state,
         batch, rng):
  """`Task.loss`: cross-entropy to smoothed labels on randomly translated images, in training
  mode (dropout, batch statistics updated); the batch accuracy as a metric."""
  k_shift, k_dropout = jax.random.split(rng)
  images = augment.random_translate(k_shift, batch["image"], max_shift)
  mutable = list(model_state.keys())
  out = model.apply({"params": params, **model_state}, images, train=True,
                    rngs={"dropout": k_dropout}, mutable=mutable or False)
  logits, new_state = out if mutable else (out, model_state)
  targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], num_classes), label_smoothing)
  ce = optax.softmax_cross_entropy(logits, targets)
  acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
  return ce.mean(), ({"accuracy": acc}, new_state)


def eval_sums(model, variables, batch):
  """`Task.eval_sums`: correct predictions and cross-entropy (unsmoothed) summed over the real
  examples."""
  logits = model.apply(variables, batch["image"], train=False)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
  return {"correct": jnp.sum(correct * batch["valid"]),
          "loss_sum": jnp.sum(ce * batch["valid"]), "count": jnp.sum(batch["valid"])}


def summarize(sums):
  n = max(float(sums["count"]), 1.0)
  return {"accuracy": float(sums["correct"]) / n, "loss": float(sums["loss_sum"]) / n}


def _eval_logits(model, variables, images):
  return model.apply(variables, images, train=False)


def write_pictures(model, class_names, variables, eval_store, workdir, rng):
  """`Task.write_pictures`: predictions.png, the first 25 test images titled true -> predicted."""
  del rng  # predictions are deterministic
  n = min(25, len(eval_store))
  batch = eval_store.get(np.arange(n))
  images = batch["image"].astype(np.float32) / 255
  logits = jax.jit(functools.partial(_eval_logits, model))(jax.device_get(variables), images)
  pred = np.asarray(jnp.argmax(logits, -1))
  titles = [f"{class_names[t]} -> {class_names[p]}" for t, p in zip(batch["label"], pred)]
  pictures.save_tile_grid(images, titles, os.path.join(workdir, "predictions.png"),
                          title="test images: true -> predicted")


def build_task(config) -> Task:
  """The judge's task for `config`; reads no files."""
  check_config(config)
  names = input_pipeline.CLASS_NAMES[config.data.name]
  model = models.classifier_from_config(config.model, len(names))
  return Task(load_data=input_pipeline.load_data, init=functools.partial(init, model),
              loss=functools.partial(loss, model, len(names), float(config.loss.label_smoothing),
                                     int(config.augment.translate)),
              eval_sums=functools.partial(eval_sums, model), summarize=summarize,
              write_pictures=functools.partial(write_pictures, model, names),
              flip_keys=("image",) if config.augment.flip else (),
              image_keys=("image",), curve_metrics=("accuracy",))
