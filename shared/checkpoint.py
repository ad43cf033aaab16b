"""orbax checkpoints in `workdir/checkpoints`: periodic saves, resume from the latest step."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Thin wrapper so the loop speaks in train-state dicts, not orbax arguments."""

  def __init__(self, workdir: str, max_to_keep: int):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore_latest(self, template):
    """Latest saved state laid out like `template` (same shapes, dtypes, shardings), or None."""
    step = self._manager.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def save(self, step: int, state) -> None:
    """Starts an asynchronous save; an existing checkpoint for `step` is left as it is."""
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
