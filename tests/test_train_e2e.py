"""End-to-end: real tiny runs through the launcher's code path on the real pet data."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from shared import checkpoint
from shared import metric_writer
from shared import train
from tests.conftest import REPO_ROOT, tiny_unet_config

REQUIRED_KEYS = {"variant", "dice", "iou", "mean_iou", "pixel_accuracy", "num_params",
                 "num_eval_examples", "step", "train_time_s", "images_per_s", "config"}
CLI_OVERRIDES = ["--config.data.image_size=32", "--config.data.limit_train=32",
                 "--config.data.limit_eval=40", "--config.model.depth=2",
                 "--config.model.base_features=4", "--config.train.batch_size=8",
                 "--config.train.log_every_steps=2", "--config.train.checkpoint_every_steps=4",
                 "--config.eval.batch_size=16", "--config.eval.num_pictures=4",
                 "--config.data.download=false"]


def _launch(workdir, variant, *extra, devices=None, tfds_dir):
  env = {**os.environ, "TFDS_DATA_DIR": tfds_dir, "JAX_PLATFORMS": "cpu"}
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  cmd = [sys.executable, "launch.py", f"--config=configs/unet.py:{variant}",
         f"--workdir={workdir}", *CLI_OVERRIDES, *extra]
  proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _train_losses(workdir):
  return [r["loss"] for r in metric_writer.read_metrics(os.path.join(workdir, "metrics.jsonl"))
          if r["kind"] == "train"]


def test_launch_trains_and_writes_all_outputs(tmp_path, tfds_dir):
  workdir = str(tmp_path / "run")
  proc = _launch(workdir, "strconv_ups_dice", "--config.train.num_epochs=6",
                 "--config.optimizer.learning_rate=0.01", tfds_dir=tfds_dir)
  assert "step 24/24" in proc.stderr and "ETA" in proc.stderr and "img/s" in proc.stderr
  with open(os.path.join(workdir, "eval.json")) as f:
    result = json.load(f)
  assert REQUIRED_KEYS <= set(result)
  assert result["variant"] == "strconv_ups_dice" and result["step"] == 24
  assert result["num_eval_examples"] == 40
  assert result["config"]["model"]["upsample"] == "upsample"   # CLI overrides took effect
  assert result["config"]["data"]["image_size"] == 32
  assert 0 <= result["dice"] <= 1 and 0 <= result["pixel_accuracy"] <= 1
  losses = _train_losses(workdir)
  assert np.mean(losses[-3:]) < np.mean(losses[:2])   # it learned something
  assert checkpoint.Checkpointer(workdir, 3).latest_step() == 24
  for name in ("predictions.png", "curves.png", "metrics.jsonl", "config.json"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(os.path.join(workdir, "tensorboard")))
  kinds = {r["kind"] for r in metric_writer.read_metrics(os.path.join(workdir, "metrics.jsonl"))}
  assert kinds == {"train", "eval"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tfds_dir):
  workdir = str(tmp_path_factory.mktemp("full"))
  config = tiny_unet_config(tfds_dir, "mp_tr_bce", **{"model.dropout_rate": 0.1})
  result = train.train_and_evaluate(config, workdir)
  return config, workdir, result


def _final_params(workdir):
  ckpt = checkpoint.Checkpointer(workdir, 3)
  return ckpt._manager.restore(ckpt.latest_step())["params"]  # pylint: disable=protected-access


def test_resume_from_checkpoint_reproduces_uninterrupted_run(finished_run, tmp_path):
  config, workdir, result = finished_run
  assert result["step"] == 8
  # Pretend the run died after step 4: keep only that checkpoint and rerun the same command.
  resumed_dir = str(tmp_path / "resumed")
  shutil.copytree(workdir, resumed_dir)
  shutil.rmtree(os.path.join(resumed_dir, "checkpoints", "8"))
  os.remove(os.path.join(resumed_dir, "eval.json"))
  resumed = train.train_and_evaluate(config, resumed_dir)
  assert resumed["step"] == 8
  for key in ("dice", "iou", "pixel_accuracy", "loss"):
    assert resumed[key] == result[key]
  # It really resumed: only steps 6 and 8 were trained (and logged) again.
  steps = [r["step"] for r in metric_writer.read_metrics(
      os.path.join(resumed_dir, "metrics.jsonl")) if r["kind"] == "train"]
  assert steps == [2, 4, 6, 8, 6, 8]
  want, got = _final_params(workdir), _final_params(resumed_dir)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_eval_mode_reevaluates_latest_checkpoint(finished_run, tmp_path):
  config, workdir, result = finished_run
  eval_dir = str(tmp_path / "eval")
  shutil.copytree(workdir, eval_dir)
  config = config.copy_and_resolve_references()
  config.mode = "eval"
  again = train.train_and_evaluate(config, eval_dir)
  assert again["step"] == result["step"]
  for key in ("dice", "iou", "mean_iou", "pixel_accuracy"):
    assert again[key] == pytest.approx(result[key], abs=1e-12)


def test_eval_mode_without_checkpoint_fails_clearly(tfds_dir, tmp_path):
  config = tiny_unet_config(tfds_dir)
  config.mode = "eval"
  with pytest.raises(FileNotFoundError, match="needs a checkpoint in .*checkpoints"):
    train.train_and_evaluate(config, str(tmp_path))


def test_eight_devices_match_one_device(tmp_path, tfds_dir):
  """Data parallel over 8 simulated CPU devices gives the 1-device losses (global BatchNorm)."""
  one, eight = str(tmp_path / "one"), str(tmp_path / "eight")
  _launch(one, "mp_tr_bce", "--config.train.num_epochs=1", devices=1, tfds_dir=tfds_dir)
  proc = _launch(eight, "mp_tr_bce", "--config.train.num_epochs=1", devices=8,
                 tfds_dir=tfds_dir)
  assert "8 device(s)" in proc.stderr
  np.testing.assert_allclose(_train_losses(eight), _train_losses(one), rtol=2e-4)
  with open(os.path.join(one, "eval.json")) as f1, open(os.path.join(eight, "eval.json")) as f8:
    r1, r8 = json.load(f1), json.load(f8)
  assert r8["num_devices"] == 8
  assert r8["dice"] == pytest.approx(r1["dice"], abs=2e-3)


def test_eta_is_not_yet_known_before_a_step_is_timed():
  # The first logged step has no timed step behind it (it compiled): no made-up ETA.
  assert train._fmt_eta(None) == "not yet known"
  assert train._fmt_eta(3661.7) == "1:01:01"
  assert train._fmt_eta(-5) == "0:00:00"
