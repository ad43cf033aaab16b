"""orbax checkpoints in `workdir/checkpoints`: periodic saves, resume from the newest good step.

orbax writes each step into a temporary folder and renames it only once complete, so a run
killed mid-write leaves no half checkpoint under a step name, and old steps are deleted
(`max_to_keep`) only after a newer one is committed. On top of that:

  * every committed step has a SHA-256 of each of its files (`checkpoints_sha256/STEP.json`,
    written when orbax has finished the step's files and before it commits them, so a crash
    just after a commit leaves no step unchecked); restore checks them, so flipped bytes are
    caught before they reach training;
  * a step that is damaged (a checksum differs, files are truncated or missing, the folder is
    empty or was never committed) is moved aside to `checkpoints_damaged/`, with a warning
    naming the step and the reason, and the next older step is tried. Only that step moves;
  * a step whose arrays do not have this config's shapes is not damage but another model:
    the run stops with one line naming the differing shapes and moves nothing.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import threading
import time

from absl import logging
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import save_decision_policy

from shared import errors
from shared import files
from shared.errors import ConfigError, WorkdirError

# orbax writes this file into a step folder as part of its commit.
_COMMIT_MARKER = "_CHECKPOINT_METADATA"
# What orbax's commit itself writes after the step's data is final (the commit time into the
# marker, a success file): not covered by the checksums, which are recorded before it.
_WRITTEN_AT_COMMIT = (_COMMIT_MARKER, "commit_success.txt")


class _Damaged(Exception):
  """A step that cannot be trusted; the message says why."""


class _Manager(ocp.CheckpointManager):
  """orbax's manager, but it asks JAX's preemption sync only from the main thread.

  JAX picks the job's preemption step from the step each process last reported; orbax also
  reports from its background finalize thread, with the step being saved, for a metric. That
  report can land after the loop's report of a later step and set this process's step back;
  if every process were set back when a notice arrives, they would agree on a step they have
  all passed and never stop. The loop reports every step itself (shared/preemption.py).
  """

  def reached_preemption(self, step: int) -> bool:
    if threading.current_thread() is not threading.main_thread():
      return False
    return super().reached_preemption(step)


def file_digests(folder: str, skip: tuple[str, ...] = ()) -> dict[str, str]:
  """Relative path -> SHA-256 of every file under `folder` but those at relative paths `skip`."""
  out = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      if os.path.relpath(path, folder) in skip:
        continue
      digest = hashlib.sha256()
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          digest.update(block)
      out[os.path.relpath(path, folder)] = digest.hexdigest()
  return out


def newest_committed_step(workdir: str) -> int:
  """The largest step committed in `workdir/checkpoints`, 0 if none: from the folder names
  alone, read-only and cheap, for before the data is loaded (shared/preemption.py)."""
  folder = os.path.join(workdir, "checkpoints")
  try:
    names = os.listdir(folder)
  except OSError:   # none yet, or unreadable: the run reports that itself, later
    return 0
  steps = [int(n) for n in names
           if n.isdigit() and os.path.exists(os.path.join(folder, n, _COMMIT_MARKER))]
  return max(steps, default=0)


def _key_name(key) -> str:
  """A jax key path entry as orbax names it in a checkpoint: dict key, sequence index or
  namedtuple field, as a string."""
  for attr in ("key", "idx", "name"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def shape_differences(saved_metadata, template) -> list[str]:
  """`path: saved shape -> this config's shape` for every array that differs (or exists on one
  side only). Paths are built from jax's key paths, which name namedtuple fields and indices
  as orbax's metadata does, and skip leafless entries (optax's EmptyState) as orbax does."""
  shape = lambda v: tuple(getattr(v, "shape", ()))
  saved = {"/".join(map(str, k)): shape(v)
           for k, v in ocp.tree.to_flat_dict(saved_metadata).items()}
  wanted = {"/".join(map(_key_name, path)): shape(v)
            for path, v in jax.tree_util.tree_flatten_with_path(template)[0]}
  return [f"{k}: {saved.get(k, 'absent')} -> {wanted.get(k, 'absent')}"
          for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k)]


class Checkpointer:
  """Thin wrapper so the loop speaks in train-state dicts, not orbax arguments."""

  def __init__(self, workdir: str, max_to_keep: int, save_every_steps: int | None = None,
               final_step: int | None = None):
    """`save_every_steps` and `final_step` make orbax's save policy, asked by `should_save`."""
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.damaged_directory = os.path.abspath(os.path.join(workdir, "checkpoints_damaged"))
    self.digest_directory = os.path.abspath(os.path.join(workdir, "checkpoints_sha256"))
    self._max_to_keep = max_to_keep
    policies = []
    if save_every_steps:
      policies.append(save_decision_policy.FixedIntervalPolicy(save_every_steps))
    if final_step is not None:
      policies.append(save_decision_policy.SpecificStepsPolicy((final_step,)))
    self._save_policy = save_decision_policy.AnySavePolicy(policies)
    self._in_flight: int | None = None    # the step of the save still being written, if any
    self._saving: int | None = None       # the step of the newest save started
    # Step folders orbax never committed (an empty or half-created folder) confuse its
    # manager about every other step: move them aside before it looks.
    if os.path.isdir(self.directory):
      for name in sorted(os.listdir(self.directory)):
        folder = os.path.join(self.directory, name)
        if name.isdigit() and not os.path.exists(os.path.join(folder, _COMMIT_MARKER)):
          self._move_aside(int(name), f"never committed: no {_COMMIT_MARKER} in it")
    self._manager = self._new_manager()

  def _new_manager(self):
    """A manager over the folder as it is now: after process 0 moved steps aside, every
    process waits for the others here, so that none of them reads the folder before."""
    ocp.multihost.sync_global_processes("shared.checkpoint.new_manager")
    return _Manager(
        self.directory, item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=self._max_to_keep, create=True, save_decision_policy=self._save_policy,
            async_options=ocp.AsyncOptions(post_finalization_callback=self._record_before_commit)))

  def should_save(self, step: int) -> bool:
    """orbax's decision: every `save_every_steps`, the final step, never a step already saved."""
    return self._manager.should_save(step)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore_latest(self, template):
    """Newest restorable state laid out like `template` (shapes, dtypes, shardings), or None.

    Raises ConfigError, moving nothing, when a step holds arrays of other shapes.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        self._verify(step)
        try:
          metadata = self._manager.item_metadata(step)
        except Exception as e:  # orbax/tensorstore raise many types for damaged files
          raise _Damaged(f"its metadata cannot be read ({_describe(e)})") from e
        diffs = shape_differences(metadata, template) if metadata is not None else []
        if diffs:
          raise ConfigError(
              f"checkpoint step {step} in {self.directory} holds a model of other shapes than "
              f"this config's ({'; '.join(diffs[:4])}{'; ...' if len(diffs) > 4 else ''}); "
              f"nothing was moved. Train this config in another --workdir")
        try:
          return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # orbax/tensorstore raise many types for damaged files
          raise _Damaged(_describe(e)) from e
      except _Damaged as e:
        # Every process reads the step before process 0 moves it: one verdict, one reason.
        ocp.multihost.sync_global_processes("shared.checkpoint.damaged")
        self._move_aside(step, str(e))
        self._manager.close()
        self._manager = self._new_manager()   # a fresh view: the old one cached that step
    return None

  def _verify(self, step: int) -> None:
    """Raises _Damaged when a file of `step` differs from its recorded SHA-256."""
    path = os.path.join(self.digest_directory, f"{step}.json")
    if not os.path.exists(path):
      logging.info("checkpoint step %d has no recorded checksums (the run ended before they "
                   "were written); restoring it unchecked", step)
      return
    try:
      with open(path) as f:
        recorded = json.load(f)
    except (OSError, ValueError) as e:
      raise _Damaged(f"its checksum file {path} is unreadable ({e})") from e
    actual = file_digests(os.path.join(self.directory, str(step)))
    for name, digest in sorted(recorded.items()):
      if name not in actual:
        raise _Damaged(f"file {name} is missing")
      if actual[name] != digest:
        raise _Damaged(f"file {name} differs from its SHA-256 recorded at save time")

  def _record_before_commit(self) -> None:
    """orbax's post-finalization callback, on process 0 once every process's part of the step
    is written and before the step is committed (renamed into place): records its checksums."""
    step = self._saving
    folders = glob.glob(os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp*"))
    if step is None or len(folders) != 1:   # not the rename-based commit: _record_digests
      return
    os.makedirs(self.digest_directory, exist_ok=True)
    files.write_json(os.path.join(self.digest_directory, f"{step}.json"),
                     file_digests(folders[0], skip=_WRITTEN_AT_COMMIT))

  def _record_digests(self) -> None:
    """Checksums for committed steps that lack them (a commit _record_before_commit did not
    see); drops those of deleted steps."""
    if jax.process_index() != 0:
      return
    steps = set(self._manager.all_steps())
    os.makedirs(self.digest_directory, exist_ok=True)
    for name in os.listdir(self.digest_directory):
      stem = name.removesuffix(".json")
      if stem.isdigit() and int(stem) not in steps:
        os.remove(os.path.join(self.digest_directory, name))
    for step in steps:
      path = os.path.join(self.digest_directory, f"{step}.json")
      if not os.path.exists(path):
        files.write_json(path, file_digests(os.path.join(self.directory, str(step)),
                                            skip=_WRITTEN_AT_COMMIT))

  def _move_aside(self, step: int, reason: str) -> None:
    stamp = int(time.time())
    dest = os.path.join(self.damaged_directory, f"{step}-{stamp}")
    if jax.process_index() == 0:
      os.makedirs(self.damaged_directory, exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), dest)
      digest = os.path.join(self.digest_directory, f"{step}.json")
      if os.path.exists(digest):
        shutil.move(digest, os.path.join(dest, "sha256.json"))
    logging.warning("checkpoint step %d in %s is damaged (%s); moved it to %s and trying the "
                    "next older one", step, self.directory, reason[:300], dest)

  def save(self, step: int, state) -> None:
    """Starts an asynchronous save; an existing checkpoint for `step` is left as it is."""
    if step in self._manager.all_steps():
      return
    # orbax skips a save while the previous one is still being written; the previous one has
    # had a whole checkpoint interval to finish, so waiting for it here costs ~nothing and
    # guarantees that every requested step (e.g. the preemption step) is written. Its errors
    # (a full disk) are reported as its own step's.
    self.wait()
    self._saving = step
    try:
      saved = self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
    except Exception as e:
      raise self._write_error(step, e) from e
    self._in_flight = step
    if not saved:
      raise RuntimeError(f"orbax declined to save checkpoint step {step} in {self.directory}")

  def wait(self) -> None:
    """Blocks until saves in flight are committed (and checksummed)."""
    try:
      self._manager.wait_until_finished()
      self._record_digests()
    except Exception as e:
      raise self._write_error(self._in_flight, e) from e
    self._in_flight = None

  def _write_error(self, step, e: BaseException) -> WorkdirError:
    """The one-line error for a failed save; the failed step's partial folder is removed (on
    a full disk it holds the space a rerun needs; the committed steps are untouched)."""
    cause = errors.root_cause(e)
    what = f"checkpoint step {step}" if step is not None else "a checkpoint"
    if step is not None and jax.process_index() == 0:
      for partial in glob.glob(os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp*")):
        shutil.rmtree(partial, ignore_errors=True)
    text = " ".join(str(cause).split())   # one line: tensorstore's messages span several
    return WorkdirError(f"could not write {what} to {self.directory}: "
                        f"{type(cause).__name__}: {text} (is the disk full or read-only?)")

  def close(self) -> None:
    """Waits for saves in flight to commit, then releases orbax's threads."""
    self.wait()
    try:
      self._manager.close()
    except Exception as e:
      raise self._write_error(None, e) from e


def _describe(e: BaseException) -> str:
  cause = errors.root_cause(e)
  return f"{type(cause).__name__}: {' '.join(str(cause).split())[:200]}"
