"""shared/process/allocator.py: when a process restarts under tcmalloc, with what environment, and that
the restart really loads it (launch.py's path)."""

import os
import subprocess
import sys

import pytest

from shared.process import allocator

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = "libtcmalloc_minimal.so.4"


def test_auto_restarts_under_tcmalloc_with_memory_kept():
  env = allocator.reexec_env("auto", {"PATH": "/bin"}, LIB, loaded=False)
  assert env["LD_PRELOAD"] == LIB
  assert env["TCMALLOC_RELEASE_RATE"] == "0"
  assert env[allocator.REEXEC_MARKER] == "1"
  assert env["PATH"] == "/bin"                       # the rest of the environment is kept


def test_no_restart_when_not_needed_or_not_possible():
  assert allocator.reexec_env("system", {}, LIB, loaded=False) is None
  assert allocator.reexec_env("auto", {}, LIB, loaded=True) is None       # already under it
  assert allocator.reexec_env("auto", {}, None, loaded=False) is None     # not installed
  # A restarted process whose preload failed must not restart again (no exec loop).
  assert allocator.reexec_env("auto", {allocator.REEXEC_MARKER: "1"}, LIB, loaded=False) is None
  # auto leaves a user's own LD_PRELOAD alone; an explicit tcmalloc request goes first in it.
  assert allocator.reexec_env("auto", {"LD_PRELOAD": "libjemalloc.so.2"}, LIB, False) is None
  env = allocator.reexec_env("tcmalloc", {"LD_PRELOAD": "libfoo.so"}, LIB, loaded=False)
  assert env["LD_PRELOAD"] == f"{LIB}:libfoo.so"


def test_user_settings_win_and_bad_requests_are_named():
  env = allocator.reexec_env("auto", {"TCMALLOC_RELEASE_RATE": "5"}, LIB, loaded=False)
  assert env["TCMALLOC_RELEASE_RATE"] == "5"
  with pytest.raises(ValueError, match="libtcmalloc-minimal4"):
    allocator.reexec_env("tcmalloc", {}, None, loaded=False)
  with pytest.raises(ValueError, match="--allocator='jemalloc'; allowed: auto, tcmalloc"):
    allocator.reexec_env("jemalloc", {}, LIB, loaded=False)


def test_mode_from_argv_reads_both_absl_spellings():
  assert allocator.mode_from_argv(["--config=c.py"]) == "auto"
  assert allocator.mode_from_argv(["--allocator=system", "--workdir=w"]) == "system"
  assert allocator.mode_from_argv(["--allocator", "tcmalloc"]) == "tcmalloc"


def test_process_env_for_subprocesses_adds_only_what_changes(monkeypatch):
  monkeypatch.setattr(allocator, "find_tcmalloc", lambda: LIB)
  env = allocator.process_env("auto", {"PATH": "/bin", allocator.REEXEC_MARKER: "1"})
  assert env == {"LD_PRELOAD": LIB, "TCMALLOC_RELEASE_RATE": "0",
                 "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 50)}
  assert allocator.process_env("system", {"PATH": "/bin"}) == {}


def test_tcmalloc_loaded_reads_the_process_maps(tmp_path):
  maps = tmp_path / "maps"
  maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
  assert not allocator.tcmalloc_loaded(str(maps))
  maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/libtcmalloc_minimal.so.4.5.10\n")
  assert allocator.tcmalloc_loaded(str(maps))
  assert not allocator.tcmalloc_loaded(str(tmp_path / "missing"))


_PROBE = ("import os; from shared.process import allocator; "
          "allocator.maybe_reexec({mode!r}); "
          "print(allocator.tcmalloc_loaded(), os.environ.get('TCMALLOC_RELEASE_RATE'))")


@pytest.mark.parametrize("mode", ["auto", "system"])
def test_restart_loads_tcmalloc_in_a_real_process(mode):
  """The exec path itself: a fresh interpreter restarts (same PID, same argv) and then has
  tcmalloc mapped, when the machine has it; under `system` it never does."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", "TCMALLOC_RELEASE_RATE", allocator.REEXEC_MARKER)}
  # `python -c` in the repo root imports the project from there (cwd is on its sys.path).
  proc = subprocess.run([sys.executable, "-c", _PROBE.format(mode=mode)], cwd=REPO_ROOT,
                        env=env, capture_output=True, text=True, timeout=60, check=True)
  expect_loaded = mode == "auto" and allocator.find_tcmalloc() is not None
  assert proc.stdout.split() == ([str(True), "0"] if expect_loaded else [str(False), "None"])
