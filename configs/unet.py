"""UNet on Oxford-IIIT Pet: `--config=configs/unet.py:VARIANT[,modifiers]`.

VARIANT is `DOWN_UP_LOSS`:
  DOWN  mp (2x2 max-pool) | strconv (3x3 conv, stride 2)
  UP    tr (2x2 transposed conv, stride 2) | ups (bilinear resize x2, then 3x3 conv)
  LOSS  bce | dice | bce_dice
The ablation runs the four in `ABLATION`; every other combination is valid too.
`SWEEPS` (unet_ablation, unet_all) and the table's columns (`REPORT`) are at the end.

Modifiers:
  cpu        small model and budget that finishes in a few minutes on a 2-core CPU
  trimap     3-class trimap segmentation (softmax CE / multi-class Dice) instead of binary
  res=N      image size (must be divisible by 2**depth)
  seed=N     seed for init, data order, augmentation and dropout
  epochs=N   number of training epochs
Every field can still be overridden with `--config.FIELD=value`.
"""

import ml_collections

from configs import common
from configs import experiments
from shared import config_args

DOWNSAMPLE = {"mp": "maxpool", "strconv": "strided_conv"}
UPSAMPLE = {"tr": "transpose_conv", "ups": "upsample"}
LOSSES = ("bce", "dice", "bce_dice")
ABLATION = ("mp_tr_bce", "mp_tr_dice", "strconv_tr_bce", "strconv_ups_dice")
ALL_VARIANTS = tuple(f"{d}_{u}_{l}" for d in DOWNSAMPLE for u in UPSAMPLE for l in LOSSES)
VARIANTS = ALL_VARIANTS
MODIFIERS = {"cpu": False, "trimap": False, "res": 0, "seed": 0, "epochs": 0}
MINIMUMS = {"res": 1, "seed": 0, "epochs": 1}


def parse_variant(variant: str) -> tuple[str, str, str]:
  """`strconv_ups_dice` -> ("strided_conv", "upsample", "dice"); unknown names list valid ones."""
  down, _, rest = variant.partition("_")
  up, _, loss = rest.partition("_")
  if down not in DOWNSAMPLE or up not in UPSAMPLE or loss not in LOSSES:
    raise ValueError(f"unknown UNet variant {variant!r}; valid variants: {', '.join(ALL_VARIANTS)}")
  return DOWNSAMPLE[down], UPSAMPLE[up], loss


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant, mods = config_args.parse_config_arg(arg, "strconv_ups_dice", MODIFIERS, MINIMUMS)
  downsample, upsample, loss = parse_variant(variant)

  config = common.base_config()
  config.task = "unet.task"
  config.variant = variant
  config.seed = mods["seed"]

  config.data.name = "oxford_iiit_pet"
  config.data.image_size = 128
  config.data.random_flip = True

  config.model = ml_collections.ConfigDict()
  config.model.downsample = downsample
  config.model.upsample = upsample
  config.model.upsample_method = "bilinear"   # resize used by `upsample`: bilinear | nearest
  config.model.depth = 4
  config.model.base_features = 32
  config.model.norm = "batch"                 # batch | group | none
  config.model.dropout_rate = 0.0
  # auto = on CPU transposed convs computed as ordinary convs over their output phases (17x
  # faster forward + gradient for the 2x2 up-conv); XLA's own convs on TPU/GPU. Same
  # parameters and outputs either way (shared/layers/).
  config.model.conv_impl = "auto"
  # Compute dtype: float32 | bfloat16 (activations in bfloat16; parameters, optimizer state,
  # batch-norm statistics and losses stay float32; shared/layers/precision.py, docs/precision.md).
  config.model.dtype = "float32"

  config.seg = ml_collections.ConfigDict()
  config.seg.mode = "trimap" if mods["trimap"] else "binary"
  # Trimap values: 1 = pet, 2 = background, 3 = border. Foreground = pet + border: the border is
  # the pet's outline, so counting it as pet gives the full silhouette (as the PyTorch reference).
  config.seg.foreground_classes = (1, 3)
  config.seg.loss = loss
  config.seg.dice_smooth = 1.0

  config.train.batch_size = 16
  config.train.num_epochs = 30
  config.optimizer.learning_rate = 1e-3

  if mods["cpu"]:
    # ~2-3 minutes per variant on 2 CPU cores: smaller images and model, fewer epochs.
    config.data.image_size = 64
    config.model.base_features = 16
    config.train.num_epochs = 15
    config.train.log_every_steps = 10
    config.train.eval_every_epochs = 5
    config.train.checkpoint_every_steps = 100
  if mods["res"]:
    config.data.image_size = mods["res"]
  if mods["epochs"]:
    config.train.num_epochs = mods["epochs"]
  return config


def _variant_runs(variants, root, seeds, modifiers) -> list[experiments.Run]:
  return [experiments.Run(v, experiments.config_arg("configs/unet.py", v, modifiers, s),
                          experiments.seed_dir(root, v, s))
          for s in seeds for v in variants]


def ablation_runs(root, seeds, modifiers) -> list[experiments.Run]:
  """the 4 UNet ablation variants (ABLATION): ROOT/VARIANT/seed_S"""
  return _variant_runs(ABLATION, root, seeds, modifiers)


def all_variant_runs(root, seeds, modifiers) -> list[experiments.Run]:
  """all 12 UNet down/up/loss combinations (ALL_VARIANTS): ROOT/VARIANT/seed_S"""
  return _variant_runs(ALL_VARIANTS, root, seeds, modifiers)


SWEEPS = {"unet_ablation": ablation_runs, "unet_all": all_variant_runs}

REPORT = experiments.ReportSpec(
    task="unet.task", slug="unet", title="UNet segmentation",
    factors=(("downsample", "model.downsample"), ("upsample", "model.upsample"),
             ("loss function", "seg.loss")),
    metrics=("dice", "iou", "mean_iou", "pixel_accuracy", "loss"),
    headline=("dice", "iou", "pixel_accuracy"),
    # `loss` is each variant's own training objective: comparable only within a loss function.
    compare_within=(("loss", ("loss function",)),))
