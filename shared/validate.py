"""Config checks that run before anything is compiled, and the resume-compatibility check.

Each failure is one `ConfigError` line: the field, its value, and what is allowed.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import jax
from ml_collections.config_flags import config_path

from shared.errors import ConfigError

# Fields that may differ when a run is resumed: they do not change what is computed.
RESUME_IGNORED = (
    "mode", "allow_config_change", "data.data_dir", "data.download", "data.cache_max_bytes",
    "train.log_every_steps", "train.checkpoint_every_steps", "train.max_to_keep",
    "train.eval_every_epochs", "train.profile_steps", "eval.batch_size", "eval.num_pictures",
    "eval.classifier_workdir",
)
# Fields added after runs were already kept, with the value that stands for what those runs
# computed: a saved config.json without the field resumes as if it held this value.
RESUME_DEFAULTS = {"model.dtype": "float32", "model.stem": "conv", "model.bn_scale": True,
                   "model.critic_wrong_class": False, "model.shift_tta": False,
                   "optimizer.bias_lr_scale": 1.0, "loss.critic_true_encoder_fraction": 0.0}


def _positive_int(value, field: str) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ConfigError(f"{field}={value!r}: must be a positive integer")


def check_common(config) -> None:
  """Fields of `configs/common.py` every task shares."""
  if config.mode not in ("train", "eval"):
    raise ConfigError(f"mode={config.mode!r}: allowed values are 'train', 'eval'")
  for field in ("train.batch_size", "eval.batch_size", "train.num_epochs",
                "train.log_every_steps", "train.eval_every_epochs",
                "train.checkpoint_every_steps", "train.max_to_keep"):
    _positive_int(config_path.get_value(field, config), field)
  if not isinstance(config.seed, int) or isinstance(config.seed, bool) or config.seed < 0:
    raise ConfigError(f"seed={config.seed!r}: must be an integer >= 0")
  profile_steps = config.train.get("profile_steps", 0)
  if not isinstance(profile_steps, int) or isinstance(profile_steps, bool) or profile_steps < 0:
    raise ConfigError(f"train.profile_steps={profile_steps!r}: must be an integer >= 0 "
                      f"(0 = no profile)")
  _check_optimizer(config.optimizer)
  n = jax.device_count()
  for field in ("train.batch_size", "eval.batch_size"):
    value = config_path.get_value(field, config)
    if value % n:
      raise ConfigError(f"{field}={value}: must be divisible by the number of devices ({n}); "
                        f"use a multiple of {n}")
  for field in ("data.limit_train", "data.limit_eval"):
    if config_path.get_value(field, config) < 0:
      raise ConfigError(f"{field}={config_path.get_value(field, config)}: must be >= 0 (0 = the whole split)")


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("warmup_cosine", "constant")


def _check_optimizer(opt) -> None:
  lr = opt.learning_rate
  if not isinstance(lr, (int, float)) or not math.isfinite(lr) or not lr > 0:
    raise ConfigError(f"optimizer.learning_rate={lr!r}: must be a finite positive number")
  if opt.name not in OPTIMIZERS:
    raise ConfigError(f"optimizer.name={opt.name!r}; allowed: {OPTIMIZERS}")
  if opt.schedule not in SCHEDULES:
    raise ConfigError(f"optimizer.schedule={opt.schedule!r}; allowed: {SCHEDULES}")
  scale = opt.get("bias_lr_scale", 1.0)
  if not isinstance(scale, (int, float)) or not math.isfinite(scale) or not scale > 0:
    raise ConfigError(f"optimizer.bias_lr_scale={scale!r}: must be a finite positive number")
  if scale != 1.0 and opt.name != "sgd":
    raise ConfigError(f"optimizer.bias_lr_scale={opt.bias_lr_scale!r}: only sgd has it "
                      f"(optimizer.name={opt.name!r}); leave it at 1")
  ranges = {"warmup_epochs": (0, math.inf), "end_lr_fraction": (0, 1),
            "grad_clip_norm": (0, math.inf), "weight_decay": (0, math.inf),
            "momentum": (0, 1)}
  for name, (low, high) in ranges.items():
    value = opt.get(name, low)
    if not isinstance(value, (int, float)) or not low <= value <= high or math.isnan(value):
      what = "a number >= 0" if high == math.inf else f"a number in [{low}, {high}]"
      raise ConfigError(f"optimizer.{name}={value!r}: must be {what}")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """`{"a": {"b": 1}}` -> `{"a.b": 1}` (ml_collections can apply such a dict, not produce one)."""
  out = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(flatten(value, path + "."))
    else:
      out[path] = value
  return out


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
  """`field: saved -> current` for every field that changes what the run computes."""
  a, b = flatten(saved), flatten(current)
  a.update({k: v for k, v in RESUME_DEFAULTS.items() if k in b and k not in a})
  diffs = []
  for key in sorted(set(a) | set(b)):
    if key in RESUME_IGNORED:
      continue
    # JSON turns tuples into lists; compare through JSON so both sides agree.
    if json.dumps(a.get(key, "<absent>")) != json.dumps(b.get(key, "<absent>")):
      diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
  return diffs


def check_resume(saved: Mapping[str, Any], current: Mapping[str, Any], workdir: str) -> None:
  diffs = config_differences(saved, current)
  if diffs and not current.get("allow_config_change", False):
    raise ConfigError(
        f"workdir {workdir} holds a run with a different config ({'; '.join(diffs)}); use "
        f"another --workdir, or pass --config.allow_config_change=true to resume anyway")
