"""Forward and forward+backward time of single conv layers under each `model.conv_impl`, and
of the 2x2 max-pool as Flax's `nn.max_pool` against `layers.max_pool_2x2`.

  python -m benchmarks.investigations.conv_impls [--steps=8]

Why: `shared/layers/` picks how convolutions are computed (XLA's convolution, im2col
matmuls, or XLA forward + im2col gradient). This prints, for the layer shapes the UNet and the
CVAE actually use, the median time of each implementation, so the choice of `auto` can be
checked on any machine. All three compute the same function (tests/test_layers.py).
"""

from __future__ import annotations

import time

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from shared import layers
from shared.process import xla_flags

_STEPS = flags.DEFINE_integer("steps", 8, "timed calls per measurement (median reported)")

# (label, layer kind, input shape NHWC, features, kernel, stride)
CASES = (
    ("UNet 3x3 conv, 128px x32 (default size, level 0)", "conv", (16, 128, 128, 32), 32, 3, 1),
    ("UNet 3x3 conv, 16px x256 (default size, bottleneck)", "conv", (16, 16, 16, 256), 256, 3, 1),
    ("UNet 3x3 stride-2 conv, 128px x32", "conv", (16, 128, 128, 32), 32, 3, 2),
    ("UNet 2x2 stride-2 transposed conv, 16px 256->128", "transpose", (16, 16, 16, 256), 128, 2, 2),
    ("CVAE 4x4 stride-2 conv, MNIST 14px 32->64", "conv", (128, 14, 14, 32), 64, 4, 2),
    ("CVAE 4x4 stride-2 transposed conv, MNIST 7px 64->32", "transpose", (128, 7, 7, 64), 32, 4, 2),
    ("CVAE 4x4 stride-2 transposed conv, MNIST 14px 32->1", "transpose", (128, 14, 14, 32), 1, 4, 2),
    ("CVAE 4x4 stride-2 transposed conv, CIFAR-10 8px 64->32", "transpose", (128, 8, 8, 64), 32, 4,
     2),
    ("CVAE 4x4 stride-2 transposed conv, CIFAR-10 16px 32->6", "transpose", (128, 16, 16, 32), 6, 4,
     2),
)
IMPLS = ("xla", "im2col", "phase")
# (label, input shape NHWC) of the UNet's max-pools (after a ReLU, as in the model).
POOL_CASES = (
    ("UNet max-pool, 128px x32 (default size, level 0)", (16, 128, 128, 32)),
    ("UNet max-pool, 64px x64 (default size, level 1)", (16, 64, 64, 64)),
    ("UNet max-pool, 64px x16 (cpu size, level 0)", (16, 64, 64, 16)),
    ("UNet max-pool, 32px x32 (cpu size, level 1)", (16, 32, 32, 32)),
)


def _median_ms(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(_STEPS.value):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times)) * 1e3


def main(argv):
  del argv
  xla_flags.apply_defaults()
  print(f"backend {jax.default_backend()}, auto = {layers.resolve_impl('auto')}; median ms "
        f"over {_STEPS.value} calls; fwd = forward only, train = forward + gradient")
  header = f"{'layer':54s}" + "".join(f"{impl + ' fwd':>12s}{impl + ' train':>14s}"
                                      for impl in IMPLS)
  print(header)
  for label, kind, shape, features, k, s in CASES:
    x = jax.random.normal(jax.random.key(0), shape)
    row = f"{label:54s}"
    for impl in IMPLS:
      cls = layers.Conv if kind == "conv" else layers.ConvTranspose
      layer = cls(features, (k, k), strides=s, impl=impl)
      params = layer.init(jax.random.key(1), x)
      fwd = jax.jit(layer.apply)
      train = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x))), argnums=(0, 1)))
      row += f"{_median_ms(fwd, params, x):12.1f}{_median_ms(train, params, x):14.1f}"
    print(row, flush=True)
  pools = (("nn.max_pool", lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))),
           ("max_pool_2x2", layers.max_pool_2x2))
  print("\n" + f"{'layer':54s}" + "".join(f"{name + ' fwd':>20s}{name + ' train':>22s}"
                                          for name, _ in pools))
  for label, shape in POOL_CASES:
    x = jax.random.normal(jax.random.key(0), shape)
    row = f"{label:54s}"
    for _, pool in pools:
      fwd = jax.jit(lambda x, pool=pool: pool(jax.nn.relu(x)))
      train = jax.jit(jax.grad(lambda x, pool=pool: jnp.sum(jnp.sin(pool(jax.nn.relu(x))))))
      row += f"{_median_ms(fwd, x):20.1f}{_median_ms(train, x):22.1f}"
    print(row, flush=True)


if __name__ == "__main__":
  app.run(main)
