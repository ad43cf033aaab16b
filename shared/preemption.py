"""Turns SIGTERM / SIGINT into a request the train loop honours at the next step boundary.

Cloud TPU VMs are preempted with SIGTERM; Ctrl-C sends SIGINT. Instead of dying mid-step, the
loop sees `requested`, commits a checkpoint of the current step and exits with a message saying
how to resume. The guard covers the whole run: a signal while data loads or the step compiles,
during an eval or before the pictures ends the run at the next such boundary, the same way. A
second signal of the same kind falls through to the default action (so a
second Ctrl-C still stops a run that hangs).

In a job of several processes (hosts), a process must not stop on its own signal: the others
would wait for it in the next collective. There SIGTERM is left to JAX's preemption notifier,
which `jax.distributed.initialize` installs: whichever process gets it tells the others through
the coordination service, and they agree on a step, the first one after the furthest step any
of them had reached (`jax.experimental.multihost_utils.reached_preemption_sync_point`). The
loop asks `stop_at(step)` after every step; it is true at that same step on every process, which
then all commit one checkpoint of it and exit with 128 + SIGTERM. SIGINT (Ctrl-C in one host's
terminal) is turned into a SIGTERM to this process, so it stops the whole job the same way.
"""

from __future__ import annotations

import os
import signal
import threading

from shared import errors

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def report_step(step: int) -> None:
  """In a multi-process job, tells JAX's preemption sync where this process is before the
  loop's first `stop_at`. The sync point is 1 + the largest step reported when a notice
  arrives, so a notice while a resumed run loads data or compiles is then honoured at its
  first step, not at step 1 (never). Call it as early as the step is known."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  multihost_utils.reached_preemption_sync_point(step)   # a no-op in a single process


class PreemptionGuard:
  """Context manager installing the handlers (main thread only) and restoring the old ones.

  `job_wide=True` in a process of a multi-process job (module docstring): SIGTERM is JAX's,
  SIGINT is forwarded to it, `requested` stays False and `stop_at` asks JAX.
  """

  def __init__(self, job_wide: bool = False):
    self.signum: int | None = None
    self.job_wide = job_wide
    self._previous = {}

  @property
  def requested(self) -> bool:
    """This process received a signal (single-process runs only)."""
    return self.signum is not None

  @property
  def signal_name(self) -> str:
    return signal.Signals(self.signum).name if self.signum else ""

  def stop_if_requested(self, what: str) -> None:
    """Raises Preempted ("received SIGTERM <what>") if a signal has arrived."""
    if self.requested:
      raise errors.Preempted(f"received {self.signal_name} {what}", self.signum)

  def stop_at(self, step: int) -> bool:
    """Whether the run should commit `step` and stop. Job-wide: true on every process at the
    same step, once any of them got SIGTERM (must be asked after every step, on every process).
    """
    if not self.job_wide:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return multihost_utils.reached_preemption_sync_point(step)

  def preempted(self, step: int, total_steps: int, where: str) -> errors.Preempted:
    """The error ending a run stopped at `step` (`stop_at`) once checkpoint `step` is
    committed to `where`."""
    if self.job_wide:
      return errors.Preempted(
          f"a preemption notice (SIGTERM) reached this job: every process stopped at step "
          f"{step}/{total_steps}, checkpoint committed to {where}. Re-run the same command (on "
          f"every host) to resume.", signal.SIGTERM)
    return errors.Preempted(
        f"received {self.signal_name} at step {step}/{total_steps}: checkpoint committed to "
        f"{where}. Re-run the same command to resume.", self.signum)

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    signal.signal(signum, signal.SIG_DFL)

  def _forward_to_jax(self, signum, frame):
    del frame
    signal.signal(signum, signal.SIG_DFL)   # a second Ctrl-C kills this process
    os.kill(os.getpid(), signal.SIGTERM)    # JAX's notifier tells every process

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      if self.job_wide:
        self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._forward_to_jax)
      else:
        for s in SIGNALS:
          self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    return False
