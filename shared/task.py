"""The contract between the shared train loop and a model family (unet, cvae, classifier).

A family's `task.py` exposes `build_task(config) -> Task`. The loop in `shared/train.py` owns
everything else: sharding, the jitted steps, the optimizer, checkpoints, logging and eval.json.
All functions that run on device are pure: state in, state out, randomness from explicit keys.

`build_task` is pure too: it checks the config and binds module-level functions to the model
and config values, and reads no files. What a task needs from disk besides its data (the CVAE's
judge classifier) it reads on first use, through a loader `build_task` takes as an argument,
so tests and benchmarks pass a stand-in loader instead of patching modules. The loop calls
`load_eval_resources` before training, so a missing or mismatched file fails before the
first step rather than at the first eval.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import numpy as np

from shared import data

Variables = Mapping[str, Any]        # {"params": ..., plus model state such as "batch_stats"}
Batch = Mapping[str, jax.Array]


def nothing_to_load() -> None:
  """`Task.load_eval_resources` of a task whose eval needs only the model and the data."""


@dataclasses.dataclass(frozen=True)
class Task:
  # (config) -> (train store, eval store) of preprocessed examples.
  load_data: Callable[[Any], tuple[data.ExampleStore, data.ExampleStore]]
  # (rng, example batch) -> variables; "params" is trained, every other collection is model state.
  init: Callable[[jax.Array, Batch], Variables]
  # (params, model_state, batch, rng) -> (scalar loss, (dict of scalar metrics, new model_state)).
  loss: Callable[[Any, Any, Batch, jax.Array], tuple[jax.Array, tuple[dict, Any]]]
  # (variables, batch) -> dict of arrays that add up over batches (padding masked by batch["valid"]).
  eval_sums: Callable[[Variables, Batch], dict[str, jax.Array]]
  # (summed eval arrays) -> final metrics, e.g. confusion counts -> Dice / IoU.
  summarize: Callable[[Mapping[str, np.ndarray]], dict[str, float]]
  # (variables, eval store, workdir, rng) -> None; writes the family's PNGs.
  write_pictures: Callable[[Variables, data.ExampleStore, str, jax.Array], None]
  # Keys mirrored together by the random horizontal flip in training (none: no flip).
  flip_keys: tuple[str, ...] = ()
  # uint8 keys turned into float32 in [0, 1] when batches are made.
  image_keys: tuple[str, ...] = ("image",)
  # Eval metrics (keys of `summarize`'s result) drawn in curves.png.
  curve_metrics: tuple[str, ...] = ()
  # () -> None; reads (and keeps) what the eval needs besides the model and the data, e.g. the
  # CVAE's judge classifier. Called by the loop before training; the eval reads it on first
  # use anyway, so callers that skip this call (tests, benchmarks) still get it.
  load_eval_resources: Callable[[], None] = nothing_to_load
