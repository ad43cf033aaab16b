"""The UNet segmentation task for the shared loop: targets from trimaps, loss, eval sums, pictures.

Module-level functions of the model and the resolved `seg` config (`Segmentation`), so each can
be called and tested alone; `build_task` binds them.
"""

from __future__ import annotations

import dataclasses
import functools
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
  layers.check_dtype(m.get("dtype", "float32"))
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


@dataclasses.dataclass(frozen=True)
class Segmentation:
  """The `seg` config group, resolved: what is segmented and how it is scored."""
  mode: str                                # binary | trimap
  foreground_classes: tuple[int, ...]      # trimap values counted as foreground
  loss: str
  dice_smooth: float

  @classmethod
  def from_config(cls, config) -> Segmentation:
    seg = config.seg
    return cls(mode=seg.mode, foreground_classes=tuple(seg.foreground_classes), loss=seg.loss,
               dice_smooth=seg.dice_smooth)

  @property
  def num_classes(self) -> int:
    return 2 if self.mode == "binary" else 3

  @property
  def foreground_indices(self) -> list[int]:
    """The foreground's class indices (after `targets`), for Dice / IoU."""
    return [1] if self.mode == "binary" else [c - 1 for c in self.foreground_classes]


def targets(seg: Segmentation, mask):
  """Trimap (1/2/3) -> class indices: binary {0 bg, 1 fg}; trimap {0 pet, 1 bg, 2 border}."""
  if seg.mode == "binary":
    return jnp.isin(mask, jnp.asarray(seg.foreground_classes)).astype(jnp.int32)
  return mask.astype(jnp.int32) - 1


def predict(seg: Segmentation, logits):
  """Logits -> class indices: the sign of the single logit (binary), else the argmax."""
  if seg.mode == "binary":
    return (logits[..., 0] > 0).astype(jnp.int32)
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def init(model: models.UNet, rng, batch):
  return model.init({"params": rng}, batch["image"], train=False)


def loss(model: models.UNet, seg: Segmentation, params, model_state, batch, rng):
  """`Task.loss`: the mean per-example loss, in training mode (dropout from `rng`, batch
  statistics updated when the model has them)."""
  mutable = list(model_state.keys())
  out = model.apply({"params": params, **model_state}, batch["image"], train=True,
                    rngs={"dropout": rng}, mutable=mutable or False)
  logits, new_state = out if mutable else (out, model_state)
  per_ex = losses.per_example_loss(seg.loss, seg.mode, logits, targets(seg, batch["trimap"]),
                                   seg.dice_smooth)
  return per_ex.mean(), ({}, new_state)


def eval_sums(model: models.UNet, seg: Segmentation, variables, batch):
  """`Task.eval_sums`: the confusion matrix and the loss summed over the real examples."""
  logits = model.apply(variables, batch["image"], train=False)
  true = targets(seg, batch["trimap"])
  per_ex = losses.per_example_loss(seg.loss, seg.mode, logits, true, seg.dice_smooth)
  return {"confusion": metrics.confusion_matrix(true, predict(seg, logits), seg.num_classes,
                                                batch["valid"]),
          "loss_sum": jnp.sum(per_ex * batch["valid"]),
          "count": jnp.sum(batch["valid"])}


def summarize(seg: Segmentation, sums):
  """`Task.summarize`: Dice / IoU of the foreground, mean IoU, pixel accuracy, mean loss."""
  out = metrics.summarize_confusion(sums["confusion"], seg.foreground_indices)
  out["loss"] = float(sums["loss_sum"] / max(sums["count"], 1))
  return out


def _eval_logits(model: models.UNet, variables, images):
  return model.apply(variables, images, train=False)


def write_pictures(model: models.UNet, seg: Segmentation, num_pictures: int, variables,
                   eval_store, workdir, rng):
  """`Task.write_pictures`: predictions.png for the first `num_pictures` test images."""
  del rng  # predictions are deterministic
  n = min(num_pictures, len(eval_store))
  batch = eval_store.get(np.arange(n))
  images = batch["image"].astype(np.float32) / 255
  logits = jax.jit(functools.partial(_eval_logits, model))(jax.device_get(variables), images)
  true, pred = np.asarray(targets(seg, batch["trimap"])), np.asarray(predict(seg, logits))
  fg_true = np.isin(true, seg.foreground_indices)
  fg_pred = np.isin(pred, seg.foreground_indices)
  pictures.write_predictions(images, true, pred, fg_true, fg_pred, seg.mode,
                             os.path.join(workdir, "predictions.png"))


def build_task(config) -> Task:
  """The UNet task for `config`; reads no files."""
  _check(config)
  seg = Segmentation.from_config(config)
  model = models.from_config(config.model, 1 if seg.mode == "binary" else 3)
  return Task(load_data=input_pipeline.load_data, init=functools.partial(init, model),
              loss=functools.partial(loss, model, seg),
              eval_sums=functools.partial(eval_sums, model, seg),
              summarize=functools.partial(summarize, seg),
              write_pictures=functools.partial(write_pictures, model, seg,
                                               config.eval.num_pictures),
              flip_keys=("image", "trimap"), image_keys=("image",),
              curve_metrics=("dice", "iou", "pixel_accuracy"))
