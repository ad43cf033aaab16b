"""docs/results.md: the committed runs' tables, and the launch.py command that made each run.

  python -m tools.report --runs=docs/runs --results_md=docs/results.md

Every figure on the page comes from an `eval.json` under `--runs` (one row per run folder: these
are separate experiments, not seeds to average). eval.json records the run's full config but not
its command line, so the command is rebuilt: the config file and variant whose `get_config`
gives the run's `task` and `variant`, the boolean modifiers (`cpu`, ...) that leave the fewest
fields to set, `seed=N`, then `--config.FIELD=value` for every field that still differs. A field
the run's config lacks (added to the code since) or has that today's code lacks (removed) cannot
be pinned by a command, and is listed under it instead. The workdir is not recorded either: the
command names `runs/FOLDER` after the run's folder.

A `missing_runs.md` beside the runs (written by hand) says which README figures have no
committed run folder yet; the page includes it, so the gap is stated, never filled in.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import shlex
from typing import Iterable, Sequence

import pandas as pd

from shared import validate
from tools import discovery
from tools import report_markdown
from tools import report_table
from tools import run_files

MISSING_RUNS_FILE = "missing_runs.md"
# Config fields a command does not set: derived from the variant, or the run's mode (an
# eval-only rerun rewrites eval.json of the model the training command made).
DERIVED_FIELDS = ("task", "variant", "mode")


def find_family(task: str, variant: str) -> tuple[str, str, object]:
  """(config file, variant argument, module) whose `get_config(variant)` makes this run's kind.

  Raises:
    ValueError: no config file in configs/ makes that task and variant.
  """
  for path, module in discovery.config_modules().items():
    for name in getattr(module, "VARIANTS", ()):
      config = module.get_config(name)
      if config.task == task and config.variant == variant:
        return path, name, module
  raise ValueError(f"no config in configs/ has task {task!r} and variant {variant!r}")


def _flat(config) -> dict[str, str]:
  """A ConfigDict or an eval.json config as `{dotted field: JSON text}`."""
  if not isinstance(config, dict):
    config = json.loads(config.to_json_best_effort())
  return run_files.flat_config(config)


def flag_value(text: str) -> str:
  """A field's JSON text as config_flags parses it back: tuples as `(a, b)`, strings bare."""
  value = json.loads(text)
  if isinstance(value, list):
    return repr(tuple(value))
  return value if isinstance(value, str) else text


def launch_command(config: dict, workdir: str) -> tuple[list[str], list[str]]:
  """The launch.py command whose config equals `config`, and notes on what it cannot pin."""
  path, variant, module = find_family(config["task"], config["variant"])
  wanted = _flat(config)
  modifiers = getattr(module, "MODIFIERS", {})
  seed = [f"seed={config['seed']}"] if config.get("seed") and "seed" in modifiers else []
  switches = [k for k, v in modifiers.items() if isinstance(v, bool)]
  best = None
  for count in range(len(switches) + 1):
    for chosen in itertools.combinations(switches, count):
      arg = ",".join([variant, *chosen, *seed])
      today = _flat(module.get_config(arg))
      differ = sorted(k for k in wanted.keys() & today.keys()
                      if wanted[k] != today[k] and k not in DERIVED_FIELDS)
      if best is None or len(differ) < len(best[2]):
        best = (arg, today, differ)
  arg, today, differ = best
  command = ["python", "launch.py", f"--config={path}:{arg}", f"--workdir={workdir}"]
  command += [f"--config.{k}={flag_value(wanted[k])}" for k in differ if wanted[k] != "null"]
  notes = [f"`{k}` was None in this run; a command line cannot set it back to None"
           for k in differ if wanted[k] == "null"]
  # Fields added since whose value for older runs the core records (validate.RESUME_DEFAULTS):
  # pinned like any other field, not left to today's default.
  for key, value in validate.RESUME_DEFAULTS.items():
    if key in today and key not in wanted:
      wanted[key] = json.dumps(value, sort_keys=True)
      if wanted[key] != today[key]:
        command.append(f"--config.{key}={flag_value(wanted[key])}")
  added = sorted(k for k in today.keys() - wanted.keys() if k not in validate.RESUME_IGNORED)
  if added:
    notes.append("not in this run's config (added to the code since), today's default shown, "
                 "which may not be what the run did: " +
                 ", ".join(f"`{k}={flag_value(today[k])}`" for k in added))
  removed = sorted(wanted.keys() - today.keys())
  if removed:
    notes.append("in this run's config but no longer in the code: " +
                 ", ".join(f"`{k}={flag_value(wanted[k])}`" for k in removed))
  return command, notes


def other_results(workdir: str) -> list[str]:
  """`name.json: key value, ...` for the numbers in the run folder's other JSON files."""
  lines = []
  for path in sorted(glob.glob(os.path.join(workdir, "*.json"))):
    if os.path.basename(path) in ("eval.json", "config.json"):
      continue
    with open(path) as f:
      content = json.load(f)
    if not isinstance(content, dict):
      continue
    values = pd.json_normalize(content).iloc[0]
    numbers = ", ".join(f"`{k}` {v:.4g}" for k, v in values.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool))
    lines.append(f"{os.path.basename(path)}: {numbers}")
  return lines


def run_section(record: dict, name: str) -> str:
  """A run's heading, its command (or why there is none) and its other results."""
  lines = [f"### `{record['workdir']}`", ""]
  try:
    command, notes = launch_command(record["config"], os.path.join("runs", name))
    lines += ["```bash", shlex.join(command), "```", ""]
  except ValueError as e:   # a family no longer in configs/: the table row still stands
    notes = [f"no command: {e}"]
  lines += [f"- {note}" for note in notes + other_results(record["workdir"])]
  return "\n".join(lines).rstrip() + "\n"


def page(folders: Sequence[str], path: str, ignore: Iterable[str]) -> str:
  """The page's Markdown; each run is its own row, named after its folder, and a config field
  a run lacks is shown as `(absent)` rather than assumed."""
  runs = run_files.load_runs(folders)
  names = {}
  for folder in folders:
    for eval_path in run_files.find_eval_files([folder]):
      names[os.path.dirname(eval_path)] = os.path.relpath(os.path.dirname(eval_path), folder)
  runs["variant"] = runs["workdir"].map(names)
  tables, warnings = report_table.group_runs(runs, ignore)
  generator = shlex.join(["python", "-m", "tools.report", f"--runs={','.join(folders)}",
                          f"--results_md={path}"])
  parts = ["# Results of the committed runs", "",
           f"Generated by `{generator}` from the `eval.json` of every run folder under "
           f"{', '.join(f'`{f}`' for f in folders)}; do not edit by hand (add or change a run "
           "folder and generate again). The `variant` column is the run's folder.", "",
           report_markdown.markdown_report(tables, warnings, folders),
           "## The command behind each run", "",
           "Rebuilt from the config in its `eval.json` (tools/results_page.py says how); run "
           "from the repository root, after the judge classifier for a CVAE run.", ""]
  records = [run_files.read_eval(p) for p in run_files.find_eval_files(folders)]
  parts += [run_section(r, names[r["workdir"]]) for r in records]
  for folder in folders:
    missing = os.path.join(folder, MISSING_RUNS_FILE)
    if os.path.exists(missing):
      with open(missing) as f:
        parts += [f"## Figures without a committed run (from `{missing}`)", "", f.read()]
  return "\n".join(parts).rstrip() + "\n"


def write(folders: Sequence[str], path: str,
          ignore: Iterable[str] = report_table.IGNORED_FIELDS) -> str:
  text = page(folders, path, ignore)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    f.write(text)
  return text
