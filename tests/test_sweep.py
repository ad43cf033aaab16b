"""tools/sweep.py without training: generated commands, skip/resume logic, a fake launcher;
the sweeps and table specs found in configs/, and shared/ importing none of configs/tools."""

import ast
import glob
import json
import os
import stat
import subprocess
import sys

import pytest

from configs import classifier
from configs import cvae
from configs import unet
from tools import discovery
from tools import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def finish(workdir, step=8):
  """What a finished run leaves: its final checkpoint, then eval.json naming that step."""
  os.makedirs(os.path.join(workdir, "checkpoints", str(step)), exist_ok=True)
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump({"task": "unet.task", "step": step}, f)


class FakeLauncher:
  """Records every launch; "trains" by writing eval.json unless the workdir is in `fail`."""

  def __init__(self, fail=(), no_eval=()):
    self.calls, self.fail, self.no_eval = [], set(fail), set(no_eval)

  def __call__(self, cmd, cwd, log_path):
    workdir = next(a.split("=", 1)[1] for a in cmd if a.startswith("--workdir="))
    self.calls.append((list(cmd), cwd, log_path))
    if workdir in self.fail:
      return 2
    if workdir not in self.no_eval:
      finish(workdir)
    return 0

  @property
  def workdirs(self):
    return [next(a.split("=", 1)[1] for a in c if a.startswith("--workdir=")) for c, _, _ in
            self.calls]


def test_unet_ablation_commands():
  runs = sweep.build_runs("unet_ablation", "runs/abl", [0, 1], ["cpu"],
                          extra=["--config.train.num_epochs=2"])
  assert [r.workdir for r in runs] == [
      f"runs/abl/{v}/seed_{s}" for s in (0, 1)
      for v in ("mp_tr_bce", "mp_tr_dice", "strconv_tr_bce", "strconv_ups_dice")]
  assert runs[-1].command() == [
      "python", "launch.py", "--config=configs/unet.py:strconv_ups_dice,cpu,seed=1",
      "--workdir=runs/abl/strconv_ups_dice/seed_1", "--config.train.num_epochs=2"]
  assert [r.name for r in runs[:4]] == list(unet.ABLATION)
  sweep.check_configs(runs)   # every config builds and the override names a real field


def test_unet_all_has_every_combination():
  runs = sweep.build_runs("unet_all", "r", [3], [])
  assert len(runs) == 12
  assert [r.name for r in runs] == list(unet.ALL_VARIANTS)
  assert runs[0].config == "configs/unet.py:mp_tr_bce,seed=3"
  sweep.check_configs(runs)


def test_cvae_grid_with_judge_classifiers_first():
  runs = sweep.build_runs("cvae", "rc", [0, 1], ["cpu"])
  assert len(runs) == 2 + 2 * 2 * 3 * 2      # classifiers + seeds x datasets x inputs x rates
  assert [r.workdir for r in runs[:2]] == ["rc/classifier/mnist", "rc/classifier/cifar10"]
  assert runs[0].config == "configs/classifier.py:mnist,cpu" and runs[0].needs == ()
  grid = runs[2:]
  assert {r.name for r in grid} == {
      f"{d}_{l}_wrong{w}" for d in ("mnist", "cifar10") for l in ("encoder", "decoder", "both")
      for w in ("0", "0p1")}
  r = next(r for r in grid if r.workdir == "rc/cifar10_decoder_wrong0p1/seed_1")
  assert r.command() == [
      "python", "launch.py", "--config=configs/cvae.py:cifar10,cpu,seed=1",
      "--workdir=rc/cifar10_decoder_wrong0p1/seed_1", "--config.model.label_input=decoder",
      "--config.loss.wrong_label_rate=0.1", "--config.eval.classifier_workdir=rc/classifier/cifar10"]
  assert r.needs == ("rc/classifier/cifar10",)
  assert all(g.workdir.endswith("seed_0") for g in grid[:12])   # seeds are the outer loop
  sweep.check_configs(runs)


def test_only_keeps_matches_and_what_they_need():
  runs = sweep.build_runs("cvae", "rc", [0], [], only=["mnist_decoder_*"])
  assert [r.workdir for r in runs] == ["rc/classifier/mnist", "rc/mnist_decoder_wrong0/seed_0",
                                       "rc/mnist_decoder_wrong0p1/seed_0"]
  runs = sweep.build_runs("unet_all", "r", [0], [], only=["*_bce_dice"])
  assert [r.name for r in runs] == [v for v in unet.ALL_VARIANTS if v.endswith("_bce_dice")]


@pytest.mark.parametrize("kwargs,match", [
    ({"sweep": "nope"}, "unknown; named sweeps: cvae, unet_ablation, unet_all"),
    ({"seeds": []}, "--seeds is empty"),
    ({"seeds": [0, 0]}, "repeats a seed"),
    ({"modifiers": ["cpu", "seed=3"]}, "set seeds with --seeds"),
    ({"only": ["zzz*"]}, "matches no run"),
])
def test_build_runs_errors(kwargs, match):
  args = {"sweep": "unet_ablation", "root": "r", "seeds": [0], **kwargs}
  with pytest.raises(ValueError, match=match):
    sweep.build_runs(**args)


def test_check_configs_catches_typos_before_running():
  with pytest.raises(ValueError, match="unknown modifier 'cpuu'"):
    sweep.check_configs(sweep.build_runs("unet_ablation", "r", [0], ["cpuu"]))
  with pytest.raises(ValueError, match="no field 'train.num_epoch'.*Did you mean \"num_epochs\""):
    sweep.check_configs(sweep.build_runs("unet_ablation", "r", [0], [],
                                         extra=["--config.train.num_epoch=2"]))
  for field in ("trainx.num_epochs", "train.num_epochs.x", "model.features[0]"):
    with pytest.raises(ValueError, match=f"no field '{field.replace('[', '.').replace(']', '.')}'"):
      sweep.check_configs(sweep.build_runs("unet_ablation", "r", [0], [],
                                           extra=[f"--config.{field}=2"]))
  # An index into a tuple field is a field config_flags accepts.
  sweep.check_configs(sweep.build_runs("cvae", "r", [0], [], only=["mnist_both_wrong0"],
                                       extra=["--config.model.features[0]=8"]))


def test_sweeps_and_report_specs_are_found_in_configs():
  assert set(discovery.sweeps()) == {"unet_ablation", "unet_all", "cvae"}
  assert discovery.sweeps()["unet_ablation"] is unet.ablation_runs
  assert discovery.sweeps()["cvae"] is cvae.grid_runs
  assert sweep.SWEEPS == discovery.sweeps()
  assert "the 4 UNet ablation variants" in discovery.describe(unet.ablation_runs)
  specs = discovery.report_specs()
  assert {task: path for task, (path, _) in specs.items()} == {
      "unet.task": "configs/unet.py", "cvae.task": "configs/cvae.py",
      "cvae.classifier_task": "configs/classifier.py"}
  for module in (unet, cvae, classifier):
    # Each family's REPORT names the task its configs train, and factors that are real fields.
    for variant in module.VARIANTS:
      config = module.get_config(variant)
      assert config.task == module.REPORT.task
      for _, path in module.REPORT.factors:
        assert path.split(".")[-1] in config[path.rsplit(".", 1)[0]]
    assert set(module.REPORT.headline) <= set(module.REPORT.metrics)


def test_a_sweep_name_declared_twice_is_refused(monkeypatch):
  modules = dict(discovery.config_modules())
  clash = type(unet)("configs.clash")
  clash.get_config, clash.SWEEPS = unet.get_config, {"cvae": unet.ablation_runs}
  monkeypatch.setattr(discovery, "config_modules", lambda: {**modules, "configs/clash.py": clash})
  discovery.sweeps.cache_clear()
  try:
    with pytest.raises(ValueError, match="sweep 'cvae' is declared by both configs/cvae.py "
                                         "and configs/clash.py"):
      discovery.sweeps()
  finally:
    discovery.sweeps.cache_clear()


def test_shared_imports_nothing_from_configs_families_or_tools():
  """The training core stays below the families and the tools: dependencies point into it."""
  outside = ("configs", "unet", "cvae", "tools")
  for path in glob.glob(os.path.join(REPO, "shared", "**", "*.py"), recursive=True):
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
      for name in names:
        assert name.split(".")[0] not in outside, f"{path} imports {name}"


def test_status(tmp_path):
  run = sweep.Run("v", "configs/unet.py:mp_tr_bce", str(tmp_path / "w"))
  assert sweep.status(run) == "new"
  os.makedirs(tmp_path / "w" / "checkpoints")
  assert sweep.status(run) == "new"               # an empty checkpoint folder resumes nothing
  os.makedirs(tmp_path / "w" / "checkpoints" / "100")
  assert sweep.status(run) == "resume"
  finish(run.workdir, step=100)
  assert sweep.status(run) == "done"
  # eval.json naming a step whose checkpoint is gone, or unreadable: not finished.
  with open(os.path.join(run.workdir, "eval.json"), "w") as f:
    json.dump({"step": 200}, f)
  assert sweep.status(run) == "resume"
  with open(os.path.join(run.workdir, "eval.json"), "w") as f:
    f.write('{"step": 1')
  assert sweep.status(run) == "resume"


def test_runs_missing_only_and_keeps_going_after_a_failure(tmp_path):
  root = str(tmp_path)
  runs = sweep.build_runs("unet_ablation", root, [0, 1], ["cpu"])
  w = {(r.name, r.workdir[-1]): r.workdir for r in runs}
  finish(w["mp_tr_bce", "0"])                                # done: skipped
  finish(w["strconv_ups_dice", "1"])                          # done: skipped
  os.makedirs(os.path.join(w["mp_tr_dice", "0"], "checkpoints", "50"))   # unfinished: resumed
  fake = FakeLauncher(fail={w["mp_tr_dice", "1"]}, no_eval={w["strconv_tr_bce", "1"]})
  echoed = []
  outcomes = sweep.run_sweep(runs, launcher=fake, python="PY", cwd="/repo", echo=echoed.append)
  launched = [r.workdir for r in runs
              if r.workdir not in (w["mp_tr_bce", "0"], w["strconv_ups_dice", "1"])]
  assert fake.workdirs == launched                            # missing ones only, in order
  cmd, cwd, log = fake.calls[0]
  assert cmd[:3] == ["PY", "launch.py", "--config=configs/unet.py:mp_tr_dice,cpu,seed=0"]
  assert (cwd, log) == ("/repo", os.path.join(w["mp_tr_dice", "0"], "sweep.log"))
  results = {o.run.workdir: o.result for o in outcomes}
  assert results == {
      w["mp_tr_bce", "0"]: "skipped", w["mp_tr_dice", "0"]: "ok",
      w["strconv_tr_bce", "0"]: "ok", w["strconv_ups_dice", "0"]: "ok",
      w["mp_tr_bce", "1"]: "ok", w["mp_tr_dice", "1"]: "failed",
      w["strconv_tr_bce", "1"]: "failed", w["strconv_ups_dice", "1"]: "skipped"}
  assert any("resuming" in e and "mp_tr_dice/seed_0" in e for e in echoed)
  text = sweep.summary(outcomes)
  assert text.splitlines()[0] == "sweep: 4 ok, 2 skipped, 2 failed, 0 blocked"
  assert f"FAILED: {w['mp_tr_dice', '1']} (exit code 2" in text
  assert f"FAILED: {w['strconv_tr_bce', '1']} (exit code 0 but no eval.json" in text
  # A second pass launches only what is still unfinished.
  fake2 = FakeLauncher()
  sweep.run_sweep(runs, launcher=fake2, echo=lambda _: None)
  assert fake2.workdirs == [w["mp_tr_dice", "1"], w["strconv_tr_bce", "1"]]


def test_failed_classifier_blocks_its_cvae_runs(tmp_path):
  root = str(tmp_path)
  runs = sweep.build_runs("cvae", root, [0], [], only=["*_both_wrong0"])
  mnist_clf = os.path.join(root, "classifier", "mnist")
  fake = FakeLauncher(fail={mnist_clf})
  outcomes = sweep.run_sweep(runs, launcher=fake, echo=lambda _: None)
  assert fake.workdirs == [mnist_clf, os.path.join(root, "classifier", "cifar10"),
                           os.path.join(root, "cifar10_both_wrong0", "seed_0")]
  assert [o.result for o in outcomes] == ["failed", "ok", "blocked", "ok"]


def test_dry_run_lines(tmp_path):
  runs = sweep.build_runs("unet_ablation", str(tmp_path), [0], ["cpu"])
  finish(runs[0].workdir)
  os.makedirs(os.path.join(runs[1].workdir, "checkpoints", "7"))
  lines = sweep.dry_run_lines(runs)
  assert lines[0].startswith("# run from the repo root")
  assert lines[1].startswith("# done (eval.json exists): python launch.py")
  assert lines[2].endswith("  # resumes") and lines[2].startswith("python launch.py")
  assert lines[3] == (f"python launch.py --config=configs/unet.py:strconv_tr_bce,cpu,seed=0 "
                      f"--workdir={tmp_path}/strconv_tr_bce/seed_0")


def test_subprocess_launcher_tees_output_and_returns_code(tmp_path, capsys):
  log = str(tmp_path / "w" / "sweep.log")
  code = sweep.subprocess_launcher([sys.executable, "-c", "print('hello'); raise SystemExit(3)"],
                                   str(tmp_path), log)
  assert code == 3
  assert "hello" in capsys.readouterr().out
  with open(log) as f:
    text = f.read()
  assert "hello" in text and "SystemExit(3)" in text   # the command line, then its output


FAKE_PYTHON = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open({calls!r}, "a") as f:
  f.write(json.dumps(args) + "\\n")
workdir = next(a.split("=", 1)[1] for a in args if a.startswith("--workdir="))
print("fake training in", workdir)
if "mp_tr_dice" in workdir and os.environ.get("FAKE_FAIL"):
  sys.exit(5)
os.makedirs(os.path.join(workdir, "checkpoints", "8"), exist_ok=True)
open(os.path.join(workdir, "eval.json"), "w").write('{{"step": 8}}')
"""


def test_cli_with_a_fake_interpreter(tmp_path):
  calls = str(tmp_path / "calls.jsonl")
  fake = tmp_path / "fake_python"
  fake.write_text(FAKE_PYTHON.format(python=sys.executable, calls=calls))
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  root = str(tmp_path / "runs")
  finish(os.path.join(root, "mp_tr_bce", "seed_0"))
  base = [sys.executable, "-m", "tools.sweep", "--sweep=unet_ablation", "--modifiers=cpu",
          f"--root={root}", f"--python={fake}", "--extra=--config.train.num_epochs=2"]
  run = lambda args, **env: subprocess.run(base + args, cwd=str(tmp_path), capture_output=True,
                                           text=True, timeout=120,
                                           env={**os.environ, "PYTHONPATH": REPO, **env})
  dry = run(["--dry_run"])
  assert dry.returncode == 0, dry.stderr
  assert len(dry.stdout.splitlines()) == 5 and not os.path.exists(calls)
  proc = run([], FAKE_FAIL="1")
  assert proc.returncode == 1, proc.stderr
  with open(calls) as f:
    launched = [json.loads(l) for l in f]
  assert [a[2] for a in launched] == [f"--workdir={root}/{v}/seed_0"
                                      for v in ("mp_tr_dice", "strconv_tr_bce", "strconv_ups_dice")]
  assert launched[0] == ["launch.py", "--config=configs/unet.py:mp_tr_dice,cpu,seed=0",
                         f"--workdir={root}/mp_tr_dice/seed_0", "--config.train.num_epochs=2"]
  assert "sweep: 2 ok, 1 skipped, 1 failed, 0 blocked" in proc.stdout
  assert "fake training in" in proc.stdout
  proc = run([])                                   # the failed run again, and nothing else
  assert proc.returncode == 0, proc.stdout + proc.stderr
  with open(calls) as f:
    assert len(f.readlines()) == 4
  bad = run(["--modifiers=cpuu"])
  assert bad.returncode == 1 and "unknown modifier 'cpuu'" in bad.stderr
