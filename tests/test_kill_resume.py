"""Real processes killed mid-run (SIGKILL at several points, SIGTERM), restarted with the same
command, and compared bit for bit with an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from shared import checkpoint
from tests.conftest import REPO_ROOT

ARGS = ["--config=configs/unet.py:strconv_tr_bce", "--config.data.image_size=32",
        "--config.data.limit_train=64", "--config.data.limit_eval=40",
        "--config.model.depth=2", "--config.model.base_features=4",
        "--config.model.dropout_rate=0.1", "--config.train.batch_size=8",
        "--config.train.num_epochs=3", "--config.train.log_every_steps=2",
        "--config.train.checkpoint_every_steps=4", "--config.eval.batch_size=16",
        "--config.eval.num_pictures=2", "--config.data.download=false", "--alsologtostderr"]
METRICS = ("dice", "iou", "mean_iou", "pixel_accuracy", "loss", "step")


def _cmd(workdir):
  return [sys.executable, "launch.py", *ARGS, f"--workdir={workdir}"]


def _env(tfds_dir):
  return {**os.environ, "TFDS_DATA_DIR": tfds_dir, "JAX_PLATFORMS": "cpu"}


def _run(workdir, tfds_dir):
  proc = subprocess.run(_cmd(workdir), cwd=REPO_ROOT, env=_env(tfds_dir), capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _start_and_signal(workdir, tfds_dir, marker, signum, **env):
  """Starts the run, waits for a log line containing `marker`, sends `signum`."""
  proc = subprocess.Popen(_cmd(workdir), cwd=REPO_ROOT, env={**_env(tfds_dir), **env},
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
  seen = []
  for line in proc.stderr:
    seen.append(line)
    if marker in line:
      proc.send_signal(signum)
      break
  rest = proc.stderr.read()
  proc.wait(timeout=300)
  assert any(marker in l for l in seen), "".join(seen)[-3000:]
  return proc.returncode, "".join(seen) + rest


def _final(workdir):
  ckpt = checkpoint.Checkpointer(workdir, 3)
  params = ckpt._manager.restore(ckpt.latest_step())["params"]  # pylint: disable=protected-access
  ckpt.close()
  with open(os.path.join(workdir, "eval.json")) as f:
    return params, json.load(f)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tfds_dir):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  _run(workdir, tfds_dir)
  return _final(workdir)


def _assert_identical(reference, workdir):
  want_params, want = reference
  got_params, got = _final(workdir)
  for a, b in zip(jax.tree.leaves(want_params), jax.tree.leaves(got_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for key in METRICS:
    assert got[key] == want[key], key


def test_killed_and_preempted_repeatedly_then_matches_uninterrupted(reference, tmp_path,
                                                                    tfds_dir):
  """One workdir, interrupted five times, each restart the same command:
  SIGKILL mid-epoch after a logged step, SIGKILL right after an asynchronous checkpoint write
  starts, SIGTERM (must commit the current step and say how to resume), SIGINT while the train
  step compiles (must stop before training a step), SIGKILL mid-evaluation.
  """
  workdir = str(tmp_path / "run")
  # (Saves are asynchronous: a kill may land before step 4's checkpoint is committed, in which
  # case the restart begins at step 0. Either way it must end identical.)
  code, _ = _start_and_signal(workdir, tfds_dir, "step 6/24", signal.SIGKILL)
  assert code == -signal.SIGKILL

  code, log = _start_and_signal(workdir, tfds_dir, "saving checkpoint at step 8", signal.SIGKILL)
  assert code == -signal.SIGKILL

  code, log = _start_and_signal(workdir, tfds_dir, "step 10/24", signal.SIGTERM)
  assert code == 128 + signal.SIGTERM
  line = [l for l in log.splitlines() if l.startswith("preempted:")][-1]
  stopped_at = int(line.split(" at step ")[1].split("/")[0])
  assert stopped_at >= 10 and "Re-run the same command to resume" in line
  assert checkpoint.Checkpointer(workdir, 3).latest_step() == stopped_at   # the current step

  # Ctrl-C while the resumed run compiles its train step: no step trained, nothing new saved.
  # (With the session's compilation cache off: the step really compiles, for seconds.)
  code, log = _start_and_signal(workdir, tfds_dir, "compiling the train step", signal.SIGINT,
                                JAX_ENABLE_COMPILATION_CACHE="false")
  assert code == 128 + signal.SIGINT, log[-3000:]
  assert (f"received SIGINT while the train step compiled; no step was trained (checkpoint "
          f"step {stopped_at} is unchanged)") in log
  assert "Traceback" not in log
  assert checkpoint.Checkpointer(workdir, 3).latest_step() == stopped_at

  code, log = _start_and_signal(workdir, tfds_dir, "evaluating at step 16", signal.SIGKILL)
  assert code == -signal.SIGKILL
  assert f"resumed from {workdir}/checkpoints at step {stopped_at}" in log
  assert not os.path.exists(os.path.join(workdir, "eval.json"))

  _run(workdir, tfds_dir)
  _assert_identical(reference, workdir)


# ------------------------------------------ signals outside the train steps (in-process, exact)

def _signal_when(monkeypatch, module, name, calls_before=0, signum=signal.SIGTERM):
  """Wraps `module.name` so that its (calls_before + 1)-th call first sends this process a real
  `signum`, the way a preemption lands in the middle of that phase."""
  original, count = getattr(module, name), [0]

  def wrapped(*args, **kwargs):
    count[0] += 1
    if count[0] == calls_before + 1:
      os.kill(os.getpid(), signum)
    return original(*args, **kwargs)
  monkeypatch.setattr(module, name, wrapped)


def test_signal_while_data_loads_ends_before_anything_is_written(tfds_dir, tmp_path,
                                                                 monkeypatch):
  from shared import data, errors, train  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_unet_config  # pylint: disable=g-import-not-at-top
  _signal_when(monkeypatch, data, "steps_per_epoch", signum=signal.SIGINT)
  with pytest.raises(errors.Preempted, match="received SIGINT while loading data; nothing was "
                                             "written") as err:
    train.train_and_evaluate(tiny_unet_config(tfds_dir), str(tmp_path))
  assert err.value.exit_code == 128 + signal.SIGINT
  assert sorted(os.listdir(tmp_path)) == [".lock"]


def test_signal_during_the_final_eval_commits_and_the_rerun_finishes(tfds_dir, tmp_path,
                                                                     monkeypatch):
  from shared import data, errors, train  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_unet_config  # pylint: disable=g-import-not-at-top
  config = tiny_unet_config(tfds_dir)        # 8 steps, evals after epochs 1 and 2
  _signal_when(monkeypatch, data, "eval_batches", calls_before=1)      # the final eval
  with pytest.raises(errors.Preempted, match=r"received SIGTERM at step 8/8: checkpoint "
                                             r"committed"):
    train.train_and_evaluate(config, str(tmp_path))
  assert checkpoint.Checkpointer(str(tmp_path), 3).latest_step() == 8
  assert not os.path.exists(tmp_path / "eval.json")
  monkeypatch.undo()
  assert train.train_and_evaluate(config, str(tmp_path))["step"] == 8
  assert os.path.exists(tmp_path / "eval.json")
