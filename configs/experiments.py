"""The two shapes in which a config family describes its experiments to the tools.

A family's config module (`configs/unet.py`, ...) may define, beside `get_config`:
  SWEEPS   name -> function(root, seeds, modifiers) -> list[Run]: a named grid of launch.py
           commands (`python -m tools.sweep --sweep=NAME`); the function's docstring is its
           one-line description in `--help`.
  REPORT   a `ReportSpec`: the columns of its table in `python -m tools.report`.
  VARIANTS the variant names its `get_config` accepts (tools/results_page.py finds the one a
           finished run was made with).
They live here, with no dependency beyond the standard library, so the grids and columns stay
beside the config they describe while `tools/` only reads them (tools -> configs, never back).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

# Metric names where lower is better, for tasks (or metrics) a family does not list.
LOWER_IS_BETTER = frozenset({"loss", "neg_elbo", "recon", "kl", "bits_per_dim"})


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a sweep: a launch.py command and the workdir it owns.

  Attributes:
    name: the run's folder under the sweep root, shared by its seeds (e.g. `mp_tr_bce`).
    config: the `--config` value, `configs/x.py:variant,modifiers`.
    workdir: where launch.py writes; `eval.json` there means the run is finished.
    overrides: extra launch.py flags such as `--config.model.label_input=decoder`.
    needs: workdirs whose `eval.json` must exist before this run can start (the CVAE needs its
      judge classifier); if one is missing when the run's turn comes, the run is not launched.
  """
  name: str
  config: str
  workdir: str
  overrides: tuple[str, ...] = ()
  needs: tuple[str, ...] = ()

  def command(self, python: str = "python") -> list[str]:
    return [python, "launch.py", f"--config={self.config}", f"--workdir={self.workdir}",
            *self.overrides]


def config_arg(path: str, variant: str, modifiers: Sequence[str], seed: int | None) -> str:
  """`configs/unet.py:mp_tr_bce,cpu,seed=1`: the `--config` value of one run."""
  items = [variant, *modifiers] + ([f"seed={seed}"] if seed is not None else [])
  return f"{path}:{','.join(items)}"


def seed_dir(root: str, name: str, seed: int) -> str:
  """ROOT/NAME/seed_S: seeds of one config sit side by side, so the report averages them."""
  return os.path.join(root, name, f"seed_{seed}")


@dataclasses.dataclass(frozen=True)
class ReportSpec:
  """What a task's table shows.

  Attributes:
    task: the `config.task` of the family's runs (e.g. `unet.task`): how runs find their spec.
    slug: short name for per-task file names (`bars_cvae.png`, `bars_cvae_mnist.png`).
    title: section heading.
    factors: (column name, dotted config path) for each ablation factor.
    metrics: eval.json metrics in column order.
    headline: metrics drawn in bars.png and curves.png.
    lower_is_better: metrics where the smallest mean is the best.
    compare_within: (metric or "*", factor columns): the metric's best is marked separately
      among rows that share those factors, because values across them are not comparable
      (UNet `loss` is each variant's own objective; CVAE nats differ per dataset).
    table_per: factor columns whose every value gets a table of its own, for factors whose
      values come with their own model and budget (a CVAE dataset): each table then shows only
      the config fields that vary within it, instead of every field the datasets differ in.
    ignored_fields: config fields of this family that may differ between seeds of one row
      without making them incomparable (picture counts, paths), beyond the tools' own list.
  """
  task: str
  slug: str
  title: str
  factors: tuple[tuple[str, str], ...]
  metrics: tuple[str, ...]
  headline: tuple[str, ...]
  lower_is_better: frozenset[str] = LOWER_IS_BETTER
  compare_within: tuple[tuple[str, tuple[str, ...]], ...] = ()
  table_per: tuple[str, ...] = ()
  ignored_fields: tuple[str, ...] = ()

  def __post_init__(self):
    names = [name for name, _ in self.factors]
    unknown = [c for c in self.table_per if c not in names]
    if unknown:
      raise ValueError(f"ReportSpec {self.task}: table_per name(s) {unknown} are "
                       f"not factor columns; factors: {names}")

  def within(self, metric: str) -> tuple[str, ...]:
    table = dict(self.compare_within)
    return table.get(metric, table.get("*", ()))
