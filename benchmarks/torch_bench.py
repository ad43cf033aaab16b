"""Times the PyTorch mirror of a model with the same batch and optimizer (Adam, same lr) as ours.

Eager and channels_last (NHWC memory format) train steps; eval is a no-grad forward + loss in
eval mode (for the CVAE ours also runs the label-adherence passes, so only the UNet eval
columns compare like with like; the CVAE torch eval is left out).
"""

from __future__ import annotations

import time

import torch

from benchmarks import common
from benchmarks import jax_bench
from benchmarks import torch_models


def _model_and_loss(config):
  if config.task == "unet.task":
    model = torch_models.unet_from_config(config.model, 1)
    loss_name, smooth = config.seg.loss, config.seg.dice_smooth

    def loss(m, batch):
      return torch_models.unet_loss(loss_name, m(batch["image"]), batch["target"], smooth)
    return model, loss
  from cvae import input_pipeline, losses  # pylint: disable=g-import-not-at-top
  shape = input_pipeline.IMAGE_SHAPES[config.data.name]
  likelihood = config.loss.likelihood
  out_ch = shape[-1] * losses.OUTPUTS_PER_CHANNEL[likelihood]
  model = torch_models.cvae_from_config(config.model, shape, out_ch, 10)
  rate = float(config.loss.wrong_label_rate)
  adv_weight = float(config.loss.latent_adversary_weight)
  critic_weight = float(config.loss.critic_weight)

  def loss(m, batch):
    y_true = batch["label"]
    # Wrong-label corruption as in cvae/task.py (drawn there even at rate 0).
    mask = torch.rand(y_true.shape) < rate
    y = torch.where(mask, (y_true + torch.randint(1, 10, y_true.shape)) % 10, y_true)
    dec_y = y if config.loss.wrong_label_target == "both" else y_true
    out, mean, logvar = m(batch["image"], y, dec_y)
    total = torch_models.cvae_loss(likelihood, out, mean, logvar, batch["image"])
    if adv_weight:
      total = total + torch_models.latent_adversary_loss(m.latent_head, mean, y_true,
                                                         adv_weight)
    if critic_weight:
      total = total + torch_models.critic_loss(
          m, likelihood, batch["image"], y_true, mean, logvar, critic_weight,
          config.loss.get("critic_batch_fraction", 1.0), config.loss.get("critic_translate", 0),
          config.loss.get("critic_flip", False), out,
          config.loss.get("critic_true_encoder_fraction", 0.0))
    return total
  return model, loss


def _torch_batch(config, batch_size: int, channels_last: bool) -> dict:
  np_batch = jax_bench.synthetic_batch(config, batch_size)
  image = torch.from_numpy(np_batch["image"]).permute(0, 3, 1, 2).contiguous()
  if channels_last:
    image = image.contiguous(memory_format=torch.channels_last)
  if config.task == "unet.task":
    fg = torch.from_numpy(np_batch["trimap"].astype("int64"))
    target = ((fg == 1) | (fg == 3)).float()   # foreground = pet + border (binary mode)
    return {"image": image, "target": target}
  return {"image": image, "label": torch.from_numpy(np_batch["label"].astype("int64"))}


def measure(spec: dict) -> dict:
  if spec.get("torch_threads"):
    torch.set_num_threads(int(spec["torch_threads"]))
  torch.manual_seed(0)
  config = jax_bench.config_for(spec)
  batch_size = spec.get("batch_size") or config.train.batch_size
  channels_last = spec.get("channels_last", False)
  model, loss_fn = _model_and_loss(config)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
  opt = torch.optim.Adam(model.parameters(), lr=config.optimizer.learning_rate)
  batch = _torch_batch(config, batch_size, channels_last)

  def one_step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    opt.step()
    return loss

  model.train()
  t0 = time.perf_counter()
  one_step()
  first_call_s = time.perf_counter() - t0
  for _ in range(spec.get("warmup", 2)):
    one_step()
  step_s, times = common.median_time(one_step, spec["steps"])
  framework = "torch_channels_last" if channels_last else "torch"
  if spec.get("allocator") == "tcmalloc":
    framework += "_tcmalloc"
  result = {"framework": framework,
            "num_params": torch_models.count_params(model), "batch_size": batch_size,
            "first_call_s": first_call_s, "step_s": step_s, "step_s_all": times,
            "images_per_s": batch_size / step_s, "torch_threads": torch.get_num_threads()}
  if spec.get("eval", True) and config.task == "unet.task":
    eval_bs = spec.get("eval_batch_size") or config.eval.batch_size
    eval_batch = _torch_batch(config, eval_bs, channels_last)
    model.eval()

    @torch.no_grad()
    def one_eval():
      loss_fn(model, eval_batch)

    one_eval()
    eval_s, _ = common.median_time(one_eval, max(3, spec["steps"] // 4))
    result.update({"eval_batch_size": eval_bs, "eval_step_s": eval_s,
                   "eval_images_per_s": eval_bs / eval_s})
  return result
