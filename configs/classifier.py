"""Judge classifier for the CVAE eval: `--config=configs/classifier.py:DATASET[,modifiers]`.

DATASET is `mnist` or `cifar10`. Train it first; the CVAE eval reads its workdir
(`--config.eval.classifier_workdir`, default `runs/classifier_<dataset>`).

Modifiers:
  cpu        budget that finishes in a few minutes on a 2-core CPU
  seed=N     seed for init, data order and dropout
  epochs=N   number of training epochs
Every field can still be overridden with `--config.FIELD=value`.
"""

import ml_collections

from configs import common
from shared import config_args

DATASETS = ("mnist", "cifar10")
MODIFIERS = {"cpu": False, "seed": 0, "epochs": 0}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant, mods = config_args.parse_config_arg(arg, "mnist", MODIFIERS)
  if variant not in DATASETS:
    raise ValueError(f"unknown classifier variant {variant!r}; valid variants: {DATASETS}")

  config = common.base_config()
  config.task = "cvae.classifier_task"
  config.variant = f"classifier_{variant}"
  config.seed = mods["seed"]

  config.data.name = variant

  config.model = ml_collections.ConfigDict()
  config.model.features = (32, 64)
  config.model.hidden = 128
  config.model.dropout_rate = 0.0 if variant == "mnist" else 0.3
  config.model.conv_impl = "auto"   # shared/layers.py (CPU: transposed convs as ordinary convs)

  config.train.batch_size = 128
  config.train.num_epochs = 5 if variant == "mnist" else 20
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 1000
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_epochs = 0.2
  config.eval.batch_size = 500

  if mods["cpu"]:
    config.model.features = (16, 32)
    config.model.hidden = 64
    config.train.num_epochs = 2
    config.train.eval_every_epochs = config.train.num_epochs
  if mods["epochs"]:
    config.train.num_epochs = mods["epochs"]
  return config
