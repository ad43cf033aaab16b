"""Runs a named set of configs x seeds into one folder, one workdir per run, one run at a time.

  python -m tools.sweep --sweep=unet_ablation --seeds=0,1,2 --modifiers=cpu \\
      --root=runs/unet_ablation [--dry_run] [--extra=--config.train.num_epochs=2 ...]

Named sweeps are declared by each family beside its config (`SWEEPS` in configs/unet.py,
configs/cvae.py; tools/discovery.py finds them); `--help` lists them:
  unet_ablation  the 4 ablation variants: ROOT/VARIANT/seed_S
  unet_all       all 12 down/up/loss combinations
  cvae           first one judge classifier per dataset (ROOT/classifier/DATASET, seed 0), then
                 datasets x model.label_input x loss.wrong_label_rate:
                 ROOT/DATASET_LABELINPUT_wrongRATE/seed_S, each pointed at its classifier
`--only=GLOB,...` keeps runs whose name (the folder under ROOT) matches, plus what they need.

Every run is a plain `python launch.py --config=... --workdir=...` subprocess run from the repo
root, so a sweep is nothing but the commands you would type, in order:
  * a run whose workdir holds `eval.json` and the final checkpoint it names is finished and
    skipped (even if `--extra` changed since: the report then shows the mismatch as separate
    rows);
  * any other run is launched; launch.py resumes from the workdir's checkpoint by itself;
  * a failed run is reported and the sweep goes on; the exit code is 1 if any run failed (or
    could not start because a run it needs failed);
  * seeds are the outer loop, so a sweep cut short still has every config at the first seed;
  * every config and `--config.X` override is built/checked before the first run starts;
  * `--dry_run` prints the commands (for a TPU VM or a cluster queue) instead of running them.
Output of each run is also appended to `WORKDIR/sweep.log`. TFDS_DATA_DIR and the rest of the
environment are passed through. `python -m tools.report --runs=ROOT` then makes the tables.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Callable, Sequence

from absl import app
from absl import flags
from ml_collections.config_flags import config_path

from configs.experiments import Run
from tools import discovery

REPO_ROOT = discovery.REPO_ROOT
EVAL_JSON = "eval.json"
SWEEPS = discovery.sweeps()


def build_runs(sweep: str, root: str, seeds: Sequence[int], modifiers: Sequence[str] = (),
               extra: Sequence[str] = (), only: Sequence[str] = ()) -> list[Run]:
  """The sweep's runs in launch order, `extra` flags appended to every command.

  Args:
    sweep: a key of `SWEEPS` (every family's, found in configs/).
    root: parent folder of every workdir.
    seeds: seeds to run every config with.
    modifiers: config modifiers added to every `--config` (e.g. `cpu`); not `seed=`.
    extra: launch.py flags appended to every command (they win over the sweep's own overrides).
    only: if given, keep runs whose name matches one of these glob patterns (plus the runs they
      need).

  Raises:
    ValueError: unknown sweep, no seeds, a `seed=` modifier, or `only` matching nothing.
  """
  if sweep not in SWEEPS:
    raise ValueError(f"--sweep={sweep!r} is unknown; named sweeps: {', '.join(SWEEPS)}")
  if not seeds:
    raise ValueError("--seeds is empty; give at least one seed, e.g. --seeds=0,1,2")
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"--seeds={list(seeds)} repeats a seed")
  bad = [m for m in modifiers if m.split("=")[0].strip() == "seed"]
  if bad:
    raise ValueError(f"--modifiers={list(modifiers)}: set seeds with --seeds, not {bad[0]!r}")
  runs = SWEEPS[sweep](root, list(seeds), [m for m in modifiers if m])
  runs = [dataclasses.replace(r, overrides=r.overrides + tuple(extra)) for r in runs]
  if only:
    picked = [r for r in runs if any(fnmatch.fnmatchcase(r.name, p) for p in only)]
    if not picked:
      raise ValueError(f"--only={list(only)} matches no run of sweep {sweep!r}; run names: "
                       f"{', '.join(dict.fromkeys(r.name for r in runs))}")
    needed = {d for r in picked for d in r.needs}
    runs = [r for r in runs if r in picked or r.workdir in needed]
  return runs


def check_configs(runs: Sequence[Run]) -> None:
  """Builds every run's config and checks its `--config.X=` fields exist, before anything runs.

  A typo in a modifier or an override then fails in a second, not after hours of earlier runs.
  """
  seen = {}
  for run in runs:
    path, _, arg = run.config.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    key = (path, arg)
    if key not in seen:
      try:
        seen[key] = module.get_config(arg)
      except ValueError as e:
        raise ValueError(f"run {run.name}: --config={run.config}: {e}") from e
    config = seen[key]
    for flag in run.overrides:
      if not flag.startswith("--config."):
        continue
      field = flag[len("--config."):].partition("=")[0]
      try:   # config_flags' own path lookup, the one `--config.FIELD=` goes through
        config_path.get_value(field, config)
      except (KeyError, IndexError, AttributeError, ValueError) as e:
        message = str(e.args[0]) if e.args else ""
        hint = message.splitlines()[-1] if message else ""   # 'Did you mean "num_epochs" ...?'
        raise ValueError(f"run {run.name}: {flag}: the config has no field {field!r}"
                         + (f" ({hint})" if hint.startswith("Did you mean") else "")) from None


def has_eval(workdir: str) -> bool:
  """Finished: eval.json is there and names a step whose checkpoint is committed. (A run writes
  eval.json only after its final checkpoint; one whose checkpoint has since gone, or whose
  eval.json is unreadable, is not finished: launching it again resumes or retrains it.)"""
  try:
    with open(os.path.join(workdir, EVAL_JSON)) as f:
      step = json.load(f)["step"]
  except (OSError, ValueError, KeyError, TypeError):
    return False
  return os.path.isdir(os.path.join(workdir, "checkpoints", str(step)))


def status(run: Run) -> str:
  """`done` (eval.json there), `resume` (a checkpoint there) or `new`."""
  if has_eval(run.workdir):
    return "done"
  ckpt = os.path.join(run.workdir, "checkpoints")
  if os.path.isdir(ckpt) and os.listdir(ckpt):
    return "resume"
  return "new"


# (command, cwd, log_path) -> return code
Launcher = Callable[[Sequence[str], str, str], int]


def subprocess_launcher(cmd: Sequence[str], cwd: str, log_path: str) -> int:
  """Runs `cmd`, echoing its output to this terminal and appending it to `log_path`."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "a") as log:
    log.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", bufsize=1)
    for line in proc.stdout:
      sys.stdout.write(line)
      log.write(line)
    return proc.wait()


@dataclasses.dataclass
class Outcome:
  run: Run
  result: str        # skipped | ok | failed | blocked
  detail: str = ""


def run_sweep(runs: Sequence[Run], launcher: Launcher = subprocess_launcher,
              python: str = sys.executable, cwd: str = REPO_ROOT,
              echo: Callable[[str], None] = print) -> list[Outcome]:
  """Launches every unfinished run in order; a failure is recorded and the sweep goes on.

  A run counts as failed when the launcher returns non-zero, or returns 0 without leaving
  `eval.json` in the workdir.
  """
  outcomes = []
  for i, run in enumerate(runs, 1):
    where = f"[{i}/{len(runs)}] {run.workdir}"
    state = status(run)
    if state == "done":
      echo(f"{where}: eval.json exists, skipped")
      outcomes.append(Outcome(run, "skipped"))
      continue
    missing = [d for d in run.needs if not has_eval(d)]
    if missing:
      echo(f"{where}: not launched, needs a finished run in {', '.join(missing)}")
      outcomes.append(Outcome(run, "blocked", f"needs {', '.join(missing)}"))
      continue
    cmd = run.command(python)
    echo(f"{where}: {'resuming' if state == 'resume' else 'starting'}: {shlex.join(cmd)}")
    start = time.time()
    code = launcher(cmd, cwd, os.path.join(run.workdir, "sweep.log"))
    took = f"{time.time() - start:.0f}s"
    if code != 0:
      outcomes.append(Outcome(run, "failed", f"exit code {code} after {took}"))
    elif not has_eval(run.workdir):
      outcomes.append(Outcome(run, "failed", f"exit code 0 but no {EVAL_JSON} after {took}"))
    else:
      outcomes.append(Outcome(run, "ok", took))
    echo(f"{where}: {outcomes[-1].result} ({outcomes[-1].detail})")
  return outcomes


def summary(outcomes: Sequence[Outcome]) -> str:
  counts = {k: sum(o.result == k for o in outcomes) for k in ("ok", "skipped", "failed",
                                                               "blocked")}
  lines = ["sweep: " + ", ".join(f"{v} {k}" for k, v in counts.items())]
  lines += [f"  {o.result.upper()}: {o.run.workdir} ({o.detail})" for o in outcomes
            if o.result in ("failed", "blocked")]
  return "\n".join(lines)


def dry_run_lines(runs: Sequence[Run], python: str = "python") -> list[str]:
  """Shell lines: a command per unfinished run, a comment per finished one."""
  lines = [f"# run from the repo root ({REPO_ROOT}); {len(runs)} runs, finished ones commented"]
  for run in runs:
    state = status(run)
    if state == "done":
      lines.append(f"# done (eval.json exists): {shlex.join(run.command(python))}")
    else:
      lines.append(shlex.join(run.command(python)) + ("  # resumes" if state == "resume" else ""))
  return lines


def _repo_relative(root: str) -> str:
  """Commands run from the repo root, so a root given relative to another cwd is rewritten."""
  absolute = os.path.abspath(root)
  rel = os.path.relpath(absolute, REPO_ROOT)
  return absolute if rel.startswith("..") else rel


_SWEEP = flags.DEFINE_enum("sweep", None, list(SWEEPS), "Named sweep: " + "; ".join(
    f"{name} = {discovery.describe(builder)}" for name, builder in SWEEPS.items()))
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds, comma-separated.")
_MODIFIERS = flags.DEFINE_list("modifiers", [], "Config modifiers for every run, e.g. `cpu`.")
_ROOT = flags.DEFINE_string("root", None, "Parent folder of the workdirs (default runs/SWEEP).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")
_EXTRA = flags.DEFINE_multi_string(
    "extra", [], "A launch.py flag appended to every command (repeatable), e.g. "
    "--extra=--config.train.num_epochs=2.")
_ONLY = flags.DEFINE_list("only", [], "Glob patterns on run names to keep, e.g. 'mnist_*'.")
_PYTHON = flags.DEFINE_string("python", None, "Interpreter for launch.py (default: this one; "
                              "`python` in --dry_run output).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _SWEEP.value is None:
    sys.exit(f"error: --sweep is required; one of {', '.join(SWEEPS)}")
  try:
    seeds = [int(s) for s in _SEEDS.value]
  except ValueError:
    sys.exit(f"error: --seeds={','.join(_SEEDS.value)}: seeds must be integers")
  root = _repo_relative(_ROOT.value or os.path.join("runs", _SWEEP.value))
  os.chdir(REPO_ROOT)  # workdirs and launch.py paths are relative to the repo root
  try:
    runs = build_runs(_SWEEP.value, root, seeds, _MODIFIERS.value, _EXTRA.value, _ONLY.value)
    check_configs(runs)
  except ValueError as e:
    sys.exit(f"error: {e}")
  if _DRY_RUN.value:
    print("\n".join(dry_run_lines(runs, _PYTHON.value or "python")))
    return 0
  outcomes = run_sweep(runs, python=_PYTHON.value or sys.executable)
  print(summary(outcomes))
  return 1 if any(o.result in ("failed", "blocked") for o in outcomes) else 0


if __name__ == "__main__":
  app.run(main)
