"""shared/layers/: every `conv_impl` computes what Flax's own layers compute, with the same
parameters, values and gradients (the speed claim lives in benchmarks/, not here)."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared import layers
from tests.conftest import run_fast

CONV_CASES = [  # (H, W, C, features, kernel, stride, padding)
    (28, 28, 1, 8, 4, 2, "SAME"),
    (15, 13, 3, 8, 3, 2, "SAME"),          # odd sizes: asymmetric SAME padding
    (16, 16, 8, 8, 3, 2, ((1, 1), (1, 1))),  # the UNet's strided conv (PyTorch padding)
    (9, 9, 4, 5, 3, 1, "SAME"),
    (8, 8, 4, 5, 1, 1, "SAME"),
    (10, 12, 3, 4, 3, 1, "VALID"),
]
TRANSPOSE_CASES = [  # (H, W, C, features, kernel, stride)
    (7, 7, 6, 4, 4, 2),    # the CVAE decoder's
    (5, 6, 3, 4, 2, 2),    # the UNet's
    (4, 4, 3, 2, 6, 3),
    (3, 5, 2, 3, 3, 1),
]


def _random_params(params, seed=3):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda l: rng.standard_normal(l.shape, np.float32), params)


def _normal(shape):
  return np.random.default_rng(1).standard_normal(shape, np.float32)


def _check_same_as_flax(ours, flax_layer, x):
  key = jax.random.key(0)
  p_flax, p_ours = run_fast(flax_layer.init, key, x), run_fast(ours.init, key, x)
  # Same names, shapes and initial values: checkpoints do not depend on the implementation.
  assert jax.tree.structure(p_flax) == jax.tree.structure(p_ours)
  for a, b in zip(jax.tree.leaves(p_flax), jax.tree.leaves(p_ours)):
    np.testing.assert_array_equal(a, b)
  params = _random_params(p_flax)

  def output_and_grads(layer):   # one compiled program per layer: the output and both grads
    loss = lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x)))
    return lambda p, x: (layer.apply(p, x), jax.grad(loss, argnums=(0, 1))(p, x))
  y_flax, g_flax = run_fast(output_and_grads(flax_layer), params, x)
  y_ours, g_ours = run_fast(output_and_grads(ours), params, x)
  assert y_flax.shape == y_ours.shape
  np.testing.assert_allclose(y_ours, y_flax, atol=1e-5 * np.max(np.abs(y_flax)))
  for a, b in zip(jax.tree.leaves(g_flax), jax.tree.leaves(g_ours)):
    np.testing.assert_allclose(b, a, atol=1e-5 * np.max(np.abs(a)))


@pytest.mark.parametrize("impl", ["phase", "im2col", "xla"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_flax(case, impl):
  h, w, c, f, k, s, pad = case
  x = _normal((2, h, w, c))
  _check_same_as_flax(layers.Conv(f, (k, k), strides=s, padding=pad, impl=impl),
                      nn.Conv(f, (k, k), strides=(s, s), padding=pad), x)


@pytest.mark.parametrize("impl", ["phase", "im2col", "xla"])
@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose_matches_flax(case, impl):
  h, w, c, f, k, s = case
  x = _normal((2, h, w, c))
  _check_same_as_flax(layers.ConvTranspose(f, (k, k), strides=s, impl=impl),
                      nn.ConvTranspose(f, (k, k), strides=(s, s), padding="SAME"), x)


def test_auto_picks_by_backend():
  assert layers.resolve_impl("auto") == ("phase" if jax.default_backend() == "cpu" else "xla")
  with pytest.raises(ValueError, match="conv_impl='fft'"):
    layers.resolve_impl("fft")


def test_transpose_rejects_what_it_cannot_compute():
  x = jnp.zeros((1, 4, 4, 2))
  with pytest.raises(ValueError, match="kernel a multiple of the stride"):
    layers.ConvTranspose(3, (3, 3), strides=2).init(jax.random.key(0), x)


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (2, 7, 9, 2)])   # odd sizes: last row dropped
def test_max_pool_matches_flax(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  flax_pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(layers.max_pool_2x2(x), flax_pool(x))
  # Gradients match, also after a ReLU, where all-zero windows tie (both give them zero).
  for pre in (lambda x: x, jax.nn.relu):
    loss = lambda pool: lambda x: jnp.sum(jnp.sin(3 * pool(pre(x))))
    np.testing.assert_allclose(jax.grad(loss(layers.max_pool_2x2))(x),
                               jax.grad(loss(flax_pool))(x), atol=1e-6)



def test_xla_flag_defaults_keep_what_the_user_set():
  from shared.process import xla_flags  # pylint: disable=g-import-not-at-top
  default = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
  assert xla_flags.with_defaults("") == default
  assert (xla_flags.with_defaults("--xla_force_host_platform_device_count=2")
          == "--xla_force_host_platform_device_count=2 " + default)
  mine = "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"
  assert xla_flags.with_defaults(mine) == mine
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  assert xla_flags.apply_defaults(env) == env["XLA_FLAGS"] == xla_flags.with_defaults(
      "--xla_force_host_platform_device_count=2")
  # The test process itself runs with them (tests/conftest.py applies them as launch.py does).
  assert default in os.environ["XLA_FLAGS"] or "ynn_fusion_type" in os.environ["XLA_FLAGS"]
