"""Errors a user can act on. `launch.py` prints them as one line, without a traceback.

Each message names the field, file or step concerned and what was expected, so a preempted,
crashed or mistyped run tells its user what to do next.
"""


def root_cause(e: BaseException) -> BaseException:
  """The innermost exception of a chain: libraries wrap the OSError a user needs to see."""
  while e.__cause__ is not None or e.__context__ is not None:
    e = e.__cause__ or e.__context__
  return e


class UserFacingError(Exception):
  """Base: a problem with the run's input or environment, not a bug in the code."""
  exit_code = 2


class ConfigError(UserFacingError, ValueError):
  """A config field has a value that is not allowed."""


class DatasetNotFoundError(UserFacingError, RuntimeError):
  """The prepared dataset is not where we looked and could not be prepared."""


class BadExampleError(UserFacingError, RuntimeError):
  """An example could not be decoded (dataset, split and index are in the message)."""


class WorkdirError(UserFacingError, OSError):
  """The workdir cannot be written (permissions, full disk, a file in the way)."""


class CheckpointNotFoundError(UserFacingError, FileNotFoundError):
  """`--config.mode=eval` (or a classifier lookup) found no checkpoint to restore."""


class NonFiniteLossError(UserFacingError, FloatingPointError):
  """The training loss became NaN or Inf."""
  exit_code = 3


class Preempted(UserFacingError):
  """SIGTERM/SIGINT arrived; a checkpoint of the current step was committed."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum


class HostsError(UserFacingError, RuntimeError):
  """This process could not join its multi-process job (coordinator unreachable, wrong id)."""
