"""Single layers of the CIFAR-10 CVAE, ours (Flax, `shared/layers`) against PyTorch eager, forward
+ gradients, timed alternately in one process.

  python -m benchmarks.investigations.layers_vs_torch [--rounds=6 --calls=10 --batch=128]

Why: the whole-step benchmark (`benchmarks.run --only=cvae`) says the CIFAR-10 CVAE's step is
slower than PyTorch's; the trace (`profile_step`) cannot say which convolutions are to blame,
because XLA:CPU runs them on a thread pool its trace shows short. This times each layer shape
the step uses on its own, in both frameworks, so the layers with the worst ratio can be worked
on first. Each case is a layer of the model: input, output and parameter gradients (the input
gradient is left out where the step never needs it, as for the encoder's first conv).

Both frameworks run in this process, in blocks of `--calls` calls, alternating for `--rounds`
rounds, each with as many threads as there are cores. PyTorch runs with its OpenMP defaults,
as in the whole-step benchmark: `OMP_WAIT_POLICY=PASSIVE` (its threads sleep between calls)
doubled its times here (layer sum 49 -> 97 ms at batch 128), so do not set it for a comparison.
"""

from __future__ import annotations

import os
import time

from absl import app
from absl import flags
import numpy as np

from shared.process import xla_flags


def _define_flags():
  """Flags are defined only when run as a script, so that tests can import this module next to
  tools and benchmarks with flags of the same names (`--only`)."""
  return dict(
      rounds=flags.DEFINE_integer("rounds", 6, "alternations of the two frameworks"),
      calls=flags.DEFINE_integer("calls", 10, "timed calls per framework per round"),
      batch=flags.DEFINE_integer("batch", 128, "batch size of every case"),
      only=flags.DEFINE_string("only", "", "substring: run the cases whose label contains it"),
      impl=flags.DEFINE_enum("impl", "auto", ["auto", "phase", "im2col", "xla"],
                             "our convolutions' `model.conv_impl` (shared/layers/)"))


# (label, kind, input (H, W, C), features, kernel, stride, input gradient needed)
CASES = (
    ("encoder down0: 4x4/2 conv 32px 4->32", "conv", (32, 32, 4), 32, 4, 2, False),
    ("encoder block0: 3x3 conv 16px 32->32", "conv", (16, 16, 32), 32, 3, 1, True),
    ("encoder down1: 4x4/2 conv 16px 32->64", "conv", (16, 16, 32), 64, 4, 2, True),
    ("block1: 3x3 conv 8px 64->64", "conv", (8, 8, 64), 64, 3, 1, True),
    ("encoder stats: 1x1 conv 8px 64->8", "conv", (8, 8, 64), 8, 1, 1, True),
    ("decoder from_z: 3x3 conv 8px 4->64", "conv", (8, 8, 4), 64, 3, 1, True),
    ("decoder up0: 4x4/2 transposed conv 8px 64->32", "transpose", (8, 8, 64), 32, 4, 2, True),
    ("decoder up1: 4x4/2 transposed conv 16px 32->9", "transpose", (16, 16, 32), 9, 4, 2, True),
    ("critic conv0: 4x4/2 conv 32px 3->32", "conv", (32, 32, 3), 32, 4, 2, True),
    ("critic conv1: 4x4/2 conv 16px 32->64", "conv", (16, 16, 32), 64, 4, 2, True),
    ("critic hidden: dense 4096->128", "dense", (4096,), 128, 0, 0, True),
)


def _jax_case(kind, in_shape, features, k, s, input_grad, batch, impl):
  """A call of the jitted forward + gradients of sum(layer(x) * g), blocking on the result."""
  import jax  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from shared import layers  # pylint: disable=g-import-not-at-top
  if kind == "dense":
    layer = nn.Dense(features)
  elif kind == "conv":
    layer = layers.Conv(features, (k, k), strides=(s, s), impl=impl)
  else:
    layer = layers.ConvTranspose(features, (k, k), strides=(s, s), impl=impl)
  rng = np.random.default_rng(0)
  x = jax.numpy.asarray(rng.standard_normal((batch, *in_shape), np.float32))
  params = layer.init(jax.random.PRNGKey(0), x)
  y = layer.apply(params, x)
  g = jax.numpy.asarray(rng.standard_normal(y.shape, np.float32))
  objective = lambda p, x: (layer.apply(p, x) * g).sum()
  fn = jax.jit(jax.grad(objective, argnums=(0, 1) if input_grad else 0))
  return lambda: jax.block_until_ready(fn(params, x))


def _torch_case(kind, in_shape, features, k, s, input_grad, batch):
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  if kind == "dense":
    layer = torch.nn.Linear(in_shape[0], features)
    x = torch.from_numpy(rng.standard_normal((batch, *in_shape), np.float32))
  else:
    h, w, c = in_shape
    if kind == "conv":
      layer = torch.nn.Conv2d(c, features, k, stride=s, padding=(k - 1) // 2 if s == 1 else 1)
    else:
      layer = torch.nn.ConvTranspose2d(c, features, k, stride=s, padding=1)
    x = torch.from_numpy(rng.standard_normal((batch, c, h, w), np.float32))
  x.requires_grad_(input_grad)
  g = torch.randn_like(layer(x))

  def run():
    layer.zero_grad(set_to_none=True)
    x.grad = None
    layer(x).backward(g)
  return run


def _time(fn, calls: int) -> list[float]:
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def main(argv, flag):
  del argv
  cases = [c for c in CASES if flag["only"].value in c[0]]
  if not cases:
    raise app.UsageError(f"--only={flag['only'].value!r} matches no case; cases: "
                         + "; ".join(c[0] for c in CASES))
  xla_flags.apply_defaults()
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  batch, calls = flag["batch"].value, flag["calls"].value
  built = []
  for label, *spec in cases:
    ours = _jax_case(*spec, batch, flag["impl"].value)
    theirs = _torch_case(*spec, batch)
    ours(), ours(), theirs(), theirs()        # compile, warm up
    built.append((label, ours, theirs))
  times = {label: ([], []) for label, _, _ in built}
  for _ in range(flag["rounds"].value):
    for label, ours, theirs in built:
      times[label][0].extend(_time(ours, calls))
      times[label][1].extend(_time(theirs, calls))
  print(f"batch {batch}, {flag['rounds'].value} rounds x {calls} calls, forward + "
        "gradients, median ms")
  print(f"{'layer':48s} {'ours':>8s} {'torch':>8s} {'torch/ours':>10s}")
  total = [0.0, 0.0]
  for label, _, _ in built:
    ours_ms, torch_ms = (1e3 * float(np.median(t)) for t in times[label])
    total[0] += ours_ms
    total[1] += torch_ms
    print(f"{label:48s} {ours_ms:8.2f} {torch_ms:8.2f} {torch_ms / ours_ms:10.2f}")
  print(f"{'sum':48s} {total[0]:8.2f} {total[1]:8.2f} {total[1] / total[0]:10.2f}")


if __name__ == "__main__":
  _flags = _define_flags()
  app.run(lambda argv: main(argv, _flags))
