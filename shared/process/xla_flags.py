"""XLA:CPU flags this project runs with unless the user sets them.

Why: jaxlib 0.10.2 hands convolutions on CPU to YNNPACK, and on this 2-core machine YNNPACK's
convolutions (forward and gradients) were 2-4x slower than XLA's own: a 3x3 conv at
128x128x32, batch 16, took 112 ms forward and 882 ms forward + gradient through YNNPACK,
45 ms and 160 ms without it; the base-32 UNet train step (`strconv_ups_dice`, 128 px, batch 16)
went from 5.5-5.8 s to 3.6 s (docs/performance.md). Dots and elementwise fusions keep
YNNPACK; only convolutions are taken off its list.

`apply_defaults()` must run before JAX creates its CPU backend (before the first computation;
importing jax is fine): launch.py, the benchmark workers and tests/conftest.py call it. A flag
already in `XLA_FLAGS` wins, so `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`
gives back jaxlib's stock behaviour. The flag only affects the CPU backend.
"""

from __future__ import annotations

import os
import re

DEFAULTS = {"xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}


def with_defaults(xla_flags: str) -> str:
  """`xla_flags` plus `--name=value` for each default whose name it does not already set."""
  added = [f"--{name}={value}" for name, value in DEFAULTS.items()
           if not re.search(rf"--{re.escape(name)}(=|\s|$)", xla_flags)]
  return " ".join([xla_flags.strip()] + added).strip()


def apply_defaults(environ=None) -> str:
  """Writes the defaults into `environ["XLA_FLAGS"]` (default: this process's environment, so
  subprocesses inherit them too) and returns the resulting value."""
  environ = os.environ if environ is None else environ
  environ["XLA_FLAGS"] = with_defaults(environ.get("XLA_FLAGS", ""))
  return environ["XLA_FLAGS"]
