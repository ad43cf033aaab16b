"""Trains and evaluates any model family of this project from one config.

  python launch.py --config=configs/unet.py:strconv_ups_dice --workdir=runs/strconv_ups_dice
  python launch.py --config=configs/unet.py:mp_tr_bce,cpu --workdir=runs/mp_tr_bce_cpu \\
      --config.train.num_epochs=2
  python launch.py --config=configs/unet.py:mp_tr_bce,cpu --workdir=runs/mp_tr_bce_cpu \\
      --config.mode=eval

The config's `task` field names the module that builds the model family, so new families
plug in without touching this file. Re-running with the same workdir resumes training.
Problems a user can fix (config, data, workdir, NaN loss, preemption) end with one line on
stderr and a non-zero exit code, not a traceback.
"""

import sys

from shared.process import allocator

if __name__ == "__main__":
  # First, before the imports below take their seconds: restart under tcmalloc if asked and
  # installed (shared/process/allocator.py). An unknown --allocator value is left to absl to report.
  _mode = allocator.mode_from_argv(sys.argv[1:])
  if _mode in allocator.MODES:
    try:
      allocator.maybe_reexec(_mode)
    except ValueError as e:
      print(f"config error: {e}", file=sys.stderr)
      sys.exit(2)

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from shared.process import cli_errors
from shared.process import library_noise
from shared import errors
from shared import sharding
from shared import train
from shared.process import xla_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:variant,modifiers].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics and pictures.")
# Read from argv by the restart above, before absl runs; defined here so that absl validates
# the value and lists it in --help.
flags.DEFINE_enum("allocator", "auto", allocator.MODES,
                  "auto: restart under tcmalloc when it is installed (faster CPU steps, see "
                  "shared/process/allocator.py); tcmalloc: require it; system: glibc malloc.")
flags.mark_flags_as_required(["config", "workdir"])


def _parse_flags(argv):
  """absl's parser, but a bad --config or override ends in one line naming it."""
  try:
    rest = flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    print(f"config error: {cli_errors.describe(e, argv)}", file=sys.stderr)
    sys.exit(2)
  # ml_collections defers a config file that fails to load to the first use of the config.
  try:
    _CONFIG.value.get("task")
  except Exception as e:  # pylint: disable=broad-except
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")
    print(f"config error: --config={spec}: {cli_errors.describe(e, argv).strip()}",
          file=sys.stderr)
    sys.exit(2)
  return rest


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  library_noise.install(logging.get_absl_handler())   # shared/process/library_noise.py
  logging.info("allocator: %s", allocator.describe())
  xla_flags.apply_defaults()   # before JAX's first computation creates the CPU backend
  try:
    # One process of a multi-process job when the environment says so (README "Running on
    # several hosts"); before any computation.
    sharding.maybe_initialize_distributed()
    logging.info("config:\n%s", _CONFIG.value)
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except errors.UserFacingError as e:
    kind = "preempted" if isinstance(e, errors.Preempted) else "error"
    print(f"{kind}: {e}", file=sys.stderr)
    sys.exit(e.exit_code)
  except KeyboardInterrupt:   # Ctrl-C before the run's own signal handling was installed
    print("interrupted: stopped before the run started; nothing was written", file=sys.stderr)
    sys.exit(128 + 2)
  except Exception as e:  # pylint: disable=broad-except
    if jax.process_count() == 1:
      raise
    # In a job of several processes, a failed collective usually means another process died:
    # say so in one line after the traceback. JAX names the process that stopped sending
    # heartbeats and ends this one within JAX_HEARTBEAT_TIMEOUT_SECONDS.
    logging.exception("process %d of %d failed", jax.process_index(), jax.process_count())
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    print(f"error: process {jax.process_index()} of {jax.process_count()} failed: "
          f"{type(e).__name__}: {first[:300]}. If another process of the job died, JAX names it "
          f"below (\"stopped sending heartbeats\") and ends this one within "
          f"{sharding.ENV_HEARTBEAT_TIMEOUT} (default 100 s); re-run the same command on every "
          f"host to resume from the newest committed checkpoint", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
