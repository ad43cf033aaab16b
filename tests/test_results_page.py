"""tools/results_page.py: launch.py commands rebuilt from eval.json configs, and the page itself.

A rebuilt command is checked by handing it to ml_collections' own config_flags parser, as
launch.py does, and comparing the config it yields with the run's.
"""

import json
import os
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import pytest

from configs import classifier
from configs import cvae
from configs import unet
from tools import report_table
from tools import run_files
from tools import results_page

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def as_eval_config(config) -> dict:
  """The config as shared/train.py writes it into eval.json."""
  return json.loads(config.to_json_best_effort())


def parsed_by_config_flags(command, monkeypatch) -> dict:
  """The config launch.py would get from `command` (its --config and --config.X flags)."""
  monkeypatch.chdir(REPO)
  argv = ["launch.py", *(a for a in command[2:] if not a.startswith("--workdir="))]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return as_eval_config(flag_values.config)


def test_command_is_rebuilt_and_parses_back_to_the_same_config(monkeypatch):
  config = unet.get_config("mp_tr_dice,cpu,seed=2")
  config.train.num_epochs = 3
  config.optimizer.learning_rate = 3e-4
  config.data.random_flip = False
  config.seg.foreground_classes = (1,)
  command, notes = results_page.launch_command(as_eval_config(config), "runs/x")
  assert command == [
      "python", "launch.py", "--config=configs/unet.py:mp_tr_dice,cpu,seed=2", "--workdir=runs/x",
      "--config.data.random_flip=false", "--config.optimizer.learning_rate=0.0003",
      "--config.seg.foreground_classes=(1,)", "--config.train.num_epochs=3"]
  assert notes == []
  assert parsed_by_config_flags(command, monkeypatch) == as_eval_config(config)


def test_variant_and_modifiers_are_found_from_the_recorded_variant(monkeypatch):
  # CVAE variants are recorded as `cvae_DATASET`, the judge's as `classifier_DATASET`.
  config = as_eval_config(cvae.get_config("cifar10,cpu,label=decoder"))
  command, _ = results_page.launch_command(config, "runs/c")
  assert command == ["python", "launch.py", "--config=configs/cvae.py:cifar10,cpu",
                     "--workdir=runs/c", "--config.model.label_input=decoder"]
  assert parsed_by_config_flags(command, monkeypatch) == config
  command, _ = results_page.launch_command(as_eval_config(classifier.get_config("mnist")), "w")
  assert command[2] == "--config=configs/classifier.py:mnist"


def test_fields_added_or_removed_since_the_run_are_listed_not_set():
  config = as_eval_config(unet.get_config("strconv_ups_dice"))
  del config["model"]["conv_impl"]            # a field the code gained after the run
  config["model"]["old_knob"] = 3             # one it has lost
  command, notes = results_page.launch_command(config, "runs/u")
  assert command == ["python", "launch.py", "--config=configs/unet.py:strconv_ups_dice",
                     "--workdir=runs/u"]
  assert len(notes) == 2
  assert "added to the code since" in notes[0] and "`model.conv_impl=auto`" in notes[0]
  assert "no longer in the code" in notes[1] and "`model.old_knob=3`" in notes[1]


def test_a_run_no_config_makes_is_named():
  with pytest.raises(ValueError, match="no config in configs/ has task 'new.task' and variant 'v'"):
    results_page.launch_command({"task": "new.task", "variant": "v", "seed": 0}, "w")


def write_run(folder, config, metrics):
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "eval.json"), "w") as f:
    json.dump({"task": config["task"], "variant": config["variant"], "num_params": 10,
               "train_time_s": 5.0, "images_per_s": 2.0, **metrics, "config": config}, f)


def test_page_has_a_row_and_a_command_per_run_and_the_missing_list(tmp_path):
  runs = tmp_path / "runs"
  both = as_eval_config(cvae.get_config("mnist,cpu"))
  write_run(runs / "cvae_both", both, {"neg_elbo": 100.0, "label_adherence": 0.5})
  older = as_eval_config(cvae.get_config("mnist,cpu,seed=1"))   # same config but the seed ...
  del older["loss"]["critic_flip"]                                # ... and a field added since
  # A field added since whose value for older runs the core records (validate.RESUME_DEFAULTS)
  # is taken as that value: no `(absent)` for it.
  del older["model"]["critic_wrong_class"]
  write_run(runs / "cvae_older", older, {"neg_elbo": 104.0, "label_adherence": 0.7})
  (runs / "cvae_older" / "stamp_check.json").write_text(json.dumps({"stamp_share": 0.25}))
  (runs / "missing_runs.md").write_text("- the UNet table: no run folder yet\n")
  out = tmp_path / "docs" / "results.md"
  proc = subprocess.run([sys.executable, "-m", "tools.report", f"--runs={runs}",
                         f"--results_md={out}"], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert not (runs / "report").exists()            # only the page was asked for
  text = out.read_text()
  assert f"python -m tools.report --runs={runs} --results_md={out}" in text
  # Each folder is its own row (never averaged), the absent field shown as such.
  lines = [l for l in text.splitlines() if l.startswith("| cvae_")]
  assert [l.split("|")[1].strip() for l in lines] == ["cvae_both", "cvae_older"]
  assert "(absent)" in lines[1] and "100.00 ± n/a" in lines[0] and "**104.00" not in text
  assert ("python launch.py --config=configs/cvae.py:mnist,cpu,seed=1 "
          "--workdir=runs/cvae_older") in text
  assert "`loss.critic_flip=false`" in text.split("cvae_older`")[1]
  assert "critic_wrong_class" not in text.split("cvae_older`")[1]
  assert "stamp_check.json: `stamp_share` 0.25" in text
  assert text.rstrip().endswith("- the UNet table: no run folder yet")


def test_every_committed_run_command_parses_back_to_its_config(monkeypatch):
  """Every field both the run and today's code have comes out of the command as it was run."""
  for path in run_files.find_eval_files([os.path.join(REPO, "docs", "runs")]):
    config = run_files.read_eval(path)["config"]
    command, _ = results_page.launch_command(config, "runs/r")
    recorded = run_files.flat_config(config)
    parsed = run_files.flat_config(parsed_by_config_flags(command, monkeypatch))
    differ = {k for k in recorded.keys() & parsed.keys() if recorded[k] != parsed[k]}
    assert differ <= {"mode"}, (path, differ)


def test_a_run_of_an_unknown_family_keeps_its_row_and_says_why_it_has_no_command(tmp_path):
  write_run(tmp_path / "old_family", {"task": "gone.task", "variant": "v", "seed": 0},
            {"accuracy": 0.5})
  text = results_page.page([str(tmp_path)], "results.md", report_table.IGNORED_FIELDS)
  assert "| old_family" in text
  assert "- no command: no config in configs/ has task 'gone.task' and variant 'v'" in text


def test_committed_results_page_is_generated_from_docs_runs(monkeypatch):
  monkeypatch.chdir(REPO)
  text = results_page.page(["docs/runs"], "docs/results.md", report_table.IGNORED_FIELDS)
  with open("docs/results.md") as f:
    assert f.read() == text, ("docs/results.md is stale: python -m tools.report "
                              "--runs=docs/runs --results_md=docs/results.md")
