"""Helpers shared by the benchmark workers and the driver: timing, peak RSS, subprocesses.

Every measurement runs in its own subprocess (`python -m benchmarks.worker`) so that peak RSS
belongs to one model in one framework, XLA flags such as the simulated device count can differ
per run, and a crash in one measurement does not lose the rest of the table.
"""

from __future__ import annotations

import ast
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_PREFIX = "BENCH_RESULT "
# Config overrides that shrink each model so one process compiles and runs it in seconds
# (run.py --quick, tests).
QUICK_UNET = {"data.image_size": 32, "model.base_features": 4, "model.depth": 2,
              "train.batch_size": 4, "eval.batch_size": 4}
QUICK_CVAE = {"train.batch_size": 16, "eval.batch_size": 16}


def peak_rss_mb() -> float:
  """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_time(fn, steps: int) -> tuple[float, list[float]]:
  """Median wall time of `fn()` over `steps` calls; `fn` must block until its work is done."""
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), times


def emit(result: dict) -> None:
  """Worker side: the one line the driver parses (everything else on stdout is ignored)."""
  result = {**result, "peak_rss_mb": round(peak_rss_mb(), 1)}
  print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_worker(spec: dict, env_extra: dict | None = None, timeout: float = 3600) -> dict:
  """Runs `benchmarks.worker` on `spec` in a fresh interpreter; returns its result or an
  `error`. The worker runs as a module from the repo root, so it imports this checkout (the
  one the driver runs from) whether or not the project is installed."""
  env = dict(os.environ)
  env.update(env_extra or {})
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  cmd = [sys.executable, "-m", "benchmarks.worker", "--spec=" + json.dumps(spec)]
  try:
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          errors="replace", timeout=timeout, check=False)
  except subprocess.TimeoutExpired:
    return {**spec, "error": f"timed out after {timeout:.0f}s"}
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith(RESULT_PREFIX):
      return {**spec, **json.loads(line[len(RESULT_PREFIX):])}
  tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
  return {**spec, "error": f"exit {proc.returncode}: {tail[:300]}"}


def combine_repeats(runs: list[dict]) -> dict:
  """One result from several processes' results for the same spec (`run.py --repeats`).

  Why: on this machine the same step measured in two fresh processes differed by up to 36%
  (docs/performance.md), more than most changes being measured. Running every measurement in
  several processes, interleaved in time with the other frameworks' and taking the median of
  the per-process medians, keeps one slow process or one noisy minute from deciding a ratio.
  Times (train step, eval step, compile, first call) are medians over the processes that
  succeeded, images/s and FLOP/s follow from them, peak RSS is the largest; `step_s_runs`
  keeps every process's median and `spread` is (max - min) / median of them. If every process
  failed, the result is the last one's error.
  """
  ok = [r for r in runs if "error" not in r]
  if not ok:
    return runs[-1]
  out = dict(ok[0])
  for key in ("step_s", "eval_step_s", "compile_s", "first_call_s", "eval_compile_s"):
    if all(r.get(key) is not None for r in ok):
      out[key] = statistics.median(r[key] for r in ok)
  out["images_per_s"] = out["batch_size"] / out["step_s"]
  if out.get("eval_step_s"):
    out["eval_images_per_s"] = out["eval_batch_size"] / out["eval_step_s"]
  if out.get("flops_per_step"):
    out["flops_per_s"] = out["flops_per_step"] / out["step_s"]
  out["peak_rss_mb"] = max(r.get("peak_rss_mb", 0.0) for r in ok)
  runs_s = [r["step_s"] for r in ok]
  out.update(step_s_runs=runs_s, repeats=len(runs), failed_repeats=len(runs) - len(ok),
             spread=(max(runs_s) - min(runs_s)) / out["step_s"])
  out.pop("step_s_all", None)
  return out


def step_spec(model: str, variant: str, size: str, dataset: str, overrides: dict) -> dict:
  """The measurement spec of one model's train step (jax_bench.prepare): a UNet variant and
  size, or the CVAE or its judge classifier on a dataset, with config overrides."""
  if model == "unet":
    return {"model": "unet", "variant": variant, "size": size, "overrides": overrides}
  return {"model": model, "dataset": dataset, "overrides": overrides}


def parse_overrides(items) -> dict:
  """`["model.conv_impl=xla", "train.batch_size=8"]` -> {field: value}; values are parsed as
  Python literals, else kept as strings."""
  out = {}
  for item in items:
    field, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--set={item!r}: expected FIELD=VALUE")
    try:
      out[field] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[field] = value
  return out
