"""Loads the judge classifier from its run's workdir for the CVAE eval.

The classifier run's `config.json` (written by the shared loop) rebuilds the model and proves
which dataset it was trained on; its latest orbax checkpoint gives the parameters and model
state (batch-norm statistics); the optimizer state is not restored.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from cvae import input_pipeline
from cvae import models
from shared import files
from shared.errors import UserFacingError, WorkdirError


class ClassifierNotFoundError(UserFacingError, FileNotFoundError):
  """`eval.classifier_workdir` does not hold a finished classifier run for this dataset."""


def _fail(msg: str):
  raise ClassifierNotFoundError(
      f"{msg}. The CVAE eval measures label adherence with a classifier trained first, e.g. "
      f"`python launch.py --config=configs/classifier.py:mnist --workdir=runs/classifier_mnist`, "
      f"then pass --config.eval.classifier_workdir=runs/classifier_mnist")


def load_classifier(workdir: str, dataset: str):
  """Returns `(model, variables)` for the classifier trained in `workdir` on `dataset`."""
  if not workdir:
    _fail("eval.classifier_workdir is empty")
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    _fail(f"eval.classifier_workdir={workdir!r} has no config.json (no classifier run there)")
  try:
    cfg = ml_collections.ConfigDict(files.read_json(config_path))
  except WorkdirError as e:
    _fail(f"eval.classifier_workdir={workdir!r}: {e}")
  if cfg.get("task") != "cvae.classifier_task":
    _fail(f"eval.classifier_workdir={workdir!r} holds a {cfg.get('task')!r} run, not a "
          f"classifier (task 'cvae.classifier_task')")
  if cfg.data.name != dataset:
    _fail(f"eval.classifier_workdir={workdir!r} holds a classifier trained on "
          f"{cfg.data.name!r}, but this CVAE uses data.name={dataset!r}")
  ckpt_dir = os.path.abspath(os.path.join(workdir, "checkpoints"))
  manager = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=False)) \
      if os.path.isdir(ckpt_dir) else None
  step = manager.latest_step() if manager is not None else None
  if step is None:
    _fail(f"eval.classifier_workdir={workdir!r} has no checkpoint in {ckpt_dir}")

  num_classes = len(input_pipeline.CLASS_NAMES[dataset])
  model = models.classifier_from_config(cfg.model, num_classes)
  shape = (1,) + input_pipeline.IMAGE_SHAPES[dataset]
  template = dict(jax.eval_shape(
      lambda: model.init(jax.random.key(0), np.zeros(shape, np.float32))))
  # The train state keeps "params" and, beside it, "model_state" (e.g. batch-norm statistics).
  abstract = {"params": template.pop("params")}
  if template:
    abstract["model_state"] = template
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract)
  # Host numpy arrays, the same on every process: the eval step closes over them as constants.
  # (A device array would be on `jax.devices()[0]`, which only process 0 of a multi-host job
  # can address: the others failed to restore it.)
  restored = manager.restore(step, args=ocp.args.PyTreeRestore(
      item=abstract,
      restore_args=jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract),
      partial_restore=True))
  manager.close()
  return model, {"params": restored["params"], **restored.get("model_state", {})}
