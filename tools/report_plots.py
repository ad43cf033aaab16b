"""The report's two figures: bars with error bars, and overlaid eval learning curves.

Both are a row of panels, one per headline metric, for one table (each CVAE dataset has its
own: `ReportSpec.table_per`, its nats on another scale). They draw a `report_table.TaskTable`
(its rows' means, stds and workdirs) and import nothing from `report.py`, which imports this file only when it draws (matplotlib is slow to import).
"""

from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pandas as pd  # pylint: disable=g-import-not-at-top,wrong-import-position

# pylint: disable=g-import-not-at-top,wrong-import-position
from shared import metric_writer
from tools.report_table import TaskTable
# pylint: enable=g-import-not-at-top,wrong-import-position


def _color(i: int, n: int):
  """Row i's colour, the same in both figures; 20 distinct ones when there are > 10 rows."""
  return f"C{i % 10}" if n <= 10 else plt.get_cmap("tab20")(i % 20)


def _panels(n: int, width: float, height: float):
  """A figure with a row of max(n, 1) panels, each `width` x `height` inches (5 wide at least)."""
  fig, axes = plt.subplots(1, max(n, 1), figsize=(max(width * max(n, 1), 5), height),
                           squeeze=False)
  return fig, axes[0]


def bar_chart(table: TaskTable, path: str) -> None:
  """A bar per row (mean), error bar = sample std over seeds; none drawn when n=1."""
  spec, rows = table.spec, table.rows
  metrics = [m for m in spec.headline if m in table.metrics]
  fig, axes = _panels(len(metrics), max(3.0, 0.55 * len(rows) + 1.5), 4.5)
  x = np.arange(len(rows))
  for ax, m in zip(axes, metrics):
    ax.bar(x, rows[f"{m}_mean"], yerr=rows[f"{m}_std"].fillna(0.0), capsize=4,
           color=[_color(i, len(rows)) for i in range(len(rows))])
    for xi, mean, n in zip(x, rows[f"{m}_mean"], rows[f"{m}_n"]):
      if not pd.isna(mean):
        ax.annotate(f"n={n}", (xi, 0), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=7, color="white")
    better = "lower is better" if m in spec.lower_is_better else "higher is better"
    ax.set_title(f"{m} ({better})", fontsize=10)
    ax.set_xticks(x)
    ax.set_xticklabels(rows["label"], rotation=40, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
  if not metrics:
    axes[0].text(0.5, 0.5, "no headline metric in these runs", ha="center", va="center")
  fig.suptitle(f"{table.title}: mean ± sample std (ddof=1) over seeds; no error bar with n=1",
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


def learning_curves(table: TaskTable, path: str) -> None:
  """A line per row, mean over its seeds at the steps all of them logged, band = ± std."""
  spec, rows = table.spec, table.rows
  metrics = [m for m in spec.headline if m in table.metrics]
  fig, axes = _panels(len(metrics), 5.0, 4.0)
  for ax, m in zip(axes, metrics):
    drawn = False
    for i, (_, row) in enumerate(rows.iterrows()):
      steps, mean, std = mean_curve([read_eval_curve(w, m) for w in row["workdirs"]])
      if not steps:
        continue
      drawn = True
      ax.plot(steps, mean, marker="o", markersize=3, color=_color(i, len(rows)),
              label=f"{row['label']} (n={row['n_seeds']})")
      if np.any(std > 0):
        ax.fill_between(steps, mean - std, mean + std, color=_color(i, len(rows)), alpha=0.15)
    if drawn:
      ax.legend(fontsize=7)
    else:
      ax.text(0.5, 0.5, f"no eval records of {m}", ha="center", va="center",
              transform=ax.transAxes)
    ax.set_title(m, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  fig.suptitle(f"{table.title}: test metrics during training, mean over seeds (band: ± std)",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
