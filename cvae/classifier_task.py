"""The judge: a small CNN classifier on MNIST or CIFAR-10, trained by the shared loop.

Its test accuracy goes in its own eval.json; the CVAE's eval loads its latest checkpoint (see
`classifier_loader.py`) to measure whether decoded images look like the label they were given.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cvae import input_pipeline
from cvae import models
from cvae import pictures
from shared.task import Task


def build_task(config) -> Task:
  input_pipeline.check_dataset(config.data.name)
  names = input_pipeline.CLASS_NAMES[config.data.name]
  num_classes = len(names)
  model = models.classifier_from_config(config.model, num_classes)

  def init(rng, batch):
    return model.init({"params": rng}, batch["image"], train=False)

  def loss(params, model_state, batch, rng):
    logits = model.apply({"params": params}, batch["image"], train=True, rngs={"dropout": rng})
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return ce.mean(), ({"accuracy": acc}, model_state)

  def eval_sums(variables, batch):
    logits = model.apply(variables, batch["image"], train=False)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {"correct": jnp.sum(correct * batch["valid"]),
            "loss_sum": jnp.sum(ce * batch["valid"]), "count": jnp.sum(batch["valid"])}

  def summarize(sums):
    n = max(float(sums["count"]), 1.0)
    return {"accuracy": float(sums["correct"]) / n, "loss": float(sums["loss_sum"]) / n}

  apply_eval = jax.jit(lambda v, x: model.apply(v, x, train=False))

  def write_pictures(variables, eval_store, workdir, rng):
    del rng  # predictions are deterministic
    n = min(25, len(eval_store))
    batch = eval_store.get(np.arange(n))
    images = batch["image"].astype(np.float32) / 255
    pred = np.asarray(jnp.argmax(apply_eval(jax.device_get(variables), images), -1))
    titles = [f"{names[t]} -> {names[p]}" for t, p in zip(batch["label"], pred)]
    pictures.save_tile_grid(images, titles, os.path.join(workdir, "predictions.png"),
                            title="test images: true -> predicted")

  return Task(load_data=input_pipeline.load_data, init=init, loss=loss, eval_sums=eval_sums,
              summarize=summarize, write_pictures=write_pictures, flip_keys=(),
              image_keys=("image",), curve_metrics=("accuracy",))
