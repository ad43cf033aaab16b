"""The UNet segmentation task for the shared loop: targets from trimaps, loss, eval sums, pictures."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from shared import layers
from shared.errors import ConfigError
from shared.task import Task
from unet import input_pipeline
from unet import losses
from unet import metrics
from unet import models
from unet import pictures

MODES = ("binary", "trimap")


def _check(config) -> None:
  seg = config.seg
  if seg.mode not in MODES:
    raise ConfigError(f"seg.mode={seg.mode!r}; allowed: {MODES}")
  fg = tuple(seg.foreground_classes)
  if not fg or not set(fg) <= set(input_pipeline.TRIMAP_NAMES) or len(set(fg)) == 3:
    raise ConfigError(f"seg.foreground_classes={fg}; a non-empty proper subset of "
                     f"{{1 (pet), 2 (background), 3 (border)}} is allowed")
  if seg.loss not in losses.LOSSES:
    raise ConfigError(f"seg.loss={seg.loss!r}; allowed: {losses.LOSSES}")
  m = config.model
  layers.check_impl(m.get("conv_impl", "auto"))
  for field, value, allowed in (("downsample", m.downsample, models.DOWNSAMPLE),
                                ("upsample", m.upsample, models.UPSAMPLE),
                                ("norm", m.norm, models.NORMS),
                                ("upsample_method", m.upsample_method, ("bilinear", "nearest"))):
    if value not in allowed:
      raise ConfigError(f"model.{field}={value!r}; allowed: {allowed}")
  for field in ("depth", "base_features"):
    if m[field] <= 0:
      raise ConfigError(f"model.{field}={m[field]}: must be a positive integer")
  if not 0 <= m.dropout_rate < 1:
    raise ConfigError(f"model.dropout_rate={m.dropout_rate}: must be in [0, 1)")
  factor = 2**config.model.depth
  if config.data.image_size <= 0:
    raise ConfigError(f"data.image_size={config.data.image_size}: must be a positive integer")
  if config.data.image_size % factor:
    raise ConfigError(f"data.image_size={config.data.image_size} is not divisible by "
                     f"2**model.depth = {factor}")


def build_task(config) -> Task:
  _check(config)
  mode = config.seg.mode
  fg_classes = tuple(config.seg.foreground_classes)
  num_classes = 2 if mode == "binary" else 3
  model = models.from_config(config.model, 1 if mode == "binary" else 3)
  loss_name, smooth = config.seg.loss, config.seg.dice_smooth

  def targets(mask):
    """Trimap (1/2/3) -> class indices: binary {0 bg, 1 fg}; trimap {0 pet, 1 bg, 2 border}."""
    if mode == "binary":
      return jnp.isin(mask, jnp.asarray(fg_classes)).astype(jnp.int32)
    return mask.astype(jnp.int32) - 1

  def predict(logits):
    if mode == "binary":
      return (logits[..., 0] > 0).astype(jnp.int32)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)

  def init(rng, batch):
    return model.init({"params": rng}, batch["image"], train=False)

  def loss(params, model_state, batch, rng):
    mutable = list(model_state.keys())
    out = model.apply({"params": params, **model_state}, batch["image"], train=True,
                      rngs={"dropout": rng}, mutable=mutable or False)
    logits, new_state = out if mutable else (out, model_state)
    per_ex = losses.per_example_loss(loss_name, mode, logits, targets(batch["trimap"]), smooth)
    return per_ex.mean(), ({}, new_state)

  def eval_sums(variables, batch):
    logits = model.apply(variables, batch["image"], train=False)
    true = targets(batch["trimap"])
    per_ex = losses.per_example_loss(loss_name, mode, logits, true, smooth)
    return {"confusion": metrics.confusion_matrix(true, predict(logits), num_classes,
                                                  batch["valid"]),
            "loss_sum": jnp.sum(per_ex * batch["valid"]),
            "count": jnp.sum(batch["valid"])}

  fg_index = [1] if mode == "binary" else [c - 1 for c in fg_classes]

  def summarize(sums):
    out = metrics.summarize_confusion(sums["confusion"], fg_index)
    out["loss"] = float(sums["loss_sum"] / max(sums["count"], 1))
    return out

  apply_eval = jax.jit(lambda v, x: model.apply(v, x, train=False))

  def write_pictures(variables, eval_store, workdir, rng):
    del rng  # predictions are deterministic
    n = min(config.eval.num_pictures, len(eval_store))
    batch = eval_store.get(np.arange(n))
    images = batch["image"].astype(np.float32) / 255
    logits = apply_eval(jax.device_get(variables), images)
    true, pred = np.asarray(targets(batch["trimap"])), np.asarray(predict(logits))
    fg_true = np.isin(true, fg_index)
    fg_pred = np.isin(pred, fg_index)
    pictures.write_predictions(images, true, pred, fg_true, fg_pred, mode,
                               os.path.join(workdir, "predictions.png"))

  return Task(load_data=input_pipeline.load_data, init=init, loss=loss, eval_sums=eval_sums,
              summarize=summarize, write_pictures=write_pictures, flip_keys=("image", "trimap"),
              image_keys=("image",), curve_metrics=("dice", "iou", "pixel_accuracy"))
