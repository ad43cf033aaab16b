"""The report's two figures: bars with error bars, and overlaid eval learning curves.

Both are a grid of panels: a column per headline metric, a row per value of the task's
`plot_by` factors (e.g. one row per CVAE dataset, whose nats are on different scales). Kept
apart from `report.py` so the table code stays free of matplotlib (slow to import).
"""

from __future__ import annotations

import os
from typing import Sequence, TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from shared import metric_writer  # pylint: disable=g-import-not-at-top,wrong-import-position
from shared import report_stats  # pylint: disable=g-import-not-at-top,wrong-import-position

if TYPE_CHECKING:
  from shared.report import Row, TaskSpec


def _headline(rows: Sequence["Row"], spec: "TaskSpec") -> list[str]:
  return [m for m in spec.headline if any(r.eval.get(m) is not None for row in rows
                                         for r in row.runs)]


def panel_groups(rows: Sequence["Row"], spec: "TaskSpec") -> list[tuple[str, list[int]]]:
  """(title suffix, row indices) per value of `spec.plot_by`; one group of all rows if none."""
  if not spec.plot_by:
    return [("", list(range(len(rows))))]
  groups: dict[str, list[int]] = {}
  for i, row in enumerate(rows):
    key = ", ".join(f"{c}={row.factors.get(c)}" for c in spec.plot_by)
    groups.setdefault(key, []).append(i)
  return list(groups.items())


def _color(i: int, n: int):
  """Row i's colour, the same in both figures; 20 distinct ones when there are > 10 rows."""
  return f"C{i % 10}" if n <= 10 else plt.get_cmap("tab20")(i % 20)


def _grid(n_rows: int, n_cols: int, width: float, height: float):
  fig, axes = plt.subplots(max(n_rows, 1), max(n_cols, 1),
                           figsize=(max(width * max(n_cols, 1), 5), height * max(n_rows, 1)),
                           squeeze=False)
  return fig, axes


def bar_chart(rows: Sequence["Row"], spec: "TaskSpec", path: str) -> None:
  """A bar per row (mean), error bar = sample std over seeds; none drawn when n=1."""
  metrics, groups = _headline(rows, spec), panel_groups(rows, spec)
  widest = max(len(idx) for _, idx in groups) if rows else 1
  fig, axes = _grid(len(groups), len(metrics), max(3.0, 0.55 * widest + 1.5), 4.5)
  for g, (group, idx) in enumerate(groups):
    x = np.arange(len(idx))
    for ax, m in zip(axes[g], metrics):
      stats = [report_stats.run_stat(rows[i].runs, m) for i in idx]
      means = [np.nan if s.mean is None else s.mean for s in stats]
      errs = [0.0 if s.std is None else s.std for s in stats]
      ax.bar(x, means, yerr=errs, capsize=4, color=[_color(i, len(rows)) for i in idx])
      for xi, s in zip(x, stats):
        if s.mean is not None:
          ax.annotate(f"n={s.n}", (xi, 0), xytext=(0, 2), textcoords="offset points",
                      ha="center", va="bottom", fontsize=7, color="white")
      better = "lower is better" if m in spec.lower_is_better else "higher is better"
      ax.set_title(f"{m} ({better})" + (f"\n{group}" if group else ""), fontsize=10)
      ax.set_xticks(x)
      ax.set_xticklabels([rows[i].label for i in idx], rotation=40, ha="right", fontsize=8)
      ax.grid(axis="y", alpha=0.3)
  if not metrics:
    axes[0][0].text(0.5, 0.5, "no headline metric in these runs", ha="center", va="center")
  fig.suptitle(f"{spec.title}: mean ± sample std (ddof=1) over seeds; no error bar with n=1",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def read_eval_curve(workdir: str, metric: str) -> dict[int, float]:
  """step -> metric from the run's `eval` records (the last record wins for a repeated step).

  A line that does not parse (a run killed while writing) is skipped.
  """
  curve = {}
  for rec in metric_writer.read_metrics(os.path.join(workdir, "metrics.jsonl")):
    if rec["kind"] == "eval" and isinstance(rec.get(metric), (int, float)):
      curve[rec["step"]] = float(rec[metric])
  return curve


def mean_curve(curves: Sequence[dict[int, float]]) -> tuple[list[int], np.ndarray, np.ndarray]:
  """Mean and sample std (0 with one run) at the steps every non-empty curve has."""
  curves = [c for c in curves if c]
  if not curves:
    return [], np.zeros(0), np.zeros(0)
  steps = sorted(set.intersection(*(set(c) for c in curves)))
  values = np.array([[c[s] for s in steps] for c in curves])
  std = values.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(steps))
  return steps, values.mean(axis=0), std


def learning_curves(rows: Sequence["Row"], spec: "TaskSpec", path: str) -> None:
  """A line per row, mean over its seeds at the steps all of them logged, band = ± std."""
  metrics, groups = _headline(rows, spec), panel_groups(rows, spec)
  fig, axes = _grid(len(groups), len(metrics), 5.0, 4.0)
  for g, (group, idx) in enumerate(groups):
    for ax, m in zip(axes[g], metrics):
      drawn = False
      for i in idx:
        row = rows[i]
        steps, mean, std = mean_curve([read_eval_curve(r.workdir, m) for r in row.runs])
        if not steps:
          continue
        drawn = True
        ax.plot(steps, mean, marker="o", markersize=3, color=_color(i, len(rows)),
                label=f"{row.label} (n={len(row.runs)})")
        if np.any(std > 0):
          ax.fill_between(steps, mean - std, mean + std, color=_color(i, len(rows)), alpha=0.15)
      if drawn:
        ax.legend(fontsize=7)
      else:
        ax.text(0.5, 0.5, f"no eval records of {m}", ha="center", va="center",
                transform=ax.transAxes)
      ax.set_title(m + (f"  ({group})" if group else ""), fontsize=10)
      ax.set_xlabel("step")
      ax.grid(alpha=0.3)
  fig.suptitle(f"{spec.title}: test metrics during training, mean over seeds (band: ± std)",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
