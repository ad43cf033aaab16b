"""Optimizer and learning-rate schedule from `config.optimizer`."""

from __future__ import annotations

import jax
import optax


def make_schedule(cfg, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  lr = cfg.learning_rate
  if cfg.schedule == "constant":
    return optax.constant_schedule(lr)
  if cfg.schedule == "warmup_cosine":
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=lr * cfg.end_lr_fraction)
  raise ValueError(f"optimizer.schedule={cfg.schedule!r}; allowed: 'warmup_cosine', 'constant'")


def _sgd(cfg, schedule, scale: float = 1.0) -> optax.GradientTransformation:
  """SGD with weight decay as an L2 term added to the gradient before momentum (the classic
  form the fast CIFAR-10 recipes tune their rates for), its rate `scale` times the schedule's
  and its L2 `1 / scale` times, so the decay per step stays the same."""
  rate = schedule if scale == 1.0 else (lambda step: scale * schedule(step))
  return optax.chain(optax.add_decayed_weights(cfg.weight_decay / scale),
                     optax.sgd(rate, momentum=cfg.momentum,
                               nesterov=bool(cfg.get("nesterov", False))))


def bias_labels(params):
  """"bias" for every parameter named `bias`, "other" for the rest (optax.multi_transform)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "bias" if getattr(path[-1], "key", None) == "bias" else "other", params)


def make_optimizer(cfg, steps_per_epoch: int, total_steps: int):
  """Returns `(tx, schedule)`; the schedule is returned too so the loop can log the rate."""
  schedule = make_schedule(cfg, steps_per_epoch, total_steps)
  bias_scale = float(cfg.get("bias_lr_scale", 1.0))
  if bias_scale != 1.0 and cfg.name != "sgd":
    raise ValueError(f"optimizer.bias_lr_scale={bias_scale:g} needs optimizer.name='sgd'")
  if cfg.name == "adam":
    tx = optax.adam(schedule)
  elif cfg.name == "adamw":
    tx = optax.adamw(schedule, weight_decay=cfg.weight_decay)
  elif cfg.name == "sgd" and bias_scale != 1.0:
    tx = optax.multi_transform({"bias": _sgd(cfg, schedule, bias_scale),
                                "other": _sgd(cfg, schedule)}, bias_labels)
  elif cfg.name == "sgd":
    tx = _sgd(cfg, schedule)
  else:
    raise ValueError(f"optimizer.name={cfg.name!r}; allowed: 'adam', 'adamw', 'sgd'")
  if cfg.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  return tx, schedule
