"""Config fields every task shares: seed, data location, train loop, optimizer, checkpoints.

Each family (`unet.py`, later `cvae.py`) starts from `base_config()` and adds its own fields,
so the shared loop in `shared/train.py` can rely on these names being present.
"""

import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = ""           # module with `build_task(config)`, e.g. "unet.task"
  config.variant = ""        # a name for tables and eval.json
  config.mode = "train"      # "train" (resumes by itself) or "eval" (latest checkpoint only)
  config.seed = 0
  # Resuming a workdir whose config.json differs (in fields that change the computation) is
  # refused unless this is True.
  config.allow_config_change = False

  config.data = ml_collections.ConfigDict()
  config.data.name = ""
  # None: use $TFDS_DATA_DIR, else tfds' default (~/tensorflow_datasets, downloads if online).
  config.data.data_dir = config_dict.placeholder(str)
  config.data.train_split = "train"
  config.data.eval_split = "test"
  # Prepare (download) the dataset when data_dir has no copy; needs internet and tensorflow-cpu.
  config.data.download = True
  # Decoded, preprocessed examples are kept in memory when they take at most this much.
  config.data.cache_max_bytes = 4 * 1024**3
  # > 0: use only the first N examples of a split (smoke tests, quick experiments).
  config.data.limit_train = 0
  config.data.limit_eval = 0
  # An example that cannot be decoded stops the run (naming split and index), or with True is
  # skipped and counted in eval.json.
  config.data.skip_bad_examples = False

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 16          # global batch, split over all devices
  config.train.num_epochs = 30
  config.train.log_every_steps = 20
  config.train.eval_every_epochs = 1
  config.train.checkpoint_every_steps = 200
  config.train.max_to_keep = 3
  # > 0: a jax.profiler trace of this many train steps (after the first, compiled one) goes to
  # WORKDIR/profile/, for TensorBoard's profiler or Perfetto. 0: none.
  config.train.profile_steps = 0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam"        # adam | adamw | sgd
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "warmup_cosine"  # warmup_cosine | constant
  config.optimizer.warmup_epochs = 1.0
  config.optimizer.end_lr_fraction = 0.01
  config.optimizer.weight_decay = 0.0   # adamw: decoupled; sgd: L2 added to the gradient
  config.optimizer.momentum = 0.9       # sgd only
  config.optimizer.nesterov = False     # sgd only: Nesterov momentum
  # sgd only: parameters named `bias` (the batch-norm shifts of a bias-free conv net) learn this
  # many times faster with that much less L2 (airbench's "bias scaler"); 1 = like the rest.
  config.optimizer.bias_lr_scale = 1.0
  config.optimizer.grad_clip_norm = 0.0  # 0 disables clipping

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 32
  config.eval.num_pictures = 8
  return config
