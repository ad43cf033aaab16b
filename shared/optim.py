"""Optimizer and learning-rate schedule from `config.optimizer`."""

from __future__ import annotations

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


def make_optimizer(cfg, steps_per_epoch: int, total_steps: int):
  """Returns `(tx, schedule)`; the schedule is returned too so the loop can log the rate."""
  schedule = make_schedule(cfg, steps_per_epoch, total_steps)
  if cfg.name == "adam":
    tx = optax.adam(schedule)
  elif cfg.name == "adamw":
    tx = optax.adamw(schedule, weight_decay=cfg.weight_decay)
  elif cfg.name == "sgd":
    # Weight decay as an L2 term added to the gradient before momentum (the classic SGD form
    # that the fast CIFAR-10 recipes tune their rates for).
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay),
                     optax.sgd(schedule, momentum=cfg.momentum,
                               nesterov=bool(cfg.get("nesterov", False))))
  else:
    raise ValueError(f"optimizer.name={cfg.name!r}; allowed: 'adam', 'adamw', 'sgd'")
  if cfg.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), tx)
  return tx, schedule
