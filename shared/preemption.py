"""Turns SIGTERM / SIGINT into a request the train loop honours at the next step boundary.

Cloud TPU VMs are preempted with SIGTERM; Ctrl-C sends SIGINT. Instead of dying mid-step, the
loop sees `requested`, commits a checkpoint of the current step and exits with a message saying
how to resume. The guard covers the whole run: a signal while data loads or the step compiles,
during an eval or before the pictures ends the run at the next such boundary, the same way. A
second signal of the same kind falls through to the default action (so a
second Ctrl-C still stops a run that hangs).
"""

from __future__ import annotations

import signal
import threading

from shared import errors

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionGuard:
  """Context manager installing the handlers (main thread only) and restoring the old ones."""

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  @property
  def signal_name(self) -> str:
    return signal.Signals(self.signum).name if self.signum else ""

  def stop_if_requested(self, what: str) -> None:
    """Raises Preempted ("received SIGTERM <what>") if a signal has arrived."""
    if self.requested:
      raise errors.Preempted(f"received {self.signal_name} {what}", self.signum)

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    signal.signal(signum, signal.SIG_DFL)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    return False
