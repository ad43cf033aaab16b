"""Mean and sample standard deviation over seeds, the one statistic every report figure uses.

Its own module so the table (`report.py`) and the figures (`report_plots.py`) share it without
importing each other.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable


@dataclasses.dataclass(frozen=True)
class Stat:
  """Mean and sample standard deviation (ddof=1) of n values; `std` is None when n < 2."""
  mean: float | None
  std: float | None
  n: int


def mean_std(values: Iterable[Any]) -> Stat:
  """Ignores missing (None / NaN) values; n counts the values used.

  The sample std (ddof=1) estimates seed-to-seed spread; with one seed there is none to
  estimate, so it is None rather than a misleading 0.
  """
  vals = [float(v) for v in values
          if v is not None and not isinstance(v, bool) and not math.isnan(float(v))]
  n = len(vals)
  if n == 0:
    return Stat(None, None, 0)
  mean = sum(vals) / n
  if n < 2:
    return Stat(mean, None, n)
  return Stat(mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)), n)


def run_stat(runs: Iterable[Any], key: str) -> Stat:
  """`mean_std` of `run.eval[key]` over runs (objects with an `eval` dict)."""
  return mean_std(r.eval.get(key) for r in runs)
