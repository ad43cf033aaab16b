"""What launch.py keeps out of a user's terminal from the libraries it drives.

orbax and jax log their own progress at INFO: dropped, so the progress lines stay readable.

When a checkpoint write fails (a full disk, a read-only folder), the loop ends with one line
that names the step, the folder and the cause (`shared/checkpoint.py`). Before that line,
orbax logs the failure of each of its writer threads at ERROR with a full traceback, and
tensorstore's callbacks, arriving after orbax closed its event loop, each report an ignored
`RuntimeError: Event loop is closed` traceback (tens of them), and at exit asyncio logs every
write orbax abandoned ("Task exception was never retrieved", one each); depending on timing,
the interpreter's shutdown also warns of a jax serialization coroutine that was never awaited
(`sys:1: RuntimeWarning: coroutine 'async_serialize_from_host.<locals>.write_fragment' was
never awaited`), after our line. The error lines of orbax stay; their tracebacks and the
event-loop noise go. Any other error keeps its traceback, any other warning is still shown.
"""

from __future__ import annotations

import logging
import sys
import warnings

_LIBRARIES = ("/orbax/", "/jax/_src/")
_ABANDONED = "exception was never retrieved"   # asyncio: "<Future|Task|...> exception was ..."
# This repository defines no coroutines, so one never awaited is a library's abandoned write.
_UNAWAITED = r"coroutine '.*' was never awaited"


def _from_library(record: logging.LogRecord) -> bool:
  return any(name in record.pathname for name in _LIBRARIES)


def library_log_filter(record: logging.LogRecord) -> bool:
  """A `logging` filter: drops the libraries' INFO records, the tracebacks of their ERROR
  records (the message line is kept) and asyncio's reports of abandoned futures."""
  if record.name == "asyncio" and _ABANDONED in str(record.msg).split("\n", 1)[0]:
    return False
  if not _from_library(record):
    return True
  if record.levelno <= logging.INFO:
    return False
  if record.levelno >= logging.ERROR and record.exc_info:
    record.exc_info, record.exc_text = None, None
  return True


def is_closed_event_loop(unraisable) -> bool:
  """Whether an ignored exception is asyncio's "Event loop is closed" (see the module doc)."""
  exc = unraisable.exc_value
  return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def install(handler: logging.Handler) -> None:
  """Filters `handler` (absl's), drops the closed-event-loop reports from
  `sys.unraisablehook` (other ignored exceptions still reach the previous hook) and the
  warnings of never-awaited coroutines."""
  handler.addFilter(library_log_filter)
  warnings.filterwarnings("ignore", message=_UNAWAITED, category=RuntimeWarning)
  previous = sys.unraisablehook

  def hook(unraisable):
    if not is_closed_event_loop(unraisable):
      previous(unraisable)
  sys.unraisablehook = hook
