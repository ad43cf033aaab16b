"""Writes metrics to `workdir/metrics.jsonl` (one JSON object per line) and to TensorBoard."""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

import jax


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
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for k, v in metrics.items():
      self._tb.add_scalar(f"{kind}/{k}", float(v), int(step))
    self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_metrics(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
