"""The report's two figures: bars with error bars, and overlaid eval learning curves.

Kept apart from `report.py` so the table code stays free of matplotlib (slow to import).
"""

from __future__ import annotations

import json
import os
from typing import Sequence, TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from shared import report_stats  # pylint: disable=g-import-not-at-top,wrong-import-position

if TYPE_CHECKING:
  from shared.report import Row, TaskSpec


def _panels(n: int, width_per: float, height: float):
  fig, axes = plt.subplots(1, max(n, 1), figsize=(max(width_per * max(n, 1), 5), height),
                           squeeze=False)
  return fig, list(axes[0])


def _headline(rows: Sequence["Row"], spec: "TaskSpec") -> list[str]:
  return [m for m in spec.headline if any(r.eval.get(m) is not None for row in rows
                                         for r in row.runs)]


def bar_chart(rows: Sequence["Row"], spec: "TaskSpec", path: str) -> None:
  """One panel per headline metric: a bar per row (mean), error bar = sample std over seeds."""
  metrics = _headline(rows, spec)
  fig, axes = _panels(len(metrics), max(3.0, 0.55 * len(rows) + 1.5), 4.5)
  x = np.arange(len(rows))
  for ax, m in zip(axes, metrics):
    stats = [report_stats.run_stat(row.runs, m) for row in rows]
    means = [np.nan if s.mean is None else s.mean for s in stats]
    errs = [0.0 if s.std is None else s.std for s in stats]
    ax.bar(x, means, yerr=errs, capsize=4, color=[f"C{i % 10}" for i in range(len(rows))])
    for xi, s in zip(x, stats):
      if s.mean is not None:
        ax.annotate(f"n={s.n}", (xi, 0), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=7, color="white")
    arrow = "lower is better" if m in spec.lower_is_better else "higher is better"
    ax.set_title(f"{m} ({arrow})", fontsize=10)
    ax.set_xticks(x)
    ax.set_xticklabels([row.label for row in rows], rotation=40, ha="right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
  if not metrics:
    axes[0].text(0.5, 0.5, "no headline metric in these runs", ha="center", va="center")
  fig.suptitle(f"{spec.title}: mean ± sample std (ddof=1) over seeds; no error bar with n=1",
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def read_eval_curve(workdir: str, metric: str) -> dict[int, float]:
  """step -> metric from the run's `eval` records (the last record wins for a repeated step).

  A line that does not parse (a run killed while writing) is skipped.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  curve = {}
  if not os.path.exists(path):
    return curve
  with open(path) as f:
    for line in f:
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        continue
      if rec.get("kind") == "eval" and rec.get(metric) is not None:
        curve[int(rec["step"])] = float(rec[metric])
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
  """One panel per headline metric; a line per row, mean over its seeds, band = ± std."""
  metrics = _headline(rows, spec)
  legend_rows = -(-len(rows) // 4)
  fig, axes = _panels(len(metrics), 5.0, 4.0 + 0.25 * legend_rows)
  drawn = False
  for ax, m in zip(axes, metrics):
    panel_drawn = False
    for i, row in enumerate(rows):
      steps, mean, std = mean_curve([read_eval_curve(r.workdir, m) for r in row.runs])
      if not steps:
        continue
      drawn = panel_drawn = True
      ax.plot(steps, mean, marker="o", markersize=3, color=f"C{i % 10}",
              label=f"{row.label} (n={len(row.runs)})")
      if np.any(std > 0):
        ax.fill_between(steps, mean - std, mean + std, color=f"C{i % 10}", alpha=0.15)
    if not panel_drawn:
      ax.text(0.5, 0.5, f"no eval records of {m}", ha="center", va="center",
              transform=ax.transAxes)
    ax.set_title(m, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  if drawn:
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(len(labels), 1)), fontsize=8)
  fig.suptitle(f"{spec.title}: test metrics during training, mean over seeds (band: ± std)",
               fontsize=10)
  fig.tight_layout(rect=(0, 0.25 * legend_rows / (4.0 + 0.25 * legend_rows) + 0.02, 1, 1))
  fig.savefig(path, dpi=100)
  plt.close(fig)
