"""Runs one command as N processes of one JAX job on this machine: several hosts of a pod slice,
simulated with processes that each have their own CPU devices.

  python -m tools.local_hosts --processes=2 --devices_per_process=2 -- \\
      launch.py --config=configs/unet.py:mp_tr_bce,cpu --workdir=runs/two_hosts

Why a tool and not a launch.py flag: launch.py is what every host of a real pod runs, unchanged;
starting, watching and stopping the N processes is the cluster's job there and this tool's here.
Keeping the two apart means the pod path carries no supervisor code, and the simulation runs
exactly the per-host code path (`shared/sharding.maybe_initialize_distributed`).

Process I runs `python ARGS...` (this interpreter) in this folder with JAX_COORDINATOR_ADDRESS=
localhost:PORT (a free port unless --port), JAX_NUM_PROCESSES=N, JAX_PROCESS_ID=I,
JAX_PLATFORMS=cpu and XLA_FLAGS=--xla_force_host_platform_device_count=D (other XLA flags are
kept). Its output lines are prefixed `[pI] `; this tool's own lines start `local_hosts:`.

  * A process that ends with a non-zero code or a signal while others still run is named at
    once (index, PID, exit code or signal). The others get --grace_s to end by themselves (a
    JAX job that lost a process aborts on its own after JAX_HEARTBEAT_TIMEOUT_SECONDS, set by
    --heartbeat_timeout_s), then they are killed (SIGKILL) and named too.
  * SIGINT or SIGTERM to this tool sends SIGTERM to every process: a preemption of the whole
    job (they agree on a step, checkpoint it and exit 143). A second one kills them. One that
    comes while the processes are being started is passed on as soon as they exist.
  * If this tool dies, the kernel sends its processes SIGTERM (no orphans left training).
  * Exit code: 0 when every process exited 0; else the code they all share (143 after a
    preemption, 2 for a config error); else that of the first process to fail (128 + signal
    for a signal).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app
from absl import flags

_PROCESSES = flags.DEFINE_integer("processes", 2, "Number of processes (simulated hosts).")
_DEVICES = flags.DEFINE_integer("devices_per_process", 1, "CPU devices each process has.")
_PORT = flags.DEFINE_integer("port", 0, "Coordinator port on localhost; 0: a free one.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_s", None, "JAX_HEARTBEAT_TIMEOUT_SECONDS for the processes: how long "
    "the survivors of a lost process wait before they abort (default: JAX's, 100 s).")
_GRACE = flags.DEFINE_float(
    "grace_s", None, "After a process failed, how long the others may take to end by "
    "themselves before they are killed (default: the heartbeat timeout + 30 s).")

JAX_DEFAULT_HEARTBEAT_S = 100
_DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count(=\S*)?")
# JAX's abort in a survivor names the processes (JAX "tasks") it lost: "Task 1 heartbeat
# timeout", and "The following tasks are unhealthy (stopped sending heartbeats):" followed by
# a line of task ids.
_HEARTBEAT_TIMEOUT = re.compile(r"Task (\d+) heartbeat timeout")
_UNHEALTHY = re.compile(r"unhealthy \(stopped sending heartbeats\)")
_TASK_IDS = re.compile(r"[\d,\s]+")
# A survivor whose coordinator is gone says instead "Failed to send RPC to coordination
# service. Either the leader task was preempted/died/restarted unexpectedly or ...".
_COORDINATOR_GONE = re.compile(r"leader task was preempted/died")
COORDINATOR = 0   # jax.distributed runs its coordination service in process 0
HEARTBEATS_STOPPED = "stopped sending heartbeats"
COORDINATOR_GONE = "(the coordinator) stopped answering"


def free_port() -> int:
  """A TCP port no one listens on now (bound to port 0, then released)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def process_env(environ, index: int, count: int, devices: int, port: int,
                heartbeat_s: int | None) -> dict[str, str]:
  """The environment of process `index` of `count`."""
  env = dict(environ)
  xla = _DEVICE_COUNT_FLAG.sub("", env.get("XLA_FLAGS", "")).split()
  env["XLA_FLAGS"] = " ".join(xla + [f"--xla_force_host_platform_device_count={devices}"])
  env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=str(count),
             JAX_PROCESS_ID=str(index), JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  if heartbeat_s is not None:
    env["JAX_HEARTBEAT_TIMEOUT_SECONDS"] = str(heartbeat_s)
  return env


def describe_exit(code: int) -> str:
  if code < 0:
    try:
      return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
      return f"was killed by signal {-code}"
  if code in (128 + signal.SIGTERM, 128 + signal.SIGINT):
    return f"exited with code {code} (preempted)"
  return f"exited with code {code}"


def lost_tasks(lines) -> dict[int, str]:
  """{process id: how it was lost} from JAX's abort in `lines` (module comments above)."""
  lost, listing = {}, False
  for line in lines:
    lost.update((int(t), HEARTBEATS_STOPPED) for t in _HEARTBEAT_TIMEOUT.findall(line))
    if listing and _TASK_IDS.fullmatch(line.strip() or "x"):
      lost.update((int(t), HEARTBEATS_STOPPED) for t in re.findall(r"\d+", line))
    listing = bool(_UNHEALTHY.search(line)) or (listing and bool(_TASK_IDS.fullmatch(
        line.strip() or "x")))
    if _COORDINATOR_GONE.search(line):
      lost[COORDINATOR] = COORDINATOR_GONE
  return lost


def describe_lost(lost: dict[int, str]) -> str:
  """': JAX reports process(es) 1 stopped sending heartbeats', or '' when nothing was lost."""
  by_how: dict[str, list[int]] = {}
  for task, how in sorted(lost.items()):
    by_how.setdefault(how, []).append(task)
  return "".join(
      f"{'; ' if i else ': JAX reports '}process(es) {', '.join(map(str, tasks))} {how}"
      for i, (how, tasks) in enumerate(by_how.items()))


def exit_code(codes: list[int], first_failure: int | None) -> int:
  """0 if all are 0; the code all share; else the first failure's (128 + signal for signals)."""
  shell = [128 - c if c < 0 else c for c in codes]
  if all(c == 0 for c in shell):
    return 0
  if len(set(shell)) == 1:
    return shell[0]
  return shell[first_failure] if first_failure is not None else next(c for c in shell if c)


try:
  _LIBC = ctypes.CDLL(None, use_errno=True)    # loaded here, not between fork and exec
except OSError:
  _LIBC = None


def _die_with_parent() -> None:
  """In the child before exec: SIGTERM when this tool's thread that started it ends (Linux)."""
  if _LIBC is not None and hasattr(_LIBC, "prctl"):
    _LIBC.prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG


class Job:
  """The N processes, their prefixed output and what each of them said about lost peers."""

  def __init__(self, argv: list[str], count: int, devices: int, port: int,
               heartbeat_s: int | None):
    self.count = count
    self._lock = threading.Lock()
    self.lost_peers: dict[int, dict[int, str]] = {i: {} for i in range(count)}
    self.procs, self._threads = [], []
    for i in range(count):
      proc = subprocess.Popen([sys.executable, *argv],
                              env=process_env(os.environ, i, count, devices, port, heartbeat_s),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              errors="replace", start_new_session=True,
                              preexec_fn=_die_with_parent)
      self.procs.append(proc)
      say(f"process {i} of {count}: PID {proc.pid}")
    # Readers only once every process is started: no thread runs while a child is forked.
    for i, proc in enumerate(self.procs):
      for stream, out in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr)):
        t = threading.Thread(target=self._pump, args=(i, stream, out), daemon=True)
        t.start()
        self._threads.append(t)

  def _pump(self, index: int, stream, out) -> None:
    previous = ""
    for line in stream:
      self.lost_peers[index].update(lost_tasks([previous, line]))
      previous = line
      with self._lock:
        out.write(f"[p{index}] {line}")
        out.flush()

  def signal_all(self, signum: int) -> None:
    for proc in self.procs:
      if proc.poll() is None:
        try:
          os.kill(proc.pid, signum)
        except ProcessLookupError:
          pass

  def join_output(self) -> None:
    for t in self._threads:
      t.join(timeout=10)


def say(message: str) -> None:
  sys.stderr.write(f"local_hosts: {message}\n")
  sys.stderr.flush()


def run(argv: list[str], count: int, devices: int, port: int = 0,
        heartbeat_s: int | None = None, grace_s: float | None = None) -> int:
  """Starts the job, waits for every process, returns the exit code (module docstring)."""
  port = port or free_port()
  if grace_s is None:
    grace_s = (heartbeat_s or JAX_DEFAULT_HEARTBEAT_S) + 30
  signals_seen, forwarded, job = [], [0], None

  def forward() -> None:
    """Passes on every signal not passed on yet: the first as SIGTERM, any later as SIGKILL."""
    while forwarded[0] < len(signals_seen):
      forwarded[0] += 1
      if forwarded[0] == 1:
        say(f"received {signal.Signals(signals_seen[0]).name}: sending SIGTERM to every "
            "process (a preemption of the whole job); again to kill them")
      job.signal_all(signal.SIGTERM if forwarded[0] == 1 else signal.SIGKILL)

  def on_signal(signum, frame):
    del frame
    signals_seen.append(signum)
    if job is not None:     # else passed on as soon as the processes exist
      forward()

  # Installed before the processes start: a Ctrl-C or SIGTERM that comes while they are being
  # started still reaches every one of them (and is never lost or left to kill this tool alone).
  previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
  codes: list[int | None] = [None] * count
  first_failure, deadline = None, None
  try:
    job = Job(argv, count, devices, port, heartbeat_s)
    forward()
    while None in codes:
      for i, proc in enumerate(job.procs):
        if codes[i] is None and proc.poll() is not None:
          codes[i] = proc.returncode
          if proc.returncode != 0 and first_failure is None:
            first_failure = i
            running = [j for j in range(count) if codes[j] is None]
            if running:
              deadline = time.time() + grace_s
              say(f"process {i} (PID {proc.pid}) {describe_exit(proc.returncode)}; waiting up "
                  f"to {grace_s:.0f}s for process(es) {', '.join(map(str, running))} to end")
      if deadline is not None and time.time() > deadline and None in codes:
        for j, proc in enumerate(job.procs):
          if codes[j] is None:
            say(f"process {j} (PID {proc.pid}) still running {grace_s:.0f}s after process "
                f"{first_failure} failed: killing it")
            proc.kill()
        deadline = None
      time.sleep(0.1)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  job.join_output()
  for i, proc in enumerate(job.procs):
    if codes[i] != 0:
      lost = {task: how for task, how in job.lost_peers[i].items() if task != i}
      say(f"process {i} (PID {proc.pid}) {describe_exit(codes[i])}{describe_lost(lost)}")
  code = exit_code(codes, first_failure)
  say("every process exited with code 0" if code == 0 else f"job failed: exit code {code}")
  return code


def main(argv):
  command = argv[1:]
  problems = []
  if not command:
    problems.append("no command: give the script and its flags after --, e.g. "
                    "`-- launch.py --config=... --workdir=...`")
  if _PROCESSES.value < 1:
    problems.append(f"--processes={_PROCESSES.value}: must be >= 1")
  if _DEVICES.value < 1:
    problems.append(f"--devices_per_process={_DEVICES.value}: must be >= 1")
  if _HEARTBEAT.value is not None and _HEARTBEAT.value < 1:
    problems.append(f"--heartbeat_timeout_s={_HEARTBEAT.value}: must be >= 1")
  if problems:
    print(f"local_hosts: {problems[0]}", file=sys.stderr)
    sys.exit(2)
  sys.exit(run(command, _PROCESSES.value, _DEVICES.value, _PORT.value, _HEARTBEAT.value,
               _GRACE.value))


if __name__ == "__main__":
  app.run(main)
