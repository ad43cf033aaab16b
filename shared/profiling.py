"""What the train loop reports about the cost of its step: XLA's own estimate of the compiled
step (`step_cost`) and, on request, a `jax.profiler` trace of a few steps (`StepTrace`).

Why: images/s on this machine says little about a TPU or a GPU. The compiled step's FLOPs and
bytes accessed, written into every eval.json, turn into a roofline estimate for any chip
(docs/precision.md), and its peak memory says whether a batch fits before a run is started
there. The trace shows where a step's time goes, op by op, in TensorBoard's profiler or Perfetto.
"""

from __future__ import annotations

import os

from absl import logging
import jax

# eval.json keys written from `step_cost`.
COST_KEYS = ("step_flops", "step_bytes_accessed", "step_peak_memory_bytes")


def _peak_bytes(memory) -> int | None:
  peak = getattr(memory, "peak_memory_in_bytes", None)
  if peak:
    return int(peak)
  # Backends that report no peak: everything live at once is an upper bound.
  parts = [getattr(memory, f, None) for f in ("argument_size_in_bytes", "output_size_in_bytes",
                                              "temp_size_in_bytes", "alias_size_in_bytes")]
  if any(p is None for p in parts):
    return None
  argument, output, temp, alias = parts
  return int(argument + output + temp - alias)


def step_cost(compiled) -> dict[str, float | int | None]:
  """XLA's cost analysis of a compiled step: FLOPs and bytes accessed per call and the peak
  memory estimate (arguments, outputs and temporaries), per device of the partitioned program.
  None where the backend does not say. These are the compiler's static counts for the
  program as this backend compiled it (its fusions, its dtypes), not measurements."""
  out = dict.fromkeys(COST_KEYS)
  try:
    cost = compiled.cost_analysis()
  except Exception as e:  # pylint: disable=broad-except  (not every backend implements it)
    logging.warning("no XLA cost analysis for the train step: %s", e)
    cost = None
  if isinstance(cost, (list, tuple)):      # older jax: one dict per partition
    cost = cost[0] if cost else None
  if cost:
    if cost.get("flops") is not None:
      out["step_flops"] = float(cost["flops"])
    if cost.get("bytes accessed") is not None:
      out["step_bytes_accessed"] = float(cost["bytes accessed"])
  try:
    memory = compiled.memory_analysis()
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("no XLA memory analysis for the train step: %s", e)
    memory = None
  if memory is not None:
    out["step_peak_memory_bytes"] = _peak_bytes(memory)
  return out


def describe_cost(cost: dict) -> str:
  """`step_cost`'s numbers as one log line."""
  fmt = lambda v, scale, unit: "?" if v is None else f"{v / scale:.3g} {unit}"
  return (f"{fmt(cost['step_flops'], 1e9, 'GFLOP')}, "
          f"{fmt(cost['step_bytes_accessed'], 1e9, 'GB')} accessed, "
          f"peak memory {fmt(cost['step_peak_memory_bytes'], 2**20, 'MiB')} per step "
          f"(XLA's estimate)")


_active: StepTrace | None = None   # the trace this module started and has not stopped


class StepTrace:
  """A `jax.profiler` trace of `num_steps` train steps, the first one after the first step
  this process runs (which compiles, warms caches and would dominate the trace).

  The loop calls `annotate(step)` around each step (a `StepTraceAnnotation`, so TensorBoard's
  profiler shows per-step times) and `step_done()` after it; the trace starts before the
  second step, and when `step_done()` says the last traced step was dispatched, the loop waits
  for its outputs and calls `stop()` (which writes the trace: seconds, kept out of the train
  time). `num_steps=0` does nothing.
  """

  def __init__(self, directory: str, num_steps: int):
    self.directory = directory
    self.num_steps = num_steps
    self._steps_seen = 0
    self._running = False

  @property
  def running(self) -> bool:
    return self._running

  def annotate(self, step: int):
    """Context manager for one step: starts the trace before the first traced step."""
    global _active
    if self.num_steps and self._steps_seen == 1 and not self._running:
      os.makedirs(self.directory, exist_ok=True)
      jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
      self._running, _active = True, self
      logging.info("profiling %d train steps into %s", self.num_steps, self.directory)
    return jax.profiler.StepTraceAnnotation("train", step_num=step)

  def step_done(self) -> bool:
    """Counts a dispatched step; True when it was the last traced one: stop the trace now."""
    self._steps_seen += 1
    return self._running and self._steps_seen == 1 + self.num_steps

  def stop(self) -> None:
    global _active
    if not self._running:
      return
    self._running, _active = False, None
    jax.profiler.stop_trace()
    logging.info("wrote a profile of %d train steps to %s (TensorBoard: tensorboard --logdir=%s, "
                 "Profile tab; Perfetto: open the perfetto_trace.json.gz in ui.perfetto.dev)",
                 self.num_steps, self.directory, self.directory)


def stop_active_trace() -> None:
  """Stops a trace a `StepTrace` left running (the loop ended or failed inside the traced
  steps), so the steps traced so far are written and the next trace can start."""
  if _active is not None:
    _active.stop()
