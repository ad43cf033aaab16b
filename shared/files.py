"""Atomic file writes: a reader (or a run cut off mid-write) never sees half a file.

Each writer writes to `path.tmp` and renames it over `path`; a failed write removes the
temporary file and leaves any earlier `path` as it was.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, IO

import numpy as np

from shared.errors import WorkdirError


def write_atomic(path: str, write: Callable[[IO], None], mode: str = "w") -> None:
  """Calls `write(f)` on a temporary file next to `path`, then renames it to `path`. An OSError
  (a full disk) becomes a WorkdirError naming `path`; the temporary file is removed."""
  tmp = path + ".tmp"
  try:
    with open(tmp, mode) as f:
      write(f)
    os.replace(tmp, path)
  except OSError as e:
    raise WorkdirError(f"could not write {path}: {e.strerror or e} (is the disk full or "
                       f"read-only?); an earlier {os.path.basename(path)} is left as it was") \
        from e
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_json(path: str, obj: Any) -> None:
  write_atomic(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True))


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
  """Compressed `.npz`."""
  write_atomic(path, lambda f: np.savez_compressed(f, **arrays), mode="wb")


def read_json(path: str) -> Any:
  """The JSON in `path`; a file that does not parse is a WorkdirError naming it."""
  try:
    with open(path) as f:
      return json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise WorkdirError(f"{path} is not valid JSON ({e}); move it away, or use another "
                       f"--workdir") from None
