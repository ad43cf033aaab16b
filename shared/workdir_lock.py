"""One run per workdir: an exclusive lock on `workdir/.lock`, held for the whole run.

Why: two runs writing one workdir replace each other's checkpoints, config.json and eval.json
and interleave metrics.jsonl. The lock is an OS advisory lock (`flock`) on a file that names
its holder (PID, host, start time): the kernel releases it however the holder ends (exit,
exception, SIGKILL), so a lock left by a process that no longer exists is taken over without
any stale-PID guessing, and a live holder is named in the refusal. The file itself stays (it is
emptied on release): deleting it would let a waiter lock a file no one else can see.

In a multi-host job one process (process 0) holds the lock for the job; the others learn from
it whether the workdir is theirs (`acquire_for_job`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

from shared.errors import WorkdirError

LOCK_NAME = ".lock"


class WorkdirLock:
  """`with WorkdirLock(workdir):` or `acquire()` / `release()`."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_NAME)
    self._fd: int | None = None

  def acquire(self) -> None:
    """Takes the lock, or raises WorkdirError naming the holder."""
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = _read_holder(fd)
      os.close(fd)
      raise WorkdirError(
          f"workdir {self.workdir!r} is in use by another run ({holder}); wait for it to end "
          f"or choose another --workdir") from None
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    self._fd = fd

  def release(self) -> None:
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)
    except OSError:
      pass      # (a full or read-only disk): the kernel still drops the lock below
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()


def _read_holder(fd: int) -> str:
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    return f"PID {info['pid']} on host {info['host']}, started {info['started']}"
  except (OSError, ValueError, KeyError, TypeError):
    return "holder unknown"


def acquire_for_job(workdir: str, process_index: int, process_count: int) -> WorkdirLock:
  """Process 0 takes the lock; with several processes, all of them then raise the same
  WorkdirError if it failed (instead of the others waiting forever in a collective)."""
  lock = WorkdirLock(workdir)
  error = None
  if process_index == 0:
    try:
      lock.acquire()
    except WorkdirError as e:
      error = e
  if process_count > 1:
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    ok = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not ok and error is None:
      error = WorkdirError(f"workdir {workdir!r} is in use by another run (process 0 of this "
                           f"job found the lock taken); choose another --workdir")
  if error is not None:
    raise error
  return lock
