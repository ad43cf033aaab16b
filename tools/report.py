"""Turns folders of finished runs into an ablation table (Markdown + CSV) and two PNGs.

  python -m tools.report --runs=runs/unet_ablation --out=runs/unet_ablation/report
  python -m tools.report --runs=docs/runs --results_md=docs/results.md

reads every `eval.json` under the `--runs` folders and writes to `--out`:
  table.md    one section per task (per task and dataset for the CVAE and its judges: the
              family's `REPORT.table_per`): a row per variant (its factor columns, e.g.
              downsample / upsample / loss, or label input / wrong-label rate), every metric as
              mean ± sample std (ddof=1) over seeds with the seed count, parameter count, train
              time and images/s; the best mean of each metric in bold. Also printed.
  table.csv   the same rows, one column per number (`dice_mean`, `dice_std`, `dice_n`,
              `dice_best`, ...); `*_std` is empty when only one seed ran.
  bars.png    one panel per headline metric, bar = mean, error bar = std (none with one seed).
  curves.png  one panel per headline metric, eval metric vs step from each run's metrics.jsonl,
              one line per row (mean over seeds at the steps every seed logged, band = ± std).
With runs of several tasks in the folders (the CVAE sweep also holds its judge classifiers),
the PNGs are per table: `bars_cvae_mnist.png`, `bars_classifier_cifar10.png`, ...
`--results_md=PATH` writes the results page instead (tools/results_page.py: the tables, and the
launch.py command of each run); with `--out` as well, both.

Which runs are averaged into one row, and the factor / metric columns of each family (its
`REPORT` in configs/), are tools/report_table.py's business; report_markdown.py renders the
Markdown, report_plots.py the figures.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

from absl import app
from absl import flags
from absl import logging
import pandas as pd

from tools import report_markdown
from tools import report_table
from tools import results_page
from tools import run_files
from tools.report_table import TaskTable


def csv_frame(tables: dict[str, TaskTable]) -> pd.DataFrame:
  """Every table's rows, numbers unformatted; columns are the union over tables, in order."""
  frames = []
  for table in tables.values():
    columns = ["variant", "label", *(name for name, _ in table.spec.factors), *table.settings,
               "n_seeds", "seeds",
               *(f"{m}_{s}" for m in table.metrics for s in ("mean", "std", "n", "best")),
               "num_params",
               *(f"{k}_{s}" for k in report_table.COST_KEYS for s in ("mean", "std")),
               "workdirs"]
    lists = {key: table.rows[key].map(lambda items: ";".join(map(str, items)))
             for key in ("seeds", "num_params", "workdirs")}
    frames.append(table.rows.reindex(columns=columns).assign(**lists).assign(task=table.spec.task))
  frame = pd.concat(frames, ignore_index=True)
  return frame[["task", *frame.columns.drop("task")]]


def csv_text(tables: dict[str, TaskTable]) -> str:
  return csv_frame(tables).to_csv(index=False, lineterminator="\n")


def write_report(folders: Sequence[str], out_dir: str,
                 ignore: Iterable[str] = report_table.IGNORED_FIELDS) -> dict:
  """Reads the runs, writes table.md, table.csv and the PNGs; returns what it wrote.

  Returns:
    {"markdown": text, "warnings": [...], "files": [paths], "tables": {task: TaskTable}}
  """
  from tools import report_plots  # pylint: disable=g-import-not-at-top  (matplotlib is slow)
  tables, warnings = report_table.group_runs(run_files.load_runs(folders), ignore)
  for w in warnings:
    logging.warning("%s", w)
  os.makedirs(out_dir, exist_ok=True)
  text = report_markdown.markdown_report(tables, warnings, folders)
  files = [os.path.join(out_dir, "table.md"), os.path.join(out_dir, "table.csv")]
  with open(files[0], "w") as f:
    f.write(text)
  with open(files[1], "w", newline="") as f:
    f.write(csv_text(tables))
  for table in tables.values():
    suffix = "" if len(tables) == 1 else f"_{table.slug}"
    bars = os.path.join(out_dir, f"bars{suffix}.png")
    curves = os.path.join(out_dir, f"curves{suffix}.png")
    report_plots.bar_chart(table, bars)
    report_plots.learning_curves(table, curves)
    files += [bars, curves]
  return {"markdown": text, "warnings": warnings, "files": files, "tables": tables}


_RUNS = flags.DEFINE_list("runs", None, "Folders to search for eval.json (recursively).")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: FIRST_RUNS_FOLDER/report, "
                           "unless only --results_md is asked for).")
_RESULTS_MD = flags.DEFINE_string("results_md", None, "Write the results page (tables and the "
                                  "launch.py command of each run) to this Markdown file.")
_IGNORE = flags.DEFINE_list("ignore", [], "More config fields (dotted) that may differ between "
                            "seeds of one row, on top of the built-in harmless ones.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _RUNS.value:
    raise app.UsageError("--runs is required, e.g. --runs=runs/unet_ablation")
  ignore = report_table.IGNORED_FIELDS + tuple(_IGNORE.value)
  out = _OUT.value or (None if _RESULTS_MD.value else os.path.join(_RUNS.value[0], "report"))
  try:
    if out:
      result = write_report(_RUNS.value, out, ignore)
      print(result["markdown"])
      print("wrote " + ", ".join(result["files"]))
    if _RESULTS_MD.value:
      results_page.write(_RUNS.value, _RESULTS_MD.value, ignore)
      print(f"wrote {_RESULTS_MD.value}")
  except (FileNotFoundError, ValueError, OSError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  app.run(main)
