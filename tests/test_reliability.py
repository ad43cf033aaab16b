"""Faults a real run meets: config mistakes, resume with another config, NaN loss, bad data,
damaged checkpoints, unwritable or full workdir. (Kills and preemption: test_kill_resume.py.)"""

import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shared import checkpoint
from shared import data
from shared import errors
from shared import train
from tests.conftest import REPO_ROOT, tiny_unet_config


def _restore_params(workdir):
  ckpt = checkpoint.Checkpointer(workdir, 3)
  return ckpt._manager.restore(ckpt.latest_step())["params"]  # pylint: disable=protected-access


def _assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------- config mistakes, in-process

@pytest.mark.parametrize("field,value,message", [
    ("data.image_size", 34, r"data.image_size=34 is not divisible by 2\*\*model.depth = 4"),
    ("data.image_size", -64, r"data.image_size=-64: must be a positive integer"),
    ("optimizer.learning_rate", 0.0, r"optimizer.learning_rate=0.0: must be a finite positive"),
    ("optimizer.learning_rate", float("inf"), r"optimizer.learning_rate=inf: must be a finite"),
    ("optimizer.name", "lion", r"optimizer.name='lion'; allowed"),
    ("optimizer.schedule", "step", r"optimizer.schedule='step'; allowed"),
    ("optimizer.warmup_epochs", -1.0, r"optimizer.warmup_epochs=-1.0: must be a number >= 0"),
    ("optimizer.grad_clip_norm", -1.0, r"optimizer.grad_clip_norm=-1.0: must be a number >= 0"),
    ("optimizer.end_lr_fraction", 2.0, r"optimizer.end_lr_fraction=2.0: must be a number in"),
    ("optimizer.bias_lr_scale", 0.0, r"optimizer.bias_lr_scale=0.0: must be a finite positive"),
    ("optimizer.bias_lr_scale", 64.0, r"optimizer.bias_lr_scale=64.0: only sgd has it"),
    ("seed", -1, r"seed=-1: must be an integer >= 0"),
    ("task", "unet.nope", r"task='unet.nope': no such module"),
    ("train.batch_size", 4096, r"train.batch_size=4096: the train split has only"),
    ("optimizer.learning_rate", -1e-3, r"optimizer.learning_rate=-0.001: must be a finite"),
    ("train.batch_size", 0, r"train.batch_size=0: must be a positive integer"),
    ("eval.batch_size", -4, r"eval.batch_size=-4: must be a positive integer"),
    ("train.num_epochs", 0, r"train.num_epochs=0: must be a positive integer"),
    ("seg.loss", "focal", r"seg.loss='focal'; allowed"),
    ("seg.mode", "multi", r"seg.mode='multi'; allowed"),
    ("model.norm", "layer", r"model.norm='layer'; allowed"),
    ("model.conv_impl", "fft", r"model.conv_impl='fft'; allowed"),
    ("model.downsample", "avgpool", r"model.downsample='avgpool'; allowed"),
    ("model.upsample", "pixelshuffle", r"model.upsample='pixelshuffle'; allowed"),
    ("model.depth", 0, r"model.depth=0: must be a positive integer"),
    ("model.dropout_rate", 1.0, r"model.dropout_rate=1.0: must be in \[0, 1\)"),
    ("seg.foreground_classes", (1, 2, 3), r"seg.foreground_classes=\(1, 2, 3\); a non-empty"),
    ("mode", "predict", r"mode='predict': allowed values are 'train', 'eval'"),
])
def test_config_mistakes_are_named_before_compiling(tfds_dir, tmp_path, field, value, message):
  config = tiny_unet_config(tfds_dir, **{field: value})
  with pytest.raises(errors.ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")   # nothing was trained or written


# tests/conftest.py's tiny_unet_config as launch.py flags.
TINY_UNET_ARGS = ["--config=configs/unet.py:mp_tr_bce", "--config.data.image_size=32",
                  "--config.data.limit_train=32", "--config.data.limit_eval=40",
                  "--config.model.depth=2", "--config.model.base_features=4",
                  "--config.train.batch_size=8", "--config.train.num_epochs=2",
                  "--config.train.checkpoint_every_steps=4", "--config.data.download=false"]


def _launch(args, env_extra=None):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env_extra or {})}
  return subprocess.run([sys.executable, "launch.py", *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_config_mistakes_give_one_clear_line(tmp_path, tfds_dir):
  cases = [
      (["--config=configs/unet.py:mp_xx_bce"], "unknown UNet variant 'mp_xx_bce'; valid variants"),
      (["--config=configs/unet.py:mp_tr_bce", "--config.train.bach_size=8"],
       "config has no field 'train.bach_size'; fields under train: batch_size"),
      (["--config=configs/unet.py:mp_tr_bce,gpu"], "unknown modifier 'gpu'"),
      (["--config=configs/unet.py:mp_tr_bce", "--config.train.batch_size=ten"],
       "--config.train.batch_size=ten"),
      (["--config=configs/nope.py:mp_tr_bce"],
       "--config=configs/nope.py:mp_tr_bce: [Errno 2] No such file or directory"),
  ]
  for args, expected in cases:
    proc = _launch([*args, f"--workdir={tmp_path}"], {"TFDS_DATA_DIR": tfds_dir})
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("config error:") and expected in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_batch_not_divisible_by_devices(tmp_path, tfds_dir):
  proc = _launch(["--config=configs/unet.py:mp_tr_bce", f"--workdir={tmp_path}",
                  "--config.train.batch_size=12", "--config.data.download=false"],
                 {"TFDS_DATA_DIR": tfds_dir,
                  "XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: train.batch_size=12: must be divisible by the number of devices (8); "
      "use a multiple of 8")


# ---------------------------------------------------------------- resume with another config

@pytest.fixture(scope="module")
def finished(tmp_path_factory, tfds_dir):
  workdir = str(tmp_path_factory.mktemp("finished"))
  config = tiny_unet_config(tfds_dir)
  return config, workdir, train.train_and_evaluate(config, workdir)


def test_the_same_command_again_on_a_finished_run_writes_nothing(finished, tmp_path):
  config, workdir, result = finished
  run = str(tmp_path / "run")
  shutil.copytree(workdir, run)
  files = lambda: {p: (os.path.getmtime(p), os.path.getsize(p))
                   for p in glob.glob(os.path.join(run, "**"), recursive=True)
                   if os.path.isfile(p)}
  before = files()
  assert train.train_and_evaluate(config, run) == result
  assert files() == before   # no second eval line, no new eval.json or TensorBoard file
  # One more epoch is not finished: it trains on from the final checkpoint.
  more = config.copy_and_resolve_references()
  more.train.num_epochs += 1
  more.allow_config_change = True
  assert train.train_and_evaluate(more, run)["step"] == result["step"] * 3 // 2


def test_resume_with_different_config_is_refused_with_fields_listed(finished, tmp_path):
  config, workdir, _ = finished
  other = str(tmp_path / "other")
  shutil.copytree(workdir, other)
  changed = config.copy_and_resolve_references()
  changed.optimizer.learning_rate = 0.05
  changed.model.base_features = 8
  with pytest.raises(errors.ConfigError) as err:
    train.train_and_evaluate(changed, other)
  msg = str(err.value)
  assert "model.base_features: 4 -> 8" in msg and "optimizer.learning_rate: 0.001 -> 0.05" in msg
  assert "--config.allow_config_change=true" in msg
  # Harmless fields (logging, eval batch) may change; the explicit override lets the rest pass.
  harmless = config.copy_and_resolve_references()
  harmless.train.log_every_steps = 3
  harmless.eval.batch_size = 8
  assert train.train_and_evaluate(harmless, other)["step"] == 8
  changed.model.base_features = 4
  changed.allow_config_change = True
  assert train.train_and_evaluate(changed, other)["step"] == 8


# ---------------------------------------------------------------- numerical faults

def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tfds_dir, tmp_path):
  config = tiny_unet_config(tfds_dir, **{
      "optimizer.learning_rate": 1e30, "optimizer.schedule": "constant",
      "train.checkpoint_every_steps": 1, "train.log_every_steps": 1, "model.norm": "none"})
  with pytest.raises(errors.NonFiniteLossError) as err:
    train.train_and_evaluate(config, str(tmp_path))
  msg = str(err.value)
  bad_step = int(msg.split(" at step ")[1].split(";")[0])
  assert "learning_rate" in msg and "last good checkpoint" in msg
  ckpt = checkpoint.Checkpointer(str(tmp_path), 3)
  assert ckpt.latest_step() == bad_step - 1
  params = _restore_params(str(tmp_path))
  assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(params))


# ---------------------------------------------------------------- bad data

class _BrokenSource:
  """A real data source in which some examples cannot be decoded."""

  def __init__(self, source, broken):
    self.source, self.broken = source, set(broken)

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    if i in self.broken:
      raise OSError("image file is truncated")
    return self.source[i]


def test_undecodable_example_is_reported_by_dataset_split_and_index(tfds_dir):
  source = _BrokenSource(data.open_source("oxford_iiit_pet", "test", tfds_dir, False), [7])
  with pytest.raises(errors.BadExampleError,
                     match=r"oxford_iiit_pet/test example 7 cannot be decoded \(OSError: image "
                           r"file is truncated\); set --config.data.skip_bad_examples=true"):
    data.ExampleStore(source, lambda ex: ex, name="oxford_iiit_pet/test", limit=20)
  # Decoding per batch (no cache) reports it when the batch is made.
  lazy = data.ExampleStore(source, lambda ex: {"label": np.asarray(ex["label"])},
                           cache_max_bytes=0, name="oxford_iiit_pet/test", limit=20)
  lazy.get(np.arange(5))
  with pytest.raises(errors.BadExampleError, match="example 7"):
    lazy.get(np.arange(5, 10))


def test_skip_bad_examples_counts_them_in_eval_json(tfds_dir, tmp_path, monkeypatch):
  real_open = data.open_source

  def open_broken(name, split, data_dir, download=True):
    source = real_open(name, split, data_dir, download)
    return _BrokenSource(source, [3, 5] if split == "train" else [0])

  monkeypatch.setattr(data, "open_source", open_broken)
  config = tiny_unet_config(tfds_dir, **{"data.skip_bad_examples": True})
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result["skipped_train_examples"] == 2 and result["skipped_eval_examples"] == 1
  assert result["num_eval_examples"] == 39
  with open(tmp_path / "eval.json") as f:
    assert json.load(f)["skipped_train_examples"] == 2
  config.data.skip_bad_examples = False
  with pytest.raises(errors.BadExampleError, match="oxford_iiit_pet/train example 3"):
    train.train_and_evaluate(config, str(tmp_path / "strict"))


# ---------------------------------------------------------------- damaged checkpoints

def _biggest_file(folder):
  files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage, reason", [
    ("truncate", ""), ("delete", ""),
    ("flip", "differs from its SHA-256 recorded at save time")])
def test_damaged_latest_checkpoint_falls_back_to_newest_good(finished, tmp_path, damage, reason,
                                                             caplog):
  config, workdir, result = finished
  broken = str(tmp_path / "broken")
  shutil.copytree(workdir, broken)
  os.remove(os.path.join(broken, "eval.json"))
  victim = _biggest_file(os.path.join(broken, "checkpoints", "8"))
  if damage == "truncate":
    with open(victim, "r+b") as f:
      f.truncate(os.path.getsize(victim) // 3)
  elif damage == "delete":
    os.remove(victim)
  else:       # a few KB of flipped bytes inside the file, its size unchanged
    with open(victim, "r+b") as f:
      f.seek(os.path.getsize(victim) // 2)
      chunk = f.read(4096)
      f.seek(-len(chunk), os.SEEK_CUR)
      f.write(bytes(b ^ 0xFF for b in chunk))
  again = train.train_and_evaluate(config, broken)
  assert "checkpoint step 8" in caplog.text and "is damaged" in caplog.text and reason in caplog.text
  moved = os.listdir(os.path.join(broken, "checkpoints_damaged"))
  assert len(moved) == 1 and moved[0].startswith("8-")      # kept for inspection, not deleted
  assert again["step"] == 8                                  # retrained 4 -> 8 from step 4
  for key in ("dice", "iou", "pixel_accuracy"):
    assert again[key] == result[key]
  _assert_same_params(_restore_params(workdir), _restore_params(broken))


def test_an_empty_step_folder_is_the_only_one_moved(finished, tmp_path, caplog):
  config, workdir, _ = finished
  run = str(tmp_path / "run")
  shutil.copytree(workdir, run)
  os.remove(os.path.join(run, "eval.json"))
  os.makedirs(os.path.join(run, "checkpoints", "12"))         # half-created by a crash
  again = train.train_and_evaluate(config, run)
  assert again["step"] == 8                                     # resumed from 8: nothing to do
  assert [m.split("-")[0] for m in os.listdir(os.path.join(run, "checkpoints_damaged"))] == ["12"]
  assert "never committed" in caplog.text
  assert sorted(os.listdir(os.path.join(run, "checkpoints")), key=int) == ["4", "8"]


def test_a_checkpoint_of_other_shapes_is_refused_and_nothing_moves(finished, tmp_path):
  config, workdir, _ = finished
  run = str(tmp_path / "run")
  shutil.copytree(workdir, run)
  os.remove(os.path.join(run, "config.json"))     # no config to compare: only the shapes tell
  wider = config.copy_and_resolve_references()
  wider.model.base_features = 8
  with pytest.raises(errors.ConfigError) as err:
    train.train_and_evaluate(wider, run)
  msg = str(err.value)
  assert "checkpoint step 8" in msg and "holds a model of other shapes" in msg
  assert ": (16,) -> (32,)" in msg and "another --workdir" in msg
  assert not os.path.exists(os.path.join(run, "checkpoints_damaged"))
  assert sorted(os.listdir(os.path.join(run, "checkpoints")), key=int) == ["4", "8"]


@pytest.mark.parametrize("name,weight_decay,clip", [("adam", 0.0, 0.0), ("adamw", 1e-4, 1.0),
                                                    ("sgd", 5e-4, 0.0)])
def test_every_optimizers_state_restores_without_a_false_shape_mismatch(tmp_path, name,
                                                                         weight_decay, clip):
  """optax chains hold leafless states (EmptyState) between the arrays: the shape check must
  pair the template's arrays with the saved ones as orbax does (the judge's SGD state once
  crashed it)."""
  from configs import common  # pylint: disable=g-import-not-at-top
  from shared import optim  # pylint: disable=g-import-not-at-top
  cfg = common.base_config().optimizer
  cfg.name, cfg.weight_decay, cfg.grad_clip_norm, cfg.nesterov = name, weight_decay, clip, True
  tx, _ = optim.make_optimizer(cfg, 10, 100)
  params = {"conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.zeros((4,))}}
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.array(5)}
  ckpt = checkpoint.Checkpointer(str(tmp_path), 3)
  ckpt.save(5, state)
  ckpt.close()
  restored = checkpoint.Checkpointer(str(tmp_path), 3).restore_latest(state)
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  wider = {"conv": {"kernel": jnp.ones((3, 3, 2, 8)), "bias": jnp.zeros((8,))}}
  with pytest.raises(errors.ConfigError, match=r"conv/kernel: \(3, 3, 2, 4\) -> \(3, 3, 2, 8\)"):
    checkpoint.Checkpointer(str(tmp_path), 3).restore_latest(
        {"params": wider, "opt_state": tx.init(wider), "step": jnp.array(5)})


def test_a_step_has_its_checksums_when_orbax_commits_it(tmp_path, caplog):
  """Recorded before the commit (orbax's post-finalization callback), not at our next save or
  exit: a run killed right after a commit leaves the newest step checked, and a flip in it is
  caught."""
  state = {"params": {"kernel": jnp.arange(4096, dtype=jnp.float32)}, "step": jnp.array(3)}
  ckpt = checkpoint.Checkpointer(str(tmp_path), 3)
  ckpt.save(3, state)
  ckpt._manager.wait_until_finished()   # pylint: disable=protected-access  # orbax's, not ours
  folder = os.path.join(tmp_path, "checkpoints", "3")
  with open(os.path.join(tmp_path, "checkpoints_sha256", "3.json")) as f:
    recorded = json.load(f)
  everything = checkpoint.file_digests(folder)
  assert set(everything) - set(recorded) == {"_CHECKPOINT_METADATA", "commit_success.txt"}
  assert all(everything[name] == digest for name, digest in recorded.items())
  ckpt.close()
  victim = _biggest_file(folder)
  with open(victim, "r+b") as f:
    f.seek(os.path.getsize(victim) // 2)
    f.write(b"\xff" * 64)
  assert checkpoint.Checkpointer(str(tmp_path), 3).restore_latest(state) is None
  assert "checkpoint step 3" in caplog.text and "differs from its SHA-256" in caplog.text


# ---------------------------------------------------------------- workdir problems

def test_unwritable_workdir_is_a_clear_error(tfds_dir, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  with pytest.raises(errors.WorkdirError, match=r"workdir '.*a_file/run' is not writable"):
    train.train_and_evaluate(tiny_unet_config(tfds_dir), str(blocker / "run"))


def test_full_disk_is_one_clear_line_and_leaves_no_partial_checkpoint(tfds_dir, tmp_path):
  """A real process on a 48 KB filesystem: the first checkpoint cannot be written."""
  mount = tmp_path / "small_disk"
  mount.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)],
                    capture_output=True).returncode:
    pytest.skip("cannot mount a small tmpfs here (needs root)")
  try:
    proc = _launch([f"--workdir={mount / 'run'}", *TINY_UNET_ARGS], {"TFDS_DATA_DIR": tfds_dir})
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not write checkpoint step 4 to "), proc.stderr[-5000:]
    assert "No space left on device" in last and "(is the disk full or read-only?)" in last
    # orbax's own error lines stay, their tracebacks and the event-loop noise do not.
    assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr
    assert not os.listdir(mount / "run" / "checkpoints")   # the partial step 4 was removed
  finally:
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_while_writing_metrics_is_one_named_error(tmp_path):
  from shared import metric_writer  # pylint: disable=g-import-not-at-top
  writer = metric_writer.MetricWriter(str(tmp_path))
  os.symlink("/dev/full", tmp_path / "metrics.jsonl")    # every write: ENOSPC
  with pytest.raises(errors.WorkdirError, match=r"could not write metrics to .*metrics\.jsonl: No "
                                                r"space left on device \(is the disk full"):
    writer.write("train", 1, {"loss": 1.0})
  writer.close()


def test_bad_lines_in_metrics_jsonl_are_skipped_by_plots_and_reports(tmp_path, caplog):
  from shared import metric_writer, plotting  # pylint: disable=g-import-not-at-top
  from tools import report_plots  # pylint: disable=g-import-not-at-top
  path = tmp_path / "metrics.jsonl"
  good = [{"kind": "train", "step": 2, "loss": 1.0}, {"kind": "eval", "step": 2, "dice": 0.5},
          {"kind": "train", "step": 4, "loss": 0.5}, {"kind": "eval", "step": 4, "dice": 0.6}]
  lines = [json.dumps(good[0]), json.dumps(good[1]), "[1, 2]", "\x00\xff garbage",
           json.dumps(good[2]), json.dumps(good[3]), '{"kind": "eval", "step": 6, "di']
  path.write_text("\n".join(lines))
  with caplog.at_level("WARNING"):
    assert metric_writer.read_metrics(str(path)) == good
  assert "skipped 3 line(s) that are not metric records (line 3, 4, 7)" in caplog.text
  assert report_plots.read_eval_curve(str(tmp_path), "dice") == {2: 0.5, 4: 0.6}
  plotting.plot_curves(str(path), str(tmp_path / "curves.png"), eval_keys=("dice",))
  assert (tmp_path / "curves.png").stat().st_size > 0


def test_garbled_json_in_the_workdir_is_named(finished, tmp_path):
  config, workdir, _ = finished
  run = str(tmp_path / "run")
  shutil.copytree(workdir, run)
  with open(os.path.join(run, "config.json"), "w") as f:
    f.write('{"task": "unet.ta')
  with pytest.raises(errors.WorkdirError, match=r"run/config.json is not valid JSON .*move it away"):
    train.train_and_evaluate(config, run)
  # A garbled eval.json from before is replaced by the eval-only run, with a warning.
  shutil.copy(os.path.join(workdir, "config.json"), os.path.join(run, "config.json"))
  with open(os.path.join(run, "eval.json"), "w") as f:
    f.write("\x00garbage")
  eval_config = config.copy_and_resolve_references()
  eval_config.mode = "eval"
  result = train.train_and_evaluate(eval_config, run)
  assert result["step"] == 8 and result["images_per_s"] is None
  with open(os.path.join(run, "eval.json")) as f:
    assert json.load(f)["step"] == 8


def test_a_failed_atomic_write_names_the_file_and_leaves_no_tmp(tmp_path, monkeypatch):
  from shared import files  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "eval.json")
  files.write_json(path, {"step": 1})

  def full_disk(obj, f, **kwargs):
    f.write("{")
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(files.json, "dump", full_disk)
  with pytest.raises(errors.WorkdirError, match=r"could not write .*eval.json: No space left on "
                                                r"device .*an earlier eval.json is left"):
    files.write_json(path, {"step": 2})
  assert os.listdir(tmp_path) == ["eval.json"]              # no .tmp litter
  with open(path) as f:
    assert json.load(f) == {"step": 1}


def test_a_truncated_shard_is_named_and_skipping_says_the_files_are_damaged(tfds_dir, tmp_path):
  prepared = os.path.join(tfds_dir, "oxford_iiit_pet")
  copy = tmp_path / "tfds" / "oxford_iiit_pet"
  shutil.copytree(prepared, copy, copy_function=shutil.copyfile)   # the prepared copy is read-only
  for folder, _, _ in os.walk(copy):
    os.chmod(folder, 0o755)
  shard = next(str(p) for p in copy.rglob("*-test.array_record-*"))
  with open(shard, "r+b") as f:
    f.truncate(os.path.getsize(shard) // 2)
  source = data.open_source("oxford_iiit_pet", "test", str(tmp_path / "tfds"), False)
  assert data.file_of(source, 0) == shard
  with pytest.raises(errors.BadExampleError, match=rf"example 0 \(in {shard}\) cannot be decoded"):
    data.ExampleStore(source, lambda ex: ex, name="oxford_iiit_pet/test", limit=5)
  with pytest.raises(errors.BadExampleError,
                     match=rf"none of the 5 examples could be decoded, so the files are damaged, "
                           rf"not single examples \({shard}\); prepare the dataset again"):
    data.ExampleStore(source, lambda ex: ex, name="oxford_iiit_pet/test", limit=5, skip_bad=True)


def test_library_noise_keeps_our_errors_and_other_tracebacks():
  import logging  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  from shared.process import library_noise  # pylint: disable=g-import-not-at-top

  def record(name, path, level, msg, exc=True):
    info = (ValueError, ValueError("x"), None) if exc else None
    return logging.LogRecord(name, level, path, 1, msg, None, info)
  orbax_error = record("absl", "/x/orbax/checkpoint/future.py", logging.ERROR, "write failed")
  assert library_noise.library_log_filter(orbax_error) and orbax_error.exc_info is None
  ours = record("absl", "/repo/shared/train.py", logging.ERROR, "ours")
  assert library_noise.library_log_filter(ours) and ours.exc_info is not None
  assert not library_noise.library_log_filter(
      record("absl", "/x/jax/_src/dispatch.py", logging.INFO, "chatter", exc=False))
  assert not library_noise.library_log_filter(record(
      "asyncio", "/x/asyncio/base_events.py", logging.ERROR,
      "_GatheringFuture exception was never retrieved\nfuture: <...>"))
  assert library_noise.library_log_filter(record(
      "asyncio", "/x/asyncio/base_events.py", logging.ERROR, "Unclosed client session"))
  closed = types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed"))
  other = types.SimpleNamespace(exc_value=RuntimeError("something else"))
  assert library_noise.is_closed_event_loop(closed)
  assert not library_noise.is_closed_event_loop(other)


def test_library_noise_drops_a_coroutine_abandoned_at_exit_and_keeps_other_warnings():
  """A real interpreter: the coroutine is collected at shutdown, as jax's abandoned write was
  after the full-disk error line (`sys:1: RuntimeWarning: coroutine ... was never awaited`)."""
  script = (
      "import logging, warnings\n"
      "from shared.process import library_noise\n"
      "library_noise.install(logging.StreamHandler())\n"
      "async def write_fragment():\n"
      "  pass\n"
      "abandoned = write_fragment()\n"
      "warnings.warn('a warning of ours', RuntimeWarning)\n")
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                        text=True, check=True)
  assert "a warning of ours" in proc.stderr
  assert "never awaited" not in proc.stderr and "tracemalloc" not in proc.stderr, proc.stderr
  bare = subprocess.run([sys.executable, "-c", script.replace("library_noise.install", "print")],
                        cwd=REPO_ROOT, capture_output=True, text=True, check=True)
  assert "coroutine 'write_fragment' was never awaited" in bare.stderr   # the test can fail
