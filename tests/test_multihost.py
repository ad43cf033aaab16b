"""Several hosts of one JAX job, simulated with real processes (tools/local_hosts.py): the same
tiny run on 2 processes x 2 devices and on 1 process x 4 devices, a preemption (SIGTERM to each
process at a different moment), a lost process (SIGKILL of process 1, then of process 0, the
coordinator), a damaged checkpoint, checkpoints moved between the two topologies, and a tiny
CVAE run with its judge on both topologies.

Why tolerances between topologies: a sum over the 4 devices (the loss, the gradients, the
BatchNorm statistics, the eval sums) adds them in device order 0, 1, 2, 3 inside one process
but in another order through gloo between processes (probed with values 1e8, 1, -1e8, 1), so
the topologies differ by float32 rounding from the first step on. Measured here: the first
logged loss by 1 ulp, the last (step 16) by 1.5e-5 relative, eval loss by 8e-6, Dice / IoU /
accuracy equal; at 24 steps and full optimisation, eval metrics by up to 1e-4. Within one
topology every rerun and resume is bit-identical.

Every run compiles at XLA optimisation level 0 (XLA_FLAGS): the same numbers for every run of
this file, in half the compile time on this 2-core machine.
"""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from shared import checkpoint
from shared import metric_writer
from tests.conftest import REPO_ROOT, tiny_cvae_family_config

ARGS = ["--config=configs/unet.py:strconv_tr_bce", "--config.data.image_size=32",
        "--config.data.limit_train=64", "--config.data.limit_eval=40",
        "--config.model.depth=2", "--config.model.base_features=4",
        "--config.model.dropout_rate=0.1", "--config.train.batch_size=8",
        "--config.train.num_epochs=2", "--config.train.log_every_steps=2",
        "--config.train.checkpoint_every_steps=4", "--config.eval.batch_size=16",
        "--config.eval.num_pictures=2", "--config.data.download=false",
        # Decoded per batch, not cached: what each process decodes is what it reads.
        "--config.data.cache_max_bytes=0", "--alsologtostderr"]
TOTAL_STEPS = 16            # 64 examples / 8 per batch x 2 epochs
HEARTBEAT_S = 10            # short, but not so short that a starved process looks dead
EVAL_KEYS = ("dice", "iou", "mean_iou", "pixel_accuracy", "loss")
EVAL_ATOL = 1e-3            # between topologies (module docstring): 10x the largest measured
LOSS_RTOL = 1e-4            # 7x the largest measured
FIRST_LOSS_RTOL = 1e-6      # the same parameters: rounding of the reduction alone (~8e-8)


def _env(tfds_dir, decode_log=None, devices=None):
  env = {**os.environ, "TFDS_DATA_DIR": tfds_dir, "JAX_PLATFORMS": "cpu"}
  flags = env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
  if devices:
    flags += f" --xla_force_host_platform_device_count={devices}"
  env["XLA_FLAGS"] = flags.strip()
  if decode_log:
    env["SHARED_DATA_DECODE_LOG"] = decode_log
  return env


class Run:
  """A launch in the background: its stderr lines, the PIDs the launcher names, waits."""

  def __init__(self, workdir, tfds_dir, processes, *extra, decode_log=None, args=ARGS):
    if processes == 1:     # a plain single-process run, 4 devices
      cmd = [sys.executable, "launch.py"]
      env = _env(tfds_dir, decode_log, devices=4)
    else:
      cmd = [sys.executable, "-m", "tools.local_hosts", f"--processes={processes}",
             "--devices_per_process=2", f"--heartbeat_timeout_s={HEARTBEAT_S}", "--grace_s=60",
             "--", "launch.py"]
      env = _env(tfds_dir, decode_log)
    self.proc = subprocess.Popen(cmd + args + [f"--workdir={workdir}", *extra], cwd=REPO_ROOT,
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
    self.lines, self.pids, self._queue = [], {}, queue.Queue()
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self):
    for line in self.proc.stderr:
      self._queue.put(line)
    self._queue.put(None)

  def _next(self, deadline):
    line = self._queue.get(timeout=max(deadline - time.time(), 0.01))
    if line is not None:
      self.lines.append(line)
      m = re.match(r"local_hosts: process (\d+) of \d+: PID (\d+)", line)
      if m:
        self.pids[int(m.group(1))] = int(m.group(2))
    return line

  def wait_for(self, pattern, timeout=300):
    """Reads lines until one matches `pattern` (a regex); fails if the run ends first."""
    deadline = time.time() + timeout
    while True:
      line = self._next(deadline)
      assert line is not None, f"ended before {pattern!r}:\n" + "".join(self.lines)[-4000:]
      if re.search(pattern, line):
        return line

  def finish(self, timeout=400):
    """Waits for the end; returns (exit code, all stderr)."""
    deadline = time.time() + timeout
    try:
      while self._next(deadline) is not None:
        pass
    except queue.Empty:
      self.kill()
      pytest.fail("run did not end in time:\n" + "".join(self.lines)[-4000:])
    return self.proc.wait(), "".join(self.lines)

  def kill(self):
    for pid in self.pids.values():
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    self.proc.kill()
    self.proc.wait()


def _run(workdir, tfds_dir, processes, *extra, decode_log=None, args=ARGS):
  run = Run(workdir, tfds_dir, processes, *extra, decode_log=decode_log, args=args)
  code, log = run.finish()
  assert code == 0, log[-4000:]
  return log


def _train_losses(workdir):
  """{step: loss} of the train records (a resumed run may log a step twice: the last wins)."""
  return {r["step"]: r["loss"] for r in
          metric_writer.read_metrics(os.path.join(workdir, "metrics.jsonl"))
          if r["kind"] == "train"}


def _final(workdir):
  """The newest checkpoint's parameters, restored onto this test process's one device (the
  checkpoint was written by 4 devices in one or two processes), and eval.json."""
  ckpt = checkpoint.Checkpointer(workdir, 3)
  manager = ckpt._manager  # pylint: disable=protected-access
  step = manager.latest_step()
  here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here),
                        manager.item_metadata(step))
  params = manager.restore(step, args=ocp.args.StandardRestore(target))["params"]
  ckpt.close()
  with open(os.path.join(workdir, "eval.json")) as f:
    return params, json.load(f)


def _decodes(folder):
  """{pid: {split: [indices of each batch read, in order]}} from SHARED_DATA_DECODE_LOG."""
  out = {}
  for name in os.listdir(folder):
    per_split = out.setdefault(int(name.split("-")[1].split(".")[0]), {})
    with open(os.path.join(folder, name)) as f:
      for line in f:
        rec = json.loads(line)
        if rec["what"] == "batch":
          per_split.setdefault(rec["split"].rsplit("/", 1)[1], []).append(rec["indices"])
  return out


def _truncate(src, dst, keep_step):
  """A copy of finished workdir `src` as it was when checkpoint `keep_step` was the newest."""
  shutil.copytree(src, dst)
  for name in os.listdir(os.path.join(dst, "checkpoints")):
    if name.isdigit() and int(name) > keep_step:
      shutil.rmtree(os.path.join(dst, "checkpoints", name))
      os.remove(os.path.join(dst, "checkpoints_sha256", f"{name}.json"))
  os.remove(os.path.join(dst, "eval.json"))
  path = os.path.join(dst, "metrics.jsonl")
  with open(path) as f:
    kept = [line for line in f if json.loads(line)["step"] <= keep_step]
  with open(path, "w") as f:
    f.writelines(kept)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, tfds_dir):
  """An uninterrupted 2 x 2-device run: (workdir, log, decodes by process index)."""
  root = tmp_path_factory.mktemp("two")
  workdir, log_dir = str(root / "run"), str(root / "decodes")
  run = Run(workdir, tfds_dir, 2, decode_log=log_dir)
  code, log = run.finish()
  assert code == 0, log[-4000:]
  by_pid = _decodes(log_dir)
  return workdir, log, [by_pid[run.pids[i]] for i in range(2)]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tfds_dir):
  """The same run on 1 process x 4 devices: (workdir, decodes)."""
  root = tmp_path_factory.mktemp("one")
  workdir, log_dir = str(root / "run"), str(root / "decodes")
  _run(workdir, tfds_dir, 1, decode_log=log_dir)
  (decodes,) = _decodes(log_dir).values()
  return workdir, decodes


def _assert_close(got_dir, want_dir):
  """Same training within the topology tolerance (module docstring)."""
  got, want = _train_losses(got_dir), _train_losses(want_dir)
  assert sorted(got) == sorted(want)
  np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)],
                             rtol=LOSS_RTOL)
  _, got_eval = _final(got_dir)
  _, want_eval = _final(want_dir)
  assert got_eval["step"] == want_eval["step"] == TOTAL_STEPS
  for key in EVAL_KEYS:
    assert abs(got_eval[key] - want_eval[key]) < EVAL_ATOL, key


def _assert_identical(got_dir, want_dir, from_step=0):
  """Bit for bit: final parameters, eval.json metrics, and the train losses logged after
  `from_step` whose averaging window (2 steps) lies wholly after it."""
  got_params, got = _final(got_dir)
  want_params, want = _final(want_dir)
  for a, b in zip(jax.tree.leaves(want_params), jax.tree.leaves(got_params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for key in EVAL_KEYS + ("step", "num_eval_examples"):
    assert got[key] == want[key], key
  got_losses, want_losses = _train_losses(got_dir), _train_losses(want_dir)
  assert {s: l for s, l in got_losses.items() if s > from_step + 1} == {
      s: l for s, l in want_losses.items() if s > from_step + 1}


def test_two_processes_train_like_one_and_each_reads_only_its_share(two_processes,
                                                                    one_process):
  workdir2, log, (p0, p1) = two_processes
  workdir1, single = one_process
  # Same losses and metrics, within float32 rounding of the reduction order.
  first = min(_train_losses(workdir2))
  np.testing.assert_allclose(_train_losses(workdir2)[first], _train_losses(workdir1)[first],
                             rtol=FIRST_LOSS_RTOL)
  _assert_close(workdir2, workdir1)

  # Train: every batch (the init example, then steps 1..16) is split in two disjoint halves,
  # process 0 the first, process 1 the second: together the one process's global batch.
  assert len(p0["train"]) == len(p1["train"]) == len(single["train"]) == TOTAL_STEPS + 1
  for a, b, whole in zip(p0["train"], p1["train"], single["train"]):
    assert len(a) == len(b) == 4 and a + b == whole
  # Eval (after epochs 1 and 2): 3 batches of 16 each; the halves again make up the global
  # batch, which covers the 40 test examples once, then 8 padding rows (example 0, valid=0).
  # Pictures: process 0 alone decodes their 2 examples.
  evals = [a + b for a, b in zip(p0["test"][:6], p1["test"])]
  assert len(p1["test"]) == 6 and evals == single["test"][:6]
  for i in (0, 3):
    assert sum(evals[i:i + 3], []) == list(range(40)) + [0] * 8
  assert p0["test"][6:] == single["test"][6:] == [[0, 1]]

  # Written once, by process 0: one record per step in metrics.jsonl, one eval.json, one
  # TensorBoard file, checksums that match the committed checkpoints, nothing else.
  records = metric_writer.read_metrics(os.path.join(workdir2, "metrics.jsonl"))
  keys = [(r["kind"], r["step"]) for r in records]
  assert len(keys) == len(set(keys)) == TOTAL_STEPS // 2 + 2
  assert sorted(os.listdir(workdir2)) == sorted(
      [".lock", "checkpoints", "checkpoints_sha256", "config.json", "curves.png", "eval.json",
       "metrics.jsonl", "predictions.png", "tensorboard"])
  assert len(os.listdir(os.path.join(workdir2, "tensorboard"))) == 1
  for name in os.listdir(os.path.join(workdir2, "checkpoints_sha256")):
    with open(os.path.join(workdir2, "checkpoints_sha256", name)) as f:
      assert json.load(f) == checkpoint.file_digests(
          os.path.join(workdir2, "checkpoints", name.removesuffix(".json")),
          skip=("_CHECKPOINT_METADATA", "commit_success.txt"))
  assert sorted(os.listdir(os.path.join(workdir2, "checkpoints"))) == ["12", "16", "8"]
  wrote = [l for l in log.splitlines() if "] wrote " in l]
  assert len(wrote) == 1 and wrote[0].startswith("[p0]") and "eval.json" in wrote[0]


def _flip_bytes(folder):
  """Flips 4 KB in the middle of the biggest file of a checkpoint, its size unchanged."""
  victim = max((os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs),
               key=os.path.getsize)
  with open(victim, "r+b") as f:
    f.seek(os.path.getsize(victim) // 2)
    chunk = f.read(4096)
    f.seek(-len(chunk), os.SEEK_CUR)
    f.write(bytes(b ^ 0xFF for b in chunk))


def _kill_and_time(run, index):
  """SIGKILL to process `index`; (exit code, log, seconds until the launcher ended)."""
  os.kill(run.pids[index], signal.SIGKILL)
  killed_at = time.time()
  code, log = run.finish()
  return code, log, time.time() - killed_at


def test_preempted_then_lost_a_process_then_resumed_matches_uninterrupted(two_processes,
                                                                          tmp_path, tfds_dir):
  """One workdir, four 2-process runs: SIGTERM to process 1 then to process 0; SIGKILL of
  process 1; SIGKILL of process 0 (the coordinator); then, with the newest checkpoint's bytes
  flipped, a rerun to the end, bit-identical to the uninterrupted 2-process run."""
  workdir = str(tmp_path / "run")
  run = Run(workdir, tfds_dir, 2)
  try:
    run.wait_for(r"^\[p1\] .*step 4/16")
    os.kill(run.pids[1], signal.SIGTERM)
    time.sleep(0.5)
    os.kill(run.pids[0], signal.SIGTERM)
    code, log = run.finish()
  finally:
    run.kill()
  assert code == 128 + signal.SIGTERM, log[-4000:]
  stops = {int(m.group(1)): int(m.group(2)) for m in re.finditer(
      r"^\[p(\d)\] preempted: a preemption notice \(SIGTERM\) reached this job: every process "
      r"stopped at step (\d+)/16", log, re.M)}
  assert sorted(stops) == [0, 1] and stops[0] == stops[1], log[-4000:]
  stopped = stops[0]
  next_save = (stopped // 4 + 1) * 4       # checkpoint_every_steps=4
  assert 4 < stopped and next_save < TOTAL_STEPS, f"stopped at {stopped}: too late to go on"
  for i in (0, 1):
    assert f"local_hosts: process {i} (PID {run.pids[i]}) exited with code 143" in log
  # One checkpoint of that step, committed (checksummed), and no half-written folder.
  assert checkpoint.newest_committed_step(workdir) == stopped
  assert os.path.exists(os.path.join(workdir, "checkpoints_sha256", f"{stopped}.json"))
  assert all(n.isdigit() for n in os.listdir(os.path.join(workdir, "checkpoints")))

  # Process 1 dies (SIGKILL) after the next checkpoint: process 0 must end by itself within
  # the heartbeat timeout (plus its own exit), named, not hang; the launcher names both.
  run = Run(workdir, tfds_dir, 2)
  try:
    run.wait_for(rf"^\[p0\] .*resumed from .* at step {stopped}$")
    run.wait_for(rf"^\[p0\] .*saving checkpoint at step {next_save}$")
    run.wait_for(rf"^\[p1\] .*step {next_save + 2}/16")
    code, log, took = _kill_and_time(run, 1)
  finally:
    run.kill()
  assert code == 128 + signal.SIGKILL, log[-4000:]
  assert f"local_hosts: process 1 (PID {run.pids[1]}) was killed by SIGKILL; waiting" in log
  assert re.search(rf"local_hosts: process 0 \(PID {run.pids[0]}\) was killed by SIGABRT: JAX "
                   rf"reports process\(es\) 1 stopped sending heartbeats", log), log[-4000:]
  assert "still running" not in log              # it ended by itself, not by the launcher
  assert took < HEARTBEAT_S + 40, took
  committed = checkpoint.newest_committed_step(workdir)
  assert committed >= next_save

  # Process 0 dies: it runs JAX's coordination service, so process 1 loses it at once.
  run = Run(workdir, tfds_dir, 2)
  try:
    run.wait_for(rf"^\[p1\] .*resumed from .* at step {committed}$")
    code0, log0, took0 = _kill_and_time(run, 0)
  finally:
    run.kill()
  assert code0 == 128 + signal.SIGKILL, log0[-4000:]
  # (JAX's abort of the survivor ends in SIGABRT, sometimes in a SIGSEGV on its way out.)
  assert re.search(rf"local_hosts: process 1 \(PID {run.pids[1]}\) was killed by SIG(ABRT|SEGV): "
                   rf"JAX reports process\(es\) 0 \(the coordinator\) stopped answering", log0), (
                       log0[-4000:])
  assert "still running" not in log0 and took0 < HEARTBEAT_S + 40, took0
  assert checkpoint.newest_committed_step(workdir) == committed
  print(f"SIGTERM: every process stopped at step {stopped}; after a SIGKILL, process 0 ended "
        f"{took:.1f}s later (process 1 killed), process 1 {took0:.1f}s later (process 0 killed)")

  # The newest checkpoint is damaged: both processes find it, process 0 alone moves it aside,
  # both resume from the next older one, and the run still ends where the uninterrupted did.
  _flip_bytes(os.path.join(workdir, "checkpoints", str(committed)))
  older = max(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit()
              and int(n) < committed)
  log = _run(workdir, tfds_dir, 2)
  for i in (0, 1):
    assert re.search(rf"^\[p{i}\] .*checkpoint step {committed} in .* is damaged \(file \S+ "
                     rf"differs from its SHA-256", log, re.M), [
                         l for l in log.splitlines() if "damaged" in l]
    assert re.search(rf"^\[p{i}\] .*resumed from .* at step {older}$", log, re.M)
  moved = os.listdir(os.path.join(workdir, "checkpoints_damaged"))
  assert len(moved) == 1 and moved[0].startswith(f"{committed}-")
  _assert_identical(workdir, two_processes[0], from_step=older)


def test_checkpoints_move_between_topologies(two_processes, one_process, tmp_path, tfds_dir):
  """Step 12 of the 2-process run continued by 1 process, and step 12 of the 1-process run by
  2 processes: both restore and train on to the same result as the uninterrupted runs."""
  for src, processes in ((two_processes[0], 1), (one_process[0], 2)):
    workdir = str(tmp_path / f"to_{processes}")
    _truncate(src, workdir, keep_step=12)
    log = _run(workdir, tfds_dir, processes)
    assert re.search(r"resumed from .* at step 12$", log, re.M), log[-3000:]
    _assert_close(workdir, src)


# ---------------------------------------------------------------- the CVAE and its judge

CVAE_ARGS = ["--config=configs/cvae.py:mnist,cpu", "--config.data.limit_train=64",
             "--config.data.limit_eval=60", "--config.data.download=false",
             "--config.model.features=(4, 8)", "--config.model.hidden=16",
             "--config.model.latent_dim=4", "--config.model.critic_features=(4, 8)",
             "--config.model.critic_hidden=8", "--config.train.batch_size=16",
             "--config.train.num_epochs=1", "--config.train.log_every_steps=2",
             "--config.train.checkpoint_every_steps=4", "--config.eval.batch_size=16",
             "--config.eval.num_iterations=2", "--config.eval.num_swap_rows=2",
             "--alsologtostderr"]


def test_cvae_two_processes_judge_and_decode_like_one(tmp_path, tfds_dir):
  """Every process restores the judge (a 2-process CVAE run once failed to start on process 1,
  which cannot address process 0's device); the eval over 2 hosts' shares of the test images
  gives the 1-process figures, and process 0 alone writes decodes.npz for all 60 images."""
  if not os.path.isdir(os.path.join(tfds_dir, "mnist")):
    pytest.skip(f"prepared mnist not found in {tfds_dir}")
  from configs import classifier as classifier_configs  # pylint: disable=g-import-not-at-top
  from shared import train  # pylint: disable=g-import-not-at-top
  judge = tiny_cvae_family_config(classifier_configs.get_config("mnist,cpu"), tfds_dir)
  judge_dir = str(tmp_path / "judge")
  judge_accuracy = train.train_and_evaluate(judge, judge_dir)["accuracy"]
  results = {}
  for processes in (2, 1):
    workdir = str(tmp_path / f"cvae_{processes}")
    _run(workdir, tfds_dir, processes, f"--config.eval.classifier_workdir={judge_dir}",
         args=CVAE_ARGS)
    with open(os.path.join(workdir, "eval.json")) as f:
      result = json.load(f)
    with np.load(os.path.join(workdir, "decodes.npz")) as f:
      results[processes] = result, {key: f[key] for key in f.files}
  (two, two_npz), (one, one_npz) = results[2], results[1]
  assert two["num_eval_examples"] == one["num_eval_examples"] == 60
  assert two["classifier_accuracy"] == pytest.approx(judge_accuracy, abs=1e-6)
  assert two["neg_elbo"] == pytest.approx(one["neg_elbo"], rel=LOSS_RTOL)
  for key in ("label_adherence", "label_adherence_decoder_only", "true_label_accuracy"):
    assert abs(two[key] - one[key]) <= 1 / 60 + 1e-9, key   # a rounding may flip one image
  np.testing.assert_array_equal(two_npz["test_indices"], np.arange(60))
  for key in ("test_indices", "true_labels", "wrong_labels"):
    np.testing.assert_array_equal(two_npz[key], one_npz[key], err_msg=key)
  for key in ("wrong_label_decodes", "true_label_decodes"):
    assert two_npz[key].shape == (60, 28, 28, 1), key
    differ = np.abs(two_npz[key].astype(int) - one_npz[key].astype(int))
    assert np.mean(differ > 1) < 0.01, key     # the same decodes up to a rounding level


# ------------------------------------------------------------ without training (seconds each)

@pytest.mark.parametrize("env, message", [
    ({"JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
     "JAX_NUM_PROCESSES='two': must be an integer >= 1"),
    ({"JAX_PROCESS_ID": ""}, "JAX_NUM_PROCESSES is set but JAX_PROCESS_ID is not"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
     "JAX_PROCESS_ID=2 with JAX_NUM_PROCESSES=2: the id must be in 0..1"),
    ({"JAX_COORDINATOR_ADDRESS": "", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
     "JAX_NUM_PROCESSES=2 needs JAX_COORDINATOR_ADDRESS=HOST:PORT"),
    ({"JAX_COORDINATOR_ADDRESS": "localhost"}, "JAX_COORDINATOR_ADDRESS='localhost': expected "
                                               "HOST:PORT"),
    ({"JAX_HEARTBEAT_TIMEOUT_SECONDS": "0"}, "JAX_HEARTBEAT_TIMEOUT_SECONDS='0': must be an "
                                             "integer >= 1"),
])
def test_a_bad_multi_process_environment_is_named(env, message):
  from shared import errors, sharding  # pylint: disable=g-import-not-at-top
  base = {"JAX_COORDINATOR_ADDRESS": "localhost:1234", "JAX_NUM_PROCESSES": "2",
          "JAX_PROCESS_ID": "0"}
  with pytest.raises(errors.ConfigError, match=re.escape(message)):
    sharding.distributed_settings({**base, **env})


def test_the_multi_process_environment_is_read():
  from shared import sharding  # pylint: disable=g-import-not-at-top
  assert sharding.distributed_settings({}) is None
  assert sharding.distributed_settings({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4",
                                        "JAX_PROCESS_ID": "3",
                                        "JAX_HEARTBEAT_TIMEOUT_SECONDS": "7"}) == {
      "coordinator_address": "h:1", "num_processes": 4, "process_id": 3,
      "heartbeat_timeout_seconds": 7}
  # A TPU slice, or a cluster JAX detects itself: JAX finds the rest.
  assert sharding.distributed_settings({"TPU_WORKER_HOSTNAMES": "a,b"}) == {}
  assert sharding.distributed_settings({"JAX_COORDINATOR_ADDRESS": "h:1"}) == {
      "coordinator_address": "h:1"}


def test_launch_with_a_bad_environment_exits_2_with_one_line(tmp_path, tfds_dir):
  env = {**_env(tfds_dir), "JAX_COORDINATOR_ADDRESS": "localhost:1", "JAX_NUM_PROCESSES": "2",
         "JAX_PROCESS_ID": "5"}
  workdir = tmp_path / "run"
  proc = subprocess.run([sys.executable, "launch.py", *ARGS, f"--workdir={workdir}"],
                        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: JAX_PROCESS_ID=5 with JAX_NUM_PROCESSES=2: the id must be in 0..1")
  assert "Traceback" not in proc.stderr and not workdir.exists()


def test_sigint_in_a_multi_process_job_becomes_a_job_wide_sigterm():
  """Ctrl-C in one host's terminal must not stop that process alone: the guard hands it to
  JAX's SIGTERM notifier (stood in for here by a Python SIGTERM handler) and does not stop."""
  from shared import preemption  # pylint: disable=g-import-not-at-top
  seen = []
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
  sigint_before = signal.getsignal(signal.SIGINT)   # SIG_IGN when pytest runs in the background
  try:
    with preemption.PreemptionGuard(job_wide=True) as guard:
      os.kill(os.getpid(), signal.SIGINT)
      for _ in range(100):
        if seen:
          break
        time.sleep(0.01)
      assert seen == [signal.SIGTERM] and not guard.requested
      assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL     # a second Ctrl-C kills
    assert signal.getsignal(signal.SIGINT) == sigint_before       # restored on exit
  finally:
    signal.signal(signal.SIGTERM, previous)


CHILD = """
import os, signal, sys, time
i = int(os.environ["JAX_PROCESS_ID"])
def on_term(signum, frame):
  print(f"process {i} got SIGTERM", flush=True)
  sys.exit(143)
signal.signal(signal.SIGTERM, on_term if sys.argv[2] == "obey" else signal.SIG_IGN)
print(f"ready {i} of {os.environ['JAX_NUM_PROCESSES']} at {os.environ['JAX_COORDINATOR_ADDRESS']} "
      f"with {os.environ['XLA_FLAGS']}", flush=True)
if i == int(sys.argv[1]):
  sys.exit(3)
time.sleep(120)
"""


def _launch_children(tmp_path, *args, grace="30"):
  script = tmp_path / "child.py"
  script.write_text(CHILD)
  env = {**os.environ, "XLA_FLAGS": "--xla_dump_to=/dev/null "
                                    "--xla_force_host_platform_device_count=8"}
  return subprocess.Popen([sys.executable, "-m", "tools.local_hosts", "--processes=2",
                           "--devices_per_process=3", f"--grace_s={grace}", "--", str(script),
                           *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def test_launcher_gives_each_process_its_env_and_turns_ctrl_c_into_sigterm_for_all(tmp_path):
  launcher = _launch_children(tmp_path, "-1", "obey")
  ready = [launcher.stdout.readline(), launcher.stdout.readline()]
  launcher.send_signal(signal.SIGINT)
  out, err = launcher.communicate(timeout=60)
  assert launcher.returncode == 143, err
  port = re.search(r"localhost:(\d+)", ready[0]).group(1)
  for i in (0, 1):
    assert (f"[p{i}] ready {i} of 2 at localhost:{port} with --xla_dump_to=/dev/null "
            f"--xla_force_host_platform_device_count=3\n") in ready
    assert f"[p{i}] process {i} got SIGTERM" in out
    assert re.search(rf"local_hosts: process {i} \(PID \d+\) exited with code 143", err)


SIGNALLED_WHILE_STARTING = """
import os, signal, sys
from tools import local_hosts

class SignalledWhileStarting(local_hosts.Job):
  def __init__(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)    # before any of the processes exists
    super().__init__(*args, **kwargs)

local_hosts.Job = SignalledWhileStarting
sys.exit(local_hosts.run([sys.argv[1], "-1", "obey"], 2, 1, grace_s=30))
"""


def test_launcher_passes_on_a_signal_that_comes_while_the_processes_start(tmp_path):
  """The handler is in place before the first process starts: a SIGTERM (or a Ctrl-C) in that
  window reaches every process once they exist, instead of killing the launcher alone or (with
  SIGINT inherited as ignored, as by a command a script starts with `&`) being lost while the
  job runs on: the Ctrl-C test below timed out that way in a suite started in the background."""
  child, driver = tmp_path / "child.py", tmp_path / "driver.py"
  child.write_text(CHILD)
  driver.write_text(SIGNALLED_WHILE_STARTING)
  result = subprocess.run([sys.executable, str(driver), str(child)], cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": REPO_ROOT}, capture_output=True,
                          text=True, timeout=60, check=False)
  assert result.returncode == 143, result.stderr
  assert result.stderr.count("received SIGTERM: sending SIGTERM to every process") == 1
  for i in (0, 1):     # (just started, a process may not have its own handler yet)
    assert re.search(rf"process {i} \(PID \d+\) (was killed by SIGTERM|exited with code 143)",
                     result.stderr), result.stderr


def test_launcher_names_a_failed_process_and_stops_the_others_after_the_grace_period(tmp_path):
  launcher = _launch_children(tmp_path, "1", "ignore", grace="1")
  start = time.time()
  _, err = launcher.communicate(timeout=60)
  assert launcher.returncode == 3, err
  assert time.time() - start < 30
  lines = [l for l in err.splitlines() if l.startswith("local_hosts:")]
  pids = dict(re.findall(r"process (\d) of 2: PID (\d+)", err))
  assert lines[2] == (f"local_hosts: process 1 (PID {pids['1']}) exited with code 3; waiting up "
                      f"to 1s for process(es) 0 to end")
  assert lines[3] == (f"local_hosts: process 0 (PID {pids['0']}) still running 1s after process "
                      f"1 failed: killing it")
  assert lines[-1] == "local_hosts: job failed: exit code 3"


def _alive(pid):
  try:
    with open(f"/proc/{pid}/status") as f:
      return "\nState:\tZ" not in f.read()     # a zombie has ended
  except FileNotFoundError:
    return False


def test_processes_do_not_outlive_a_killed_launcher(tmp_path):
  launcher = _launch_children(tmp_path, "-1", "obey")
  pids = []
  while len(pids) < 2:
    pids += re.findall(r"PID (\d+)", launcher.stderr.readline())
  launcher.stdout.readline()
  launcher.kill()              # SIGKILL: no clean-up of its own; the kernel sends SIGTERM
  launcher.wait()
  deadline = time.time() + 30
  while any(_alive(int(p)) for p in pids) and time.time() < deadline:
    time.sleep(0.1)
  assert not any(_alive(int(p)) for p in pids)


def test_the_launcher_reads_which_process_jax_lost():
  from tools import local_hosts  # pylint: disable=g-import-not-at-top
  heartbeat = ["E1204 coordination_service.cc:123] Task 1 heartbeat timeout. This indicates ..."]
  listing = ["The following tasks are unhealthy (stopped sending heartbeats):", "2, 3", "more"]
  coordinator = ["F1204 client.h:80] Terminating process ... absl::Status: UNAVAILABLE: Failed to "
                 "send RPC to coordination service. Either the leader task was preempted/died/"
                 "restarted unexpectedly or this task is experiencing network issues."]
  assert local_hosts.lost_tasks(heartbeat) == {1: "stopped sending heartbeats"}
  assert local_hosts.lost_tasks(listing) == {2: "stopped sending heartbeats",
                                             3: "stopped sending heartbeats"}
  assert local_hosts.lost_tasks(coordinator) == {0: "(the coordinator) stopped answering"}
  assert local_hosts.lost_tasks(["Task 1 finished", "all fine"]) == {}
  assert local_hosts.describe_lost(local_hosts.lost_tasks(listing + coordinator)) == (
      ": JAX reports process(es) 0 (the coordinator) stopped answering; process(es) 2, 3 "
      "stopped sending heartbeats")
  assert local_hosts.describe_lost({}) == ""
