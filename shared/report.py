"""Turns folders of finished runs into an ablation table (Markdown + CSV) and two PNGs.

  python -m shared.report --runs=runs/unet_ablation --out=runs/unet_ablation/report

reads every `eval.json` under the `--runs` folders and writes to `--out`:
  table.md    one section per task: a row per variant (its factor columns, e.g. downsample /
              upsample / loss, or dataset / label input / wrong-label rate), every metric as
              mean ± sample std (ddof=1) over seeds with the seed count, parameter count, train
              time and images/s; the best mean of each metric in bold. Also printed.
  table.csv   the same rows, one column per number (`dice_mean`, `dice_std`, `dice_n`,
              `dice_best`, ...); `*_std` is empty when only one seed ran.
  bars.png    one panel per headline metric, bar = mean, error bar = std (none with one seed).
  curves.png  one panel per headline metric, eval metric vs step from each run's metrics.jsonl,
              one line per row (mean over seeds at the steps every seed logged, band = ± std).
With runs of several tasks in the folders (the CVAE sweep also holds its judge classifiers),
the PNGs are per task: `bars_cvae.png`, `bars_classifier.png`, ...

Runs are averaged together only when their configs agree on everything but the seed, the task's
factors and harmless fields (`IGNORED_FIELDS`: paths, mode, logging/checkpoint frequencies,
picture counts). Otherwise a warning names the differing fields and the runs become separate
rows with a column per such field, so a 2-epoch smoke run is never averaged into a 30-epoch one.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import io
import json
import os
from typing import Any, Iterable, Sequence

from absl import app
from absl import flags
from absl import logging

from shared import report_stats
from shared.report_stats import mean_std, Stat  # pylint: disable=g-importing-member (re-export)

# eval.json keys that describe a run rather than measure the model.
META_KEYS = ("variant", "task", "num_params", "num_eval_examples", "step", "train_time_s",
             "images_per_s", "num_devices", "skipped_train_examples", "skipped_eval_examples",
             "config")
# Config fields that may differ between seeds of one row without making them incomparable.
IGNORED_FIELDS = ("seed", "variant", "task", "mode", "allow_config_change", "workdir",
                  "data.data_dir", "data.download",
                  "data.cache_max_bytes", "train.log_every_steps", "train.checkpoint_every_steps",
                  "train.max_to_keep", "train.eval_every_epochs", "eval.num_pictures",
                  "eval.num_swap_rows", "eval.num_iterations", "eval.classifier_workdir")
# Metric names where lower is better, for tasks without a spec.
LOWER_IS_BETTER = frozenset({"loss", "neg_elbo", "recon", "kl", "bits_per_dim"})


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """What a task's table shows.

  Attributes:
    slug: short name for per-task file names.
    title: section heading.
    factors: (column name, dotted config path) for each ablation factor.
    metrics: eval.json metrics in column order.
    headline: metrics drawn in bars.png and curves.png.
    lower_is_better: metrics where the smallest mean is the best.
    compare_within: (metric or "*", factor columns): the metric's best is marked separately
      among rows that share those factors, because values across them are not comparable
      (UNet `loss` is each variant's own objective; CVAE nats differ per dataset).
    plot_by: factor columns whose values get separate plot panels (scales differ).
  """
  slug: str
  title: str
  factors: tuple[tuple[str, str], ...]
  metrics: tuple[str, ...]
  headline: tuple[str, ...]
  lower_is_better: frozenset[str] = LOWER_IS_BETTER
  compare_within: tuple[tuple[str, tuple[str, ...]], ...] = ()
  plot_by: tuple[str, ...] = ()

  def within(self, metric: str) -> tuple[str, ...]:
    table = dict(self.compare_within)
    return table.get(metric, table.get("*", ()))


TASKS = {
    "unet.task": TaskSpec(
        "unet", "UNet segmentation",
        (("downsample", "model.downsample"), ("upsample", "model.upsample"),
         ("loss function", "seg.loss")),
        ("dice", "iou", "mean_iou", "pixel_accuracy", "loss"),
        ("dice", "iou", "pixel_accuracy"), compare_within=(("loss", ("loss function",)),)),
    "cvae.task": TaskSpec(
        "cvae", "Conditional VAE",
        (("dataset", "data.name"), ("label input", "model.label_input"),
         ("wrong-label rate", "loss.wrong_label_rate"),
         ("wrong-label target", "loss.wrong_label_target")),
        ("neg_elbo", "recon", "kl", "bits_per_dim", "label_adherence",
         "label_adherence_decoder_only", "true_label_accuracy", "classifier_accuracy"),
        ("neg_elbo", "label_adherence", "true_label_accuracy"),
        compare_within=(("*", ("dataset",)),), plot_by=("dataset",)),
    "cvae.classifier_task": TaskSpec(
        "classifier", "Judge classifier", (("dataset", "data.name"),), ("accuracy", "loss"),
        ("accuracy",), compare_within=(("*", ("dataset",)),)),
}


def spec_for(task: str, evals: Sequence[dict]) -> TaskSpec:
  """The task's spec, with any metric its eval.json files have beyond it appended.

  An unknown task gets a spec of all its numeric eval.json keys, so new families show up
  without a change here (add them to `TASKS` for factors and headline metrics).
  """
  numeric = sorted({k for e in evals for k, v in e.items()
                    if k not in META_KEYS and isinstance(v, (int, float))
                    and not isinstance(v, bool)})
  if task in TASKS:
    spec = TASKS[task]
    extra = tuple(k for k in numeric if k not in spec.metrics)
    return dataclasses.replace(spec, metrics=spec.metrics + extra) if extra else spec
  return TaskSpec(task.replace(".", "_"), task, (), tuple(numeric), tuple(numeric[:3]))


@dataclasses.dataclass
class RunResult:
  """One finished run: its eval.json, with the config flattened to dotted keys."""
  workdir: str
  task: str
  variant: str
  seed: Any
  eval: dict
  config: dict


def flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def find_eval_files(folders: Sequence[str]) -> list[str]:
  """Every eval.json under the folders, sorted; a missing folder or no eval.json is an error."""
  paths = []
  for folder in folders:
    if not os.path.isdir(folder):
      raise FileNotFoundError(f"--runs folder {folder!r} does not exist")
    found = sorted(glob.glob(os.path.join(folder, "**", "eval.json"), recursive=True))
    if not found:
      raise FileNotFoundError(f"no eval.json under {folder!r} (are its runs finished?)")
    paths += found
  return sorted(dict.fromkeys(os.path.normpath(p) for p in paths))


def load_run(path: str) -> RunResult:
  try:
    with open(path) as f:
      ev = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from e
  for key in ("task", "config"):
    if key not in ev:
      raise ValueError(f"{path}: has no {key!r} field; was it written by shared/train.py?")
  config = flatten(ev["config"])
  return RunResult(os.path.dirname(path), ev["task"], ev.get("variant") or config.get("variant", ""),
                   config.get("seed"), ev, config)


@dataclasses.dataclass
class Row:
  """Runs averaged into one table row: same task, variant, factors and (other) config."""
  task: str
  variant: str
  factors: dict[str, Any]     # column name -> value
  setting: dict[str, Any]     # config field -> value, for fields that differ between rows
  runs: list[RunResult]
  label: str = ""

  @property
  def seeds(self) -> list:
    return sorted((r.seed for r in self.runs), key=_sort_key)


def _sort_key(value):
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return (1, json.dumps(value, sort_keys=True))
  return (0, value)


def _canon(value) -> str:
  return json.dumps(value, sort_keys=True)


_MISSING = "<absent>"


def group_runs(runs: Sequence[RunResult], ignore: Iterable[str] = IGNORED_FIELDS
               ) -> tuple[dict[str, list[Row]], list[str]]:
  """Groups runs into rows per task; returns `({task: rows}, warnings)`.

  Within a task, a field (other than the seed, the factors and `ignore`) whose value is not the
  same in every run becomes part of the row key: runs that differ in it are never averaged. If
  that splits runs of one variant and factor setting, a warning names the fields and values.
  A field missing from some runs' configs but with one value in all the others (a field added
  to the code after those runs) is taken to be equal, with a warning.
  """
  ignore = set(ignore)
  by_task = collections.defaultdict(list)
  for r in runs:
    by_task[r.task].append(r)
  tables, warnings = {}, []
  for task in sorted(by_task):
    task_runs = by_task[task]
    spec = spec_for(task, [r.eval for r in task_runs])
    factor_paths = {p for _, p in spec.factors}
    fields = sorted({k for r in task_runs for k in r.config} - factor_paths - ignore)
    varying = [k for k in fields
               if len({_canon(r.config[k]) for r in task_runs if k in r.config}) > 1]
    for k in fields:
      absent = [r for r in task_runs if k not in r.config]
      if absent and k not in varying:
        value = next(r.config[k] for r in task_runs if k in r.config)
        warnings.append(f"{task}: config field {k} is absent from {len(absent)} of "
                        f"{len(task_runs)} runs (written before the field existed?); taken to "
                        f"be {_canon(value)} as in the others, e.g. {absent[0].workdir}")
    groups = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in task_runs:
      factors = {name: r.config.get(path, _MISSING) for name, path in spec.factors}
      setting = {k: r.config.get(k, _MISSING) for k in varying}
      base = (r.variant, _canon(factors))
      groups[base][_canon(setting)].append((factors, setting, r))
    rows, named = [], set()
    for (variant, _), subgroups in groups.items():
      if len(subgroups) > 1:
        settings = [members[0][1] for members in subgroups.values()]
        differ = [k for k in varying if len({_canon(s[k]) for s in settings}) > 1]
        named.update(differ)
        detail = "; ".join(
            f"{k}: " + ", ".join(sorted({_canon(s[k]) for s in settings})) for k in differ)
        factors = next(iter(subgroups.values()))[0][0]
        factor_text = ", ".join(f"{n}={v}" for n, v in factors.items())
        warnings.append(
            f"{task} {variant}" + (f" ({factor_text})" if factor_text else "") +
            f": runs differ in config fields other than seed and factors, so they are not "
            f"averaged together but split into {len(subgroups)} rows; differing fields: {detail}")
      for members in subgroups.values():
        factors, setting, _ = members[0]
        row = Row(task, variant, factors, setting, [m[2] for m in members])
        seeds = collections.Counter(_canon(r.seed) for r in row.runs)
        dup = sorted(s for s, c in seeds.items() if c > 1)
        if dup:
          warnings.append(f"{task} {variant}: seed {', '.join(dup)} appears more than once in one "
                          f"row ({', '.join(r.workdir for r in row.runs)}); each run counts in n")
        rows.append(row)
    across = [k for k in varying if k not in named]
    if across:
      warnings.append(f"{task}: rows differ in config fields beyond the factors "
                      f"({', '.join(across)}); shown as columns, compare those rows with care")
    rows.sort(key=lambda row: (row.variant, [_sort_key(v) for v in row.factors.values()],
                               [_sort_key(v) for v in row.setting.values()]))
    _label_rows(rows)
    tables[task] = rows
  return tables, warnings


def _label_rows(rows: list[Row]) -> None:
  """Short names for plots: the variant plus whatever tells its rows apart."""
  by_variant = collections.defaultdict(list)
  for row in rows:
    by_variant[row.variant].append(row)
  for same in by_variant.values():
    keys = [("f", n) for n in same[0].factors] + [("s", k) for k in same[0].setting]
    telling = [(kind, k) for kind, k in keys
               if len({_canon((r.factors if kind == "f" else r.setting)[k]) for r in same}) > 1]
    for row in same:
      parts = [str((row.factors if kind == "f" else row.setting)[k]) for kind, k in telling]
      row.label = "/".join([row.variant or row.task, *parts])


def row_stat(row: Row, key: str) -> Stat:
  return report_stats.run_stat(row.runs, key)


def best_rows(rows: Sequence[Row], metric: str, lower_is_better: bool,
              within: Sequence[str] = ()) -> set[int]:
  """Indices of the rows with the best mean (ties all count), per group of equal `within` factors.

  A group marks none when fewer than 2 of its rows have the metric or all their means are
  equal: nothing stands out.
  """
  groups = collections.defaultdict(dict)
  for i, row in enumerate(rows):
    mean = row_stat(row, metric).mean
    if mean is not None:
      groups[tuple(_canon(row.factors.get(c)) for c in within)][i] = mean
  best = set()
  for means in groups.values():
    if len(means) < 2 or len(set(means.values())) == 1:
      continue
    target = min(means.values()) if lower_is_better else max(means.values())
    best |= {i for i, m in means.items() if m == target}
  return best


def _best_by_metric(spec: TaskSpec, rows: Sequence[Row], metrics: Sequence[str]):
  return {m: best_rows(rows, m, m in spec.lower_is_better, spec.within(m)) for m in metrics}


def _compare_note(spec: TaskSpec, metrics: Sequence[str]) -> str:
  notes = []
  for metric, cols in spec.compare_within:
    if metric == "*":
      notes.append(f"best marked per {' / '.join(cols)}")
    elif metric in metrics:
      notes.append(f"`{metric}` best marked among rows with the same {' / '.join(cols)}")
  return "; " + "; ".join(notes) if notes else ""


def _decimals(value: float) -> int:
  return 4 if abs(value) < 10 else 2


def fmt_stat(stat: Stat, row_n: int | None = None) -> str:
  """`0.8123 ± 0.0045`; `± n/a` with one value; `(n=2)` when fewer values than the row's runs."""
  if stat.mean is None:
    return "–"
  d = _decimals(stat.mean)
  text = f"{stat.mean:.{d}f} ± " + ("n/a" if stat.std is None else f"{stat.std:.{d}f}")
  if row_n is not None and stat.n != row_n:
    text += f" (n={stat.n})"
  return text


def fmt_params(row: Row) -> str:
  counts = sorted({int(r.eval["num_params"]) for r in row.runs
                   if r.eval.get("num_params") is not None})
  if not counts:
    return "–"
  return f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}–{counts[-1]:,}"


def _value_text(value) -> str:
  if value == _MISSING:
    return "(absent)"
  return value if isinstance(value, str) else json.dumps(value)


def _metrics_present(spec: TaskSpec, rows: Sequence[Row]) -> list[str]:
  return [m for m in spec.metrics if any(row_stat(row, m).n for row in rows)]


def markdown_table(task: str, rows: Sequence[Row]) -> str:
  """A Markdown section for one task: heading, how to read it, the table."""
  spec = spec_for(task, [r.eval for row in rows for r in row.runs])
  metrics = _metrics_present(spec, rows)
  best = _best_by_metric(spec, rows, metrics)
  setting_cols = list(rows[0].setting) if rows else []
  arrows = {m: "↓" if m in spec.lower_is_better else "↑" for m in metrics}
  header = (["variant"] + [n for n, _ in spec.factors] + setting_cols + ["seeds (n)"] +
            [f"{m} {arrows[m]}" for m in metrics] + ["params", "train time (s)", "images/s"])
  lines = [f"### {spec.title} (`{task}`)", "",
           f"{sum(len(r.runs) for r in rows)} runs in {len(rows)} rows. Each cell is mean ± "
           "sample standard deviation (ddof=1) over seeds; with a single seed the std is n/a. "
           "**Bold**: best mean in the column (↑ higher is better, ↓ lower is better)"
           f"{_compare_note(spec, metrics)}; `(n=k)`: only k runs report that metric.", "",
           "| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] * (1 + len(spec.factors) + len(setting_cols) + 1) +
                          ["---:"] * (len(metrics) + 3)) + "|"]
  for i, row in enumerate(rows):
    n = len(row.runs)
    cells = [row.variant] + [_value_text(v) for v in row.factors.values()]
    cells += [_value_text(v) for v in row.setting.values()]
    cells.append(f"{n} ({', '.join(_value_text(s) for s in row.seeds)})")
    for m in metrics:
      text = fmt_stat(row_stat(row, m), n)
      cells.append(f"**{text}**" if i in best[m] else text)
    cells += [fmt_params(row), fmt_stat(row_stat(row, "train_time_s"), n),
              fmt_stat(row_stat(row, "images_per_s"), n)]
    lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
  return "\n".join(lines) + "\n"


def markdown_report(tables: dict[str, list[Row]], warnings: Sequence[str],
                    folders: Sequence[str]) -> str:
  parts = [f"## Results from {', '.join(f'`{f}`' for f in folders)}", ""]
  if warnings:
    parts += [f"> **warning:** {w}" for w in warnings] + [""]
  parts += [markdown_table(task, rows) for task, rows in tables.items()]
  return "\n".join(parts)


def csv_rows(tables: dict[str, list[Row]]) -> tuple[list[str], list[dict]]:
  """Column names (union over tasks, in order) and one dict per row; numbers unformatted."""
  columns, out = ["task", "variant", "label"], []
  for task, rows in tables.items():
    spec = spec_for(task, [r.eval for row in rows for r in row.runs])
    metrics = _metrics_present(spec, rows)
    best = _best_by_metric(spec, rows, metrics)
    for i, row in enumerate(rows):
      rec = {"task": task, "variant": row.variant, "label": row.label}
      rec.update({name: _value_text(v) for name, v in row.factors.items()})
      rec.update({k: _value_text(v) for k, v in row.setting.items()})
      rec["n_seeds"] = len(row.runs)
      rec["seeds"] = ";".join(_value_text(s) for s in row.seeds)
      for m in metrics:
        st = row_stat(row, m)
        rec.update({f"{m}_mean": st.mean, f"{m}_std": "" if st.std is None else st.std,
                    f"{m}_n": st.n, f"{m}_best": i in best[m]})
      params = sorted({int(r.eval["num_params"]) for r in row.runs
                       if r.eval.get("num_params") is not None})
      rec["num_params"] = params[0] if len(params) == 1 else ";".join(map(str, params))
      for key in ("train_time_s", "images_per_s"):
        st = row_stat(row, key)
        rec.update({f"{key}_mean": "" if st.mean is None else st.mean,
                    f"{key}_std": "" if st.std is None else st.std})
      rec["workdirs"] = ";".join(r.workdir for r in row.runs)
      columns += [k for k in rec if k not in columns]
      out.append(rec)
  return columns, out


def csv_text(tables: dict[str, list[Row]]) -> str:
  columns, rows = csv_rows(tables)
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  return buf.getvalue()


def write_report(folders: Sequence[str], out_dir: str,
                 ignore: Iterable[str] = IGNORED_FIELDS) -> dict:
  """Reads the runs, writes table.md, table.csv and the PNGs; returns what it wrote.

  Returns:
    {"markdown": text, "warnings": [...], "files": [paths], "tables": {task: rows}}
  """
  from shared import report_plots  # pylint: disable=g-import-not-at-top  (matplotlib is slow)
  runs = [load_run(p) for p in find_eval_files(folders)]
  tables, warnings = group_runs(runs, ignore)
  for w in warnings:
    logging.warning("%s", w)
  os.makedirs(out_dir, exist_ok=True)
  text = markdown_report(tables, warnings, folders)
  files = [os.path.join(out_dir, "table.md"), os.path.join(out_dir, "table.csv")]
  with open(files[0], "w") as f:
    f.write(text)
  with open(files[1], "w", newline="") as f:
    f.write(csv_text(tables))
  for task, rows in tables.items():
    spec = spec_for(task, [r.eval for row in rows for r in row.runs])
    suffix = "" if len(tables) == 1 else f"_{spec.slug}"
    bars = os.path.join(out_dir, f"bars{suffix}.png")
    curves = os.path.join(out_dir, f"curves{suffix}.png")
    report_plots.bar_chart(rows, spec, bars)
    report_plots.learning_curves(rows, spec, curves)
    files += [bars, curves]
  return {"markdown": text, "warnings": warnings, "files": files, "tables": tables}


_RUNS = flags.DEFINE_list("runs", None, "Folders to search for eval.json (recursively).")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: FIRST_RUNS_FOLDER/report).")
_IGNORE = flags.DEFINE_list("ignore", [], "More config fields (dotted) that may differ between "
                            "seeds of one row, on top of the built-in harmless ones.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _RUNS.value:
    raise app.UsageError("--runs is required, e.g. --runs=runs/unet_ablation")
  out = _OUT.value or os.path.join(_RUNS.value[0], "report")
  try:
    result = write_report(_RUNS.value, out, IGNORED_FIELDS + tuple(_IGNORE.value))
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None
  print(result["markdown"])
  print("wrote " + ", ".join(result["files"]))


if __name__ == "__main__":
  app.run(main)
