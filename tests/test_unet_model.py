"""UNet shapes for every variant, parameter counts, and the divisibility check."""

import jax
import jax.numpy as jnp
import pytest

from configs import unet as unet_configs
from shared import train
from unet import models


# The loss does not change the network: one variant per (downsample, upsample) pair.
@pytest.mark.parametrize("variant", ["mp_tr_bce", "mp_ups_bce", "strconv_tr_bce",
                                     "strconv_ups_dice"])
@pytest.mark.parametrize("num_outputs", [1, 3])
def test_logits_at_input_resolution(variant, num_outputs):
  cfg = unet_configs.get_config(variant).model
  cfg.depth, cfg.base_features = 3, 4
  model = models.from_config(cfg, num_outputs)
  x = jnp.ones((2, 40, 24, 3))  # non-square, divisible by 2**3
  variables = model.init(jax.random.key(0), x)
  out, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert out.shape == (2, 40, 24, num_outputs)
  assert model.apply(variables, x).shape == (2, 40, 24, num_outputs)


def _num_params(model, size=32):
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, size, size, 3)))
  return train.count_params(variables["params"])


def test_param_count_matches_hand_count():
  # maxpool + transposed conv, base 32, depth 4, batch norm (convs without bias), 1 output.
  # Hand count: encoder 3x3 convs 3-32-32, 32-64-64, 64-128-128, 128-256-256, bottleneck
  # 256-512-512; decoder transposed 2x2 convs 512->256 ... 64->32 (with bias) and conv pairs on
  # the concatenation; BatchNorm scale+bias per conv; 1x1 head with bias.
  conv = lambda i, o: 9 * i * o
  enc = [(3, 32), (32, 64), (64, 128), (128, 256), (256, 512)]
  total = sum(conv(i, o) + conv(o, o) + 4 * o for i, o in enc)
  for c in (256, 128, 64, 32):
    total += 4 * 2 * c * c + c                       # transposed conv 2c -> c, bias
    total += conv(2 * c, c) + conv(c, c) + 4 * c      # conv pair + two BatchNorms
  total += 32 + 1                                    # head
  model = models.UNet(num_outputs=1, depth=4, base_features=32, downsample="maxpool",
                      upsample="transpose_conv")
  assert _num_params(model) == total
  assert 7.7e6 < total < 7.8e6


def test_strided_conv_and_upsample_add_their_convs():
  base = dict(num_outputs=1, depth=2, base_features=8)
  mp_tr = _num_params(models.UNet(**base, downsample="maxpool", upsample="transpose_conv"))
  st_tr = _num_params(models.UNet(**base, downsample="strided_conv", upsample="transpose_conv"))
  mp_up = _num_params(models.UNet(**base, downsample="maxpool", upsample="upsample"))
  # stride-2 3x3 convs keep channels (8, 16), with bias.
  assert st_tr - mp_tr == sum(9 * c * c + c for c in (8, 16))
  # upsample: 3x3 conv (2c -> c) instead of 2x2 transposed conv, both with bias.
  assert mp_up - mp_tr == sum((9 - 4) * 2 * c * c for c in (16, 8))


def test_indivisible_size_is_rejected():
  model = models.UNet(depth=3, base_features=4)
  with pytest.raises(ValueError, match=r"36x36 is not divisible by 2\*\*depth = 8"):
    model.init(jax.random.key(0), jnp.ones((1, 36, 36, 3)))


def test_dropout_changes_train_output_only():
  model = models.UNet(depth=2, base_features=4, norm="none", dropout_rate=0.5)
  x = jax.random.normal(jax.random.key(1), (1, 16, 16, 3))
  variables = model.init(jax.random.key(0), x)
  a = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
  b = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
  assert not jnp.allclose(a, b)
  assert jnp.allclose(model.apply(variables, x), model.apply(variables, x))
