"""Finished runs' eval.json files -> one pandas row per table row, mean / sample std / n per metric.

Runs are averaged together only when their configs agree on everything but the seed, the task's
factors and harmless fields (`IGNORED_FIELDS` plus the family's `ReportSpec.ignored_fields`).
Otherwise a warning names the differing fields and the runs become separate rows with a column
per such field, so a 2-epoch smoke run is never averaged into a 30-epoch one.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterable, Sequence

import pandas as pd

from configs import experiments
from shared import validate
from tools import discovery

# eval.json keys that describe a run rather than measure the model.
META_KEYS = ("variant", "task", "num_params", "num_eval_examples", "step", "train_time_s",
             "images_per_s", "num_devices", "skipped_train_examples", "skipped_eval_examples",
             "config", "workdir", "step_flops", "step_bytes_accessed", "step_peak_memory_bytes")
# Config fields that may differ between seeds of one row without making them incomparable.
IGNORED_FIELDS = ("seed", "variant", "task", "mode", "allow_config_change", "workdir",
                  "data.data_dir", "data.download", "data.cache_max_bytes",
                  "train.log_every_steps", "train.checkpoint_every_steps", "train.max_to_keep",
                  "train.eval_every_epochs", "train.profile_steps", "eval.num_pictures")
# Measured for every run and shown after the metrics (mean ± std, never marked best).
COST_KEYS = ("train_time_s", "images_per_s")
ABSENT = json.dumps("<absent>")   # a varying config field some runs do not have
CONFIG = "config."                # prefix of the config columns of a `run_files.load_runs` frame


def shown(text) -> str:
  """A config value's cell text: strings bare, everything else as JSON."""
  if text == ABSENT:
    return "(absent)"
  value = json.loads(text)
  return value if isinstance(value, str) else text


def natural(text: str):
  """Sort key of a config value: numbers by value, before anything else."""
  value = json.loads(text)
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return (0, value, "")
  return (1, 0, text)


def spec_for(task: str, evals: pd.DataFrame) -> experiments.ReportSpec:
  """The family's `REPORT`, with any numeric eval.json key it does not list appended.

  A task without one gets a spec of all its numeric eval.json keys, so new families show up
  without a change here.
  """
  numeric = sorted(c for c in evals.columns if c not in META_KEYS and "." not in c
                   and pd.api.types.is_numeric_dtype(evals[c])
                   and not pd.api.types.is_bool_dtype(evals[c]) and evals[c].notna().any())
  known = discovery.report_specs().get(task)
  if known is None:
    return experiments.ReportSpec(task, task.replace(".", "_"), task, (), tuple(numeric),
                                  tuple(numeric[:3]))
  spec = known[1]
  extra = tuple(m for m in numeric if m not in spec.metrics)
  return dataclasses.replace(spec, metrics=spec.metrics + extra)


@dataclasses.dataclass
class TaskTable:
  """One task's table.

  Attributes:
    spec: what it shows (metrics found beyond the family's own appended).
    metrics: the spec's metrics that at least one run reports, in column order.
    settings: config fields (dotted) that differ between rows beyond the factors.
    rows: one per table row, in display order: `variant`, `label`, a column per factor and per
      setting (cell text), `seeds` (list), `n_seeds`, `workdirs` (list), `num_params` (sorted
      distinct counts), and `M_mean`, `M_std` (ddof=1; NaN with one value), `M_n` for every
      metric and cost, `M_best` for every metric.
  """
  spec: experiments.ReportSpec
  metrics: list[str]
  settings: list[str]
  rows: pd.DataFrame
  # (factor, cell text) this table is limited to, one per `spec.table_per` factor.
  part: tuple[tuple[str, str], ...] = ()

  @property
  def title(self) -> str:
    """`Conditional VAE, dataset mnist`: the spec's title and the part shown."""
    return ", ".join([self.spec.title, *(f"{name} {value}" for name, value in self.part)])

  @property
  def slug(self) -> str:
    """File-name stem of the table's figures: `cvae_mnist`."""
    return "_".join([self.spec.slug, *(value for _, value in self.part)])


def best_rows(rows: pd.DataFrame, metric: str, lower_is_better: bool,
              within: Sequence[str] = ()) -> pd.Series:
  """True for the rows with the best mean (ties all count), per group of equal `within` factors.

  A group marks none when fewer than 2 of its rows have the metric or all their means are
  equal: nothing stands out.
  """
  means = rows[f"{metric}_mean"]
  keys = [rows[c] for c in within] or [pd.Series(0, index=rows.index)]
  grouped = means.groupby(keys, dropna=False)
  target = grouped.transform("min" if lower_is_better else "max")
  return (means == target) & (grouped.transform("nunique") > 1)


def _config_columns(runs: pd.DataFrame, spec: experiments.ReportSpec, ignore: Iterable[str],
                    warnings: list[str]) -> list[str]:
  """The config fields whose values tell rows apart.

  A field absent from some runs (written before it existed) takes the value that stands for
  what those runs computed when the core records one (`validate.RESUME_DEFAULTS`, the value an
  older run resumes with); otherwise it tells them apart, shown as `(absent)`: the code it
  stands for may have behaved like any value, so such runs are never averaged with the others.
  """
  skip = set(ignore) | set(spec.ignored_fields) | {path for _, path in spec.factors}
  fields = sorted(c for c in runs if c.startswith(CONFIG) and c[len(CONFIG):] not in skip)
  for column in fields:
    known = validate.RESUME_DEFAULTS.get(column[len(CONFIG):])
    if known is not None:
      runs[column] = runs[column].fillna(json.dumps(known, sort_keys=True))
  varying = [c for c in fields if runs[c].nunique(dropna=False) > 1]
  for column in varying:
    absent = runs[column].isna()
    if absent.any():
      warnings.append(f"{spec.task}: config field {column[len(CONFIG):]} is absent from "
                      f"{absent.sum()} of {len(runs)} runs (written before the field existed?), "
                      f"e.g. {runs.loc[absent, 'workdir'].iloc[0]}; those runs get their own rows")
  runs[varying] = runs[varying].fillna(ABSENT)
  return varying


def _split_warnings(spec: experiments.ReportSpec, rows: pd.DataFrame,
                    settings: list[str]) -> list[str]:
  """One per variant + factor setting split over rows, and one for settings no split names."""
  warnings, named, factors = [], set(), [name for name, _ in spec.factors]
  for (variant, *values), same in rows.groupby(["variant", *factors], sort=False):
    if len(same) < 2:
      continue
    differ = [k for k in settings if same[k].nunique() > 1]
    named.update(differ)
    detail = "; ".join(f"{k}: " + ", ".join(sorted(same[k].unique())) for k in differ)
    factor_text = ", ".join(f"{n}={shown(v)}" for n, v in zip(factors, values))
    warnings.append(f"{spec.task} {variant}" + (f" ({factor_text})" if factor_text else "") +
                    ": runs differ in config fields other than seed and factors, so they are "
                    f"not averaged together but split into {len(same)} rows; differing "
                    f"fields: {detail}")
  across = [k for k in settings if k not in named]
  if across:
    warnings.append(f"{spec.task}: rows differ in config fields beyond the factors "
                    f"({', '.join(across)}); shown as columns, compare those rows with care")
  return warnings


def _labels(rows: pd.DataFrame, task: str, columns: list[str]) -> list[str]:
  """Short names for plots: the variant plus whatever tells its rows apart."""
  telling = rows.groupby("variant")[columns].nunique() > 1
  return ["/".join([row["variant"] or task,
                    *(shown(row[c]) for c in columns if telling.at[row["variant"], c])])
          for _, row in rows.iterrows()]


def _duplicate_seed_warnings(task: str, rows: pd.DataFrame) -> list[str]:
  warnings = []
  for variant, seeds, workdirs in rows[["variant", "seeds", "workdirs"]].itertuples(index=False):
    duplicated = sorted({s for s in seeds if seeds.count(s) > 1})
    if duplicated:
      warnings.append(f"{task} {variant}: seed {', '.join(duplicated)} appears more than once in "
                      f"one row ({', '.join(workdirs)}); each run counts in n")
  return warnings


def task_table(runs: pd.DataFrame,
               ignore: Iterable[str] = IGNORED_FIELDS) -> tuple[TaskTable, list[str]]:
  """The table of one task's runs (a `run_files.load_runs` frame of that task), and warnings."""
  task = runs["task"].iloc[0]
  runs = runs.dropna(axis=1, how="all").copy()   # other tasks' metrics and config fields
  spec, warnings = spec_for(task, runs), []
  factor_columns = {f"{CONFIG}{path}": name for name, path in spec.factors}
  clash = sorted(set(factor_columns.values()) & set(runs.columns))
  if clash:
    raise ValueError(f"{task}: factor column name(s) {clash} are also eval.json keys; give the "
                     "factors other names in the family's REPORT")
  for column, default in [*((c, ABSENT) for c in factor_columns), (f"{CONFIG}seed", "null"),
                          ("num_params", float("nan"))]:
    runs[column] = runs[column].fillna(default) if column in runs else default
  settings = _config_columns(runs, spec, ignore, warnings)
  runs = runs.rename(columns=factor_columns | {c: c[len(CONFIG):] for c in settings})
  settings = [c[len(CONFIG):] for c in settings]
  keys = ["variant", *factor_columns.values(), *settings]
  metrics = [m for m in spec.metrics if m in runs]
  values = [c for c in (*metrics, *COST_KEYS) if c in runs]
  runs[values] = runs[values].astype(float)

  grouped = runs.groupby(keys, sort=False)
  stats = grouped[values].agg(["mean", "std", "count"])   # pandas' std: ddof=1, NaN for n=1
  stats.columns = [f"{m}_{'n' if s == 'count' else s}" for m, s in stats.columns]
  stats = stats.astype({f"{m}_n": "Int64" for m in values})
  meta = grouped.agg(seeds=(f"{CONFIG}seed", lambda s: sorted(s, key=natural)),
                     workdirs=("workdir", list),
                     num_params=("num_params", lambda s: sorted({int(v) for v in s.dropna()})))
  rows = meta.join(stats).reset_index()
  order = sorted(rows.index, key=lambda i: (rows.at[i, "variant"],
                                            *(natural(rows.at[i, k]) for k in keys[1:])))
  rows = rows.loc[order].reset_index(drop=True)

  rows["n_seeds"] = rows["seeds"].map(len)
  warnings += _duplicate_seed_warnings(task, rows)
  warnings += _split_warnings(spec, rows, settings)
  rows["label"] = _labels(rows, task, keys[1:])
  for m in metrics:
    rows[f"{m}_best"] = best_rows(rows, m, m in spec.lower_is_better, spec.within(m))
  rows[keys[1:]] = rows[keys[1:]].map(shown)
  rows["seeds"] = rows["seeds"].map(lambda seeds: [json.loads(s) for s in seeds])
  return TaskTable(spec, metrics, settings, rows), warnings


def _parts(task: str, runs: pd.DataFrame):
  """((factor, cell text) pairs, runs) per table of one task: one part of all runs, or one per
  value of the spec's `table_per` factors, in their natural order."""
  spec = spec_for(task, runs)
  if not spec.table_per:
    return [((), runs)]
  paths = dict(spec.factors)
  names = list(spec.table_per)
  columns = [f"{CONFIG}{paths[name]}" for name in names]
  keys = pd.DataFrame({c: runs[c].fillna(ABSENT) if c in runs else ABSENT for c in columns},
                      index=runs.index)
  groups = sorted(keys.groupby(columns, sort=False),
                  key=lambda group: [natural(v) for v in group[0]])
  return [(tuple(zip(names, map(shown, values))), runs.loc[same.index])
          for values, same in groups]


def group_runs(runs: pd.DataFrame,
               ignore: Iterable[str] = IGNORED_FIELDS) -> tuple[dict[str, TaskTable], list[str]]:
  """`({key: TaskTable}, warnings)`: a table per task among the runs, tasks sorted by name, or
  per task and value of its `table_per` factors (key `cvae.task[dataset=mnist]`)."""
  tables, warnings = {}, []
  for task, task_runs in runs.groupby("task", sort=True):
    for part, part_runs in _parts(task, task_runs):
      table, part_warnings = task_table(part_runs, ignore)
      table.part = part
      tables[task + "".join(f"[{name}={value}]" for name, value in part)] = table
      warnings += part_warnings
  return tables, warnings
