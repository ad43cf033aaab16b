"""Config parsing: variants, modifiers, errors that list what is allowed."""

import pytest

from configs import unet
from shared import config_args


@pytest.mark.parametrize("variant,expected", [
    ("mp_tr_bce", ("maxpool", "transpose_conv", "bce")),
    ("mp_tr_dice", ("maxpool", "transpose_conv", "dice")),
    ("strconv_tr_bce", ("strided_conv", "transpose_conv", "bce")),
    ("strconv_ups_dice", ("strided_conv", "upsample", "dice")),
    ("mp_ups_bce_dice", ("maxpool", "upsample", "bce_dice")),
])
def test_variants_set_model_and_loss(variant, expected):
  config = unet.get_config(variant)
  assert (config.model.downsample, config.model.upsample, config.seg.loss) == expected
  assert config.variant == variant


def test_every_combination_is_a_valid_variant():
  assert len(unet.ALL_VARIANTS) == 2 * 2 * 3
  for variant in unet.ALL_VARIANTS:
    unet.get_config(variant)


def test_unknown_variant_lists_valid_ones():
  with pytest.raises(ValueError, match="unknown UNet variant 'mp_xx_bce'.*strconv_ups_dice"):
    unet.get_config("mp_xx_bce")


def test_cpu_modifier_shrinks_and_keeps_variant():
  full, cpu = unet.get_config("strconv_ups_dice"), unet.get_config("strconv_ups_dice,cpu")
  assert full.data.image_size == 128 and full.model.base_features == 32
  assert full.model.depth == 4 and full.train.num_epochs == 30 and full.train.batch_size == 16
  assert cpu.data.image_size < full.data.image_size
  assert cpu.model.base_features < full.model.base_features
  assert cpu.model.upsample == "upsample" and cpu.seg.loss == "dice"


def test_valued_modifiers_and_trimap():
  config = unet.get_config("mp_tr_bce,cpu,res=96,seed=3,epochs=7,trimap")
  assert config.data.image_size == 96
  assert config.seed == 3 and config.train.num_epochs == 7
  assert config.seg.mode == "trimap"


def test_default_variant():
  assert unet.get_config().variant == "strconv_ups_dice"
  assert unet.get_config("cpu").variant == "strconv_ups_dice"


def test_unknown_modifier_is_named():
  with pytest.raises(ValueError, match="unknown modifier 'gpu'.*allowed modifiers"):
    unet.get_config("mp_tr_bce,gpu")


def test_bad_modifier_value_is_named():
  with pytest.raises(ValueError, match="modifier 'res' expects int, got 'big'"):
    config_args.parse_config_arg("x,res=big", "x", {"res": 0})
  with pytest.raises(ValueError, match="modifier 'cpu' takes true/false"):
    config_args.parse_config_arg("x,cpu=maybe", "x", {"cpu": False})
  # 0 is not "not given": epochs=0, a negative resolution or seed are refused by name.
  for arg, name in (("mp_tr_bce,epochs=0", "epochs"), ("mp_tr_bce,res=-64", "res"),
                    ("mp_tr_bce,seed=-1", "seed")):
    with pytest.raises(ValueError, match=f"modifier '{name}' must be at least"):
      unet.get_config(arg)
