"""Writes metrics to `workdir/metrics.jsonl` (one JSON object per line) and to TensorBoard."""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

from absl import logging
import jax

from shared import errors


class MetricWriter:
  """Only process 0 writes, so a multi-host run produces one file, not one per host."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if self._active:
      os.makedirs(workdir, exist_ok=True)
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, kind: str, step: int, metrics: Mapping[str, float]) -> None:
    if not self._active:
      return
    record = {"kind": kind, "step": int(step), "time": time.time(),
              **{k: float(v) for k, v in metrics.items()}}
    try:
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")
      for k, v in metrics.items():
        self._tb.add_scalar(f"{kind}/{k}", float(v), int(step))
      self._tb.flush()
    except OSError as e:
      raise _write_error(self.path, e) from e

  def close(self) -> None:
    tb, self._tb = self._tb, None
    if tb is not None:
      try:
        tb.close()
      except OSError as e:
        raise _write_error(os.path.join(os.path.dirname(self.path), "tensorboard"), e) from e


def _write_error(path: str, e: OSError) -> errors.WorkdirError:
  return errors.WorkdirError(f"could not write metrics to {path}: {e.strerror or e} (is the "
                             f"disk full or read-only?)")


def read_metrics(path: str) -> list[dict]:
  """The records of a metrics.jsonl. A line that is not a JSON record with a `kind` and a
  numeric `step` (a run killed mid-write, a hand edit) is skipped with a warning naming it."""
  if not os.path.exists(path):
    return []
  records, bad = [], []
  with open(path, errors="replace") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
        if isinstance(rec, dict) and "kind" in rec and isinstance(rec.get("step"), int):
          records.append(rec)
          continue
      except ValueError:
        pass
      bad.append(number)
  if bad:
    logging.warning("%s: skipped %d line(s) that are not metric records (line %s)", path,
                    len(bad), ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else ""))
  return records
