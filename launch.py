"""Trains and evaluates any model family of this project from one config.

  python launch.py --config=configs/unet.py:strconv_ups_dice --workdir=runs/strconv_ups_dice
  python launch.py --config=configs/unet.py:mp_tr_bce,cpu --workdir=runs/mp_tr_bce_cpu \
      --config.train.num_epochs=2
  python launch.py --config=configs/unet.py:mp_tr_bce,cpu --workdir=runs/mp_tr_bce_cpu \
      --config.mode=eval

The config's `task` field names the module that builds the model family, so new families
plug in without touching this file. Re-running with the same workdir resumes training.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from shared import sharding
from shared import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:variant,modifiers].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and pictures.")
flags.mark_flags_as_required(["config", "workdir"])


def _quiet_library_info(record) -> bool:
  """Drops orbax's and jax's own INFO chatter so progress lines stay readable."""
  noisy = ("/orbax/", "/jax/_src/")
  return record.levelno > logging.converter.STANDARD_INFO or not any(
      n in record.pathname for n in noisy)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_quiet_library_info)
  sharding.maybe_initialize_distributed()
  logging.info("config:\n%s", _CONFIG.value)
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
