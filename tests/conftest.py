"""Shared test fixtures: the repo root, the prepared tfds folder, tiny configs.

The project's packages are imported from the install (`pip install -r requirements.txt` ends
with `-e .`); without it, `python -m pytest` from the repo root finds them there too.
"""

import atexit
import os
import shutil
import tempfile

import pytest
from ml_collections.config_flags import config_path

from shared.process import xla_flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

xla_flags.apply_defaults()   # as launch.py does: tests and subprocesses run the users' XLA flags

# One XLA compilation cache for the session, inherited by every process a test starts: the
# same tiny train step is compiled by many runs (a kill-and-resume chain, every host of a
# multi-process job), and compiling dominates their time. A cache hit is the same executable,
# so results are unchanged; the cache starts empty in every session and is removed at exit.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jax_compilation_cache_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)

def run_fast(f, *args):
  """Runs `f` jitted at XLA optimisation level 0: tests that check shapes and values would
  spend most of their time in the backend optimisations (or in op-by-op dispatch)."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.jit(f).lower(*args).compile({"xla_backend_optimization_level": 0})(*args)


# Beside the repo root: ../shared/tfds holds prepared mnist, cifar10, oxford_iiit_pet.
TFDS_DIR = os.environ.get("TFDS_DATA_DIR") or os.path.join(REPO_ROOT, "..", "shared", "tfds")


@pytest.fixture(scope="session")
def tfds_dir():
  if not os.path.isdir(os.path.join(TFDS_DIR, "oxford_iiit_pet")):
    pytest.skip(f"prepared tfds data not found at {TFDS_DIR} (set TFDS_DATA_DIR)")
  return TFDS_DIR


def tiny_unet_config(tfds_dir, variant="mp_tr_bce", **overrides):
  """A UNet config that trains in seconds: 32 px, base 4, depth 2, 32 train / 40 eval images."""
  from configs import unet  # pylint: disable=g-import-not-at-top
  config = unet.get_config(variant)
  config.data.data_dir = tfds_dir
  config.data.download = False
  config.data.image_size = 32
  config.data.limit_train = 32
  config.data.limit_eval = 40
  config.model.depth = 2
  config.model.base_features = 4
  config.train.batch_size = 8
  config.train.num_epochs = 2
  config.train.log_every_steps = 2
  config.train.checkpoint_every_steps = 4
  config.eval.batch_size = 16
  config.eval.num_pictures = 4
  for key, value in overrides.items():
    set_dotted(config, key, value)
  return config


def tiny_cvae_family_config(config, tfds_dir):
  """A CVAE or judge-classifier config (from `configs/cvae.py` / `configs/classifier.py`) made
  to train in seconds: widths (4, 8), 128 train / 60 eval images, 2 epochs of batch 32."""
  config.data.data_dir = tfds_dir
  config.data.download = False
  config.data.limit_train = 128
  config.data.limit_eval = 60
  config.train.batch_size = 32
  config.train.num_epochs = 2
  config.train.log_every_steps = 2
  config.train.checkpoint_every_steps = 4
  config.eval.batch_size = 32     # 60 examples: the last batch is padded
  config.model.features = (4, 8)
  config.model.hidden = 16
  return config


def set_dotted(tree, key: str, value) -> None:
  """`set_dotted(c, "train.batch_size", 8)` on a ConfigDict (an existing field: a typo fails)
  or a nested dict (eval.json configs in report tests, where new fields may be added)."""
  config_path.set_value(key, tree, value, accept_new_attributes=isinstance(tree, dict))
