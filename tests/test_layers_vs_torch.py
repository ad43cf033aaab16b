"""benchmarks/investigations/layers_vs_torch.py: its cases are the CIFAR-10 CVAE's layers, and it
runs end to end against PyTorch.

Skipped when torch is absent: it is a benchmark-only dependency (requirements-bench.txt).
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from benchmarks.investigations import layers_vs_torch
from configs import cvae as cvae_configs
from cvae import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _kernel_shapes(tree) -> set[tuple[int, ...]]:
  paths = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {tuple(leaf.shape) for path, leaf in paths if path[-1].key == "kernel"}


def test_cases_are_the_default_cifar10_models_layers():
  """Each case's kernel is one the default CIFAR-10 CVAE trains, so the comparison follows the
  model when its config changes."""
  cfg = cvae_configs.get_config("cifar10").model
  model = models.from_config(cfg, (32, 32, 3), 9, 10)
  x, y = jnp.zeros((2, 32, 32, 3)), jnp.array([1, 2])
  shapes = jax.eval_shape(model.init, jax.random.key(0), x, y, y, jax.random.key(1))
  kernels = _kernel_shapes(shapes["params"])
  for label, kind, in_shape, features, k, _, _ in layers_vs_torch.CASES:
    expected = (in_shape[0], features) if kind == "dense" else (k, k, in_shape[-1], features)
    assert expected in kernels, f"{label}: no {expected} kernel in the CIFAR-10 CVAE"


def test_runs_against_pytorch():
  pytest.importorskip("torch", reason="benchmark-only dependency; pip install -r "
                      "requirements-bench.txt")
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.investigations.layers_vs_torch", "--only=stats",
       "--rounds=1", "--calls=2", "--batch=4"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = [line.split() for line in result.stdout.splitlines()
          if line.startswith(("encoder stats", "sum"))]
  assert len(rows) == 2
  ours, torch_ms, ratio = map(float, rows[0][-3:])
  assert ours > 0 and torch_ms > 0 and ratio > 0   # (printed rounded: no exact check)


def test_an_only_that_matches_nothing_is_one_line():
  result = subprocess.run(
      [sys.executable, "-m", "benchmarks.investigations.layers_vs_torch", "--only=nothing"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 1
  assert "--only='nothing' matches no case; cases: encoder down0" in result.stderr
  assert "Traceback" not in result.stderr
