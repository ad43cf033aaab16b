"""One run per workdir (shared/workdir_lock.py), with real processes holding the lock."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from shared import errors
from shared import workdir_lock
from tests.conftest import REPO_ROOT

HOLDER = """
import time
from shared import workdir_lock
lock = workdir_lock.WorkdirLock({workdir!r})
lock.acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _hold(workdir):
  """A separate process that takes the workdir's lock and sleeps; returns once it holds it.
  `python -c` in the repo root imports the project from there (cwd is on its sys.path)."""
  proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(workdir=workdir)], cwd=REPO_ROOT,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_a_second_run_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
  workdir = str(tmp_path)
  holder = _hold(workdir)
  try:
    with pytest.raises(errors.WorkdirError) as err:
      workdir_lock.WorkdirLock(workdir).acquire()
    message = str(err.value)
    assert f"PID {holder.pid} on host {socket.gethostname()}" in message
    assert "choose another --workdir" in message
  finally:
    holder.send_signal(signal.SIGKILL)     # no clean-up code runs
    holder.wait()
  # The kernel dropped the dead process's lock: the next run takes the workdir over.
  with workdir_lock.WorkdirLock(workdir) as lock:
    with open(lock.path) as f:
      assert f'"pid": {os.getpid()}' in f.read()
  with open(os.path.join(workdir, workdir_lock.LOCK_NAME)) as f:
    assert f.read() == ""                  # released: emptied, not deleted


def test_launch_on_a_workdir_in_use_exits_2_with_one_line(tmp_path, tfds_dir):
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)
  holder = _hold(workdir)
  try:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TFDS_DATA_DIR": tfds_dir}
    start = time.time()
    proc = subprocess.run([sys.executable, "launch.py", "--config=configs/unet.py:mp_tr_bce,cpu",
                           f"--workdir={workdir}"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  finally:
    holder.kill()
    holder.wait()
  assert proc.returncode == 2, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert f"is in use by another run (PID {holder.pid}" in last and "Traceback" not in proc.stderr
  # Refused before anything was written into the workdir.
  assert sorted(os.listdir(workdir)) == [workdir_lock.LOCK_NAME]
  assert time.time() - start < 120
