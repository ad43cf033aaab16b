"""The judge classifier as the CVAE eval uses it: read from disk on first use, then kept.

Building the CVAE task reads no files (shared/task.py). The judge's checkpoint is read when the
loop calls `Task.load_eval_resources` before training (so a missing or mismatched judge fails
before the first step), or else when the eval or the pictures first need it. Tests and
benchmarks give `build_task` a loader that returns a stand-in instead of reading a checkpoint.
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp

# (classifier_workdir, dataset) -> (flax model, variables); e.g. classifier_loader.load_classifier.
JudgeLoader = Callable[[str, str], tuple[Any, Any]]


class Judge:
  """Calls `load() -> (model, variables)` once, the first time the judge is needed."""

  def __init__(self, load: Callable[[], tuple[Any, Any]]):
    self._load = load
    self._loaded = None

  def model_and_variables(self) -> tuple[Any, Any]:
    if self._loaded is None:
      self._loaded = self._load()
    return self._loaded

  def ensure_loaded(self) -> None:
    """`Task.load_eval_resources`: reads the judge now, so its errors come before training."""
    self.model_and_variables()

  def classify(self, images):
    """The judge's class for each image in [0, 1]. Traceable: inside the caller's jit, the
    judge's variables become constants of the compiled eval step."""
    model, variables = self.model_and_variables()
    return jnp.argmax(model.apply(variables, images), axis=-1)
