"""orbax checkpoints in `workdir/checkpoints`: periodic saves, resume from the newest good step.

orbax writes each step into a temporary folder and renames it only once complete, so a run
killed mid-write leaves no half checkpoint under a step name, and old steps are deleted
(`max_to_keep`) only after a newer one is committed. A step folder that is damaged anyway
(truncated or deleted files) fails to restore: it is moved aside to `checkpoints_damaged/`,
with a warning, and the next older step is tried.
"""

from __future__ import annotations

import os
import shutil
import time

from absl import logging
import jax
import orbax.checkpoint as ocp

from shared import errors
from shared.errors import WorkdirError


class Checkpointer:
  """Thin wrapper so the loop speaks in train-state dicts, not orbax arguments."""

  def __init__(self, workdir: str, max_to_keep: int):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.damaged_directory = os.path.abspath(os.path.join(workdir, "checkpoints_damaged"))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore_latest(self, template):
    """Newest restorable state laid out like `template` (shapes, dtypes, shardings), or None."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        self._quarantine(step, e)
    return None

  def _quarantine(self, step: int, error: BaseException) -> None:
    cause = errors.root_cause(error)
    dest = os.path.join(self.damaged_directory, f"{step}-{int(time.time())}")
    if jax.process_index() == 0:
      os.makedirs(self.damaged_directory, exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), dest)
    logging.warning("checkpoint step %d in %s is damaged (%s: %s); moved it to %s and trying "
                    "the next older one", step, self.directory, type(cause).__name__,
                    str(cause)[:200], dest)
    self._manager.reload()

  def save(self, step: int, state) -> None:
    """Starts an asynchronous save; an existing checkpoint for `step` is left as it is."""
    if step in self._manager.all_steps():
      return
    try:
      # orbax skips a save while the previous one is still being written; the previous one has
      # had a whole checkpoint interval to finish, so waiting for it here costs ~nothing and
      # guarantees that every requested step (e.g. the preemption step) is written.
      self._manager.wait_until_finished()
      saved = self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    except Exception as e:
      raise self._write_error(step, e) from e
    if not saved:
      raise RuntimeError(f"orbax declined to save checkpoint step {step} in {self.directory}")

  def wait(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      raise self._write_error(None, e) from e

  def _write_error(self, step, e: BaseException) -> WorkdirError:
    cause = errors.root_cause(e)
    what = f"checkpoint step {step}" if step is not None else "a checkpoint"
    return WorkdirError(f"could not write {what} to {self.directory}: "
                        f"{type(cause).__name__}: {cause} (is the disk full or read-only?)")

  def close(self) -> None:
    """Waits for saves in flight to commit, then releases orbax's threads."""
    try:
      self._manager.close()
    except Exception as e:
      raise self._write_error(None, e) from e
