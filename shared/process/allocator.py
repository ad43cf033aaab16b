"""Runs the process under tcmalloc (kept memory, no release to the OS) when it is installed.

Why: XLA:CPU allocates each step's temporaries afresh, and glibc serves requests above 64 MB
from its worker-thread arenas with `mmap`, returning them with `munmap` when the step ends.
So every train step page-faults and zeroes its whole working set again: 32,000 minor faults
(124 MB) per `cpu`-size UNet step, 293,000 (1.1 GB) at the default size. tcmalloc with
`TCMALLOC_RELEASE_RATE=0` keeps freed pages for the next step: under 100 faults per step, and
the step 16-35% faster at the `cpu` size, 8-19% at the default size (docs/performance.md,
"Tried, and kept"). glibc's own knobs do not reach those arenas (`MALLOC_MMAP_MAX_=0` is
ignored there; `MALLOC_ARENA_MAX=1` made the step slower, 199 ms against 123-155, likely
from XLA's threads sharing one arena lock).

An allocator has to be loaded before the process starts, so `maybe_reexec` restarts the
interpreter once, with the same command line, under `LD_PRELOAD`; launch.py calls it first.
Install with `apt-get install libtcmalloc-minimal4` (Debian/Ubuntu). Modes: "auto" (tcmalloc
if installed and `LD_PRELOAD` is not already set by the user, else the system allocator),
"tcmalloc" (required: an error if missing), "system" (leave the process alone).
"""

from __future__ import annotations

import ctypes.util
import os
import sys

MODES = ("auto", "tcmalloc", "system")
LIBRARY_NAMES = ("tcmalloc_minimal", "tcmalloc")   # gperftools' minimal and full builds
# Set on the restarted process, so that a library which fails to preload cannot loop.
REEXEC_MARKER = "SHARED_ALLOCATOR_REEXEC"
TCMALLOC_SETTINGS = {
    "TCMALLOC_RELEASE_RATE": "0",                    # keep freed pages: the point of it all
    "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 50),   # no stderr line per big buffer
}


def find_tcmalloc() -> str | None:
  """The tcmalloc shared library's name as the dynamic loader finds it, or None."""
  for name in LIBRARY_NAMES:
    found = ctypes.util.find_library(name)
    if found:
      return found
  return None


def tcmalloc_loaded(maps_path: str = "/proc/self/maps") -> bool:
  """Whether tcmalloc is mapped into this process (False where /proc does not exist)."""
  try:
    with open(maps_path, encoding="utf-8", errors="replace") as f:
      return "tcmalloc" in f.read()
  except OSError:
    return False


def reexec_env(mode: str, environ: dict, library: str | None, loaded: bool) -> dict | None:
  """The environment to restart this process with, or None to go on as it is.

  `library` is `find_tcmalloc()`, `loaded` is `tcmalloc_loaded()`; both are arguments so that
  the decision can be tested without touching the process.
  """
  if mode not in MODES:
    raise ValueError(f"--allocator={mode!r}; allowed: {', '.join(MODES)}")
  if mode == "system" or loaded or environ.get(REEXEC_MARKER):
    return None
  if library is None:
    if mode == "tcmalloc":
      raise ValueError("--allocator=tcmalloc: no libtcmalloc_minimal or libtcmalloc found by "
                       "the dynamic loader; install it (Debian/Ubuntu: apt-get install "
                       "libtcmalloc-minimal4) or use --allocator=auto or system")
    return None
  preload = environ.get("LD_PRELOAD", "").strip()
  if preload and mode == "auto":
    return None   # the user chose what to preload; do not second-guess it
  env = dict(environ)
  env["LD_PRELOAD"] = f"{library}:{preload}" if preload else library
  for name, value in TCMALLOC_SETTINGS.items():
    env.setdefault(name, value)
  env[REEXEC_MARKER] = "1"
  return env


def process_env(mode: str, environ: dict | None = None) -> dict:
  """Environment entries that start a *new* process under `mode` (for subprocesses, e.g. the
  benchmark workers): {} when nothing needs preloading."""
  environ = dict(os.environ if environ is None else environ)
  environ.pop(REEXEC_MARKER, None)
  env = reexec_env(mode, environ, find_tcmalloc(), loaded=False)
  if env is None:
    return {}
  return {k: v for k, v in env.items() if k != REEXEC_MARKER and environ.get(k) != v}


def mode_from_argv(argv: list[str], default: str = "auto") -> str:
  """The value of `--allocator` in a command line (absl's `--allocator=X` or `--allocator X`),
  read before absl parses flags so that the restart can precede the heavy imports."""
  mode = default
  for i, arg in enumerate(argv):
    if arg.startswith("--allocator="):
      mode = arg.split("=", 1)[1]
    elif arg == "--allocator" and i + 1 < len(argv):
      mode = argv[i + 1]
  return mode


def maybe_reexec(mode: str) -> None:
  """Restarts this interpreter under tcmalloc if `mode` asks for it and it is not loaded yet.

  Call before anything worth keeping happens (launch.py: first thing in main). The process
  keeps its PID, arguments, and open stdin/stdout/stderr.
  """
  env = reexec_env(mode, dict(os.environ), find_tcmalloc(), tcmalloc_loaded())
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, list(sys.orig_argv), env)


def describe() -> str:
  """One line for logs and benchmark headers: which allocator this process runs with."""
  if tcmalloc_loaded():
    return "tcmalloc (TCMALLOC_RELEASE_RATE=" + os.environ.get("TCMALLOC_RELEASE_RATE", "1") + ")"
  return "system (glibc malloc)"
