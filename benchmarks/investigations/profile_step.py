"""Where our train step spends its time: a `jax.profiler` trace of a few compiled steps, summed
by HLO op and mapped back to the model's layers.

  python -m benchmarks.investigations.profile_step --model=unet --variant=strconv_ups_dice \
      --size=cpu
  python -m benchmarks.investigations.profile_step --model=cvae --dataset=cifar10 --top=40
  python -m benchmarks.investigations.profile_step ... --set=model.conv_impl=xla  # another config

Why: the benchmark table says how fast a step is, not why. This prints the ops that take the
most time per step (summed over the trace's complete events, divided by the steps traced),
each with the `op_name` metadata XLA keeps (e.g. `jvp(UNet)/up0/conv1/conv_general_dilated`),
so a slow layer or an expensive gradient can be found before anything is changed. The trace
itself stays in `--trace_dir` for Perfetto (ui.perfetto.dev) when you want the timeline.

Caveat: XLA:CPU runs Eigen convolutions on their own thread pool; their events can be shorter
than the wall time they cost. Time single layers with `conv_impls.py` to be sure.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile

from absl import app
from absl import flags

from benchmarks import common
from shared.process import allocator

_MODEL = flags.DEFINE_enum("model", "unet", ["unet", "cvae"], "model family")
_VARIANT = flags.DEFINE_string("variant", "strconv_ups_dice", "UNet variant")
_SIZE = flags.DEFINE_enum("size", "default", ["cpu", "default"], "UNet size")
_DATASET = flags.DEFINE_enum("dataset", "mnist", ["mnist", "cifar10"], "CVAE dataset")
_STEPS = flags.DEFINE_integer("steps", 3, "steps traced (after a warm-up step)")
_TOP = flags.DEFINE_integer("top", 25, "ops printed")
_TRACE_DIR = flags.DEFINE_string("trace_dir", None, "where the trace goes (default: a temp dir)")
_GROUP = flags.DEFINE_integer("group_depth", 3, "second table: op time summed by the first N "
                                 "components of op_name after jit(...)/ (0: no second table)")
_ALLOCATOR = flags.DEFINE_enum("allocator", "auto", allocator.MODES,
                               "as launch.py --allocator (shared/process/allocator.py)")
_SET = flags.DEFINE_list("set", [], "config overrides FIELD=VALUE, as benchmarks/run.py --set")


def op_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the `op_name` XLA recorded for it (the JAX source of the op)."""
  names = {}
  for line in hlo_text.splitlines():
    match = re.match(r"\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*metadata=\{[^}]*op_name=\"([^\"]+)\"", line)
    if match:
      names[match.group(1)] = match.group(2)
  return names


def summed_events(trace_dir: str) -> collections.Counter:
  """Total duration (us) of the complete events in the newest perfetto trace, by name."""
  paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
                 + glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"),
                             recursive=True), key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f"no trace (*.trace.json.gz) written under {trace_dir}")
  with gzip.open(paths[-1], "rt") as trace_file:
    trace = json.load(trace_file)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  totals = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and "dur" in event:     # complete events: name and duration
      totals[event["name"]] += float(event["dur"])
  return totals


def main(argv):
  del argv
  allocator.maybe_reexec(_ALLOCATOR.value)   # profile what launch.py runs
  from shared.process import xla_flags  # pylint: disable=g-import-not-at-top
  xla_flags.apply_defaults()
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_bench  # pylint: disable=g-import-not-at-top

  spec = common.step_spec(_MODEL.value, _VARIANT.value, _SIZE.value, _DATASET.value,
                          common.parse_overrides(_SET.value))
  _, _, _, state, batch, step_fn = jax_bench.prepare(spec)
  compiled = step_fn.lower(state, batch).compile()
  names = op_names(compiled.as_text())
  state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))

  trace_dir = _TRACE_DIR.value or tempfile.mkdtemp(prefix="profile_step_")
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(_STEPS.value):
      state, metrics = compiled(state, batch)
      jax.block_until_ready((state, metrics))
  totals = summed_events(trace_dir)
  ops = {n: us for n, us in totals.items() if n in names}
  steps = _STEPS.value
  total_ms = sum(ops.values()) / 1e3 / steps
  print(f"{spec}: {total_ms:.1f} ms of HLO op events per step ({steps} steps traced); "
        f"trace in {trace_dir}")
  print(f"{'ms/step':>8s} {'share':>6s}  {'HLO op':36s} op_name")
  for name, us in sorted(ops.items(), key=lambda kv: -kv[1])[:_TOP.value]:
    ms = us / 1e3 / steps
    print(f"{ms:8.2f} {ms / max(total_ms, 1e-9):6.1%}  {name[:36]:36s} {names[name][:110]}")
  if _GROUP.value:
    groups = collections.Counter()
    for name, us in ops.items():
      parts = names[name].split("/")[1:]          # drop jit(_train_step)
      groups["/".join(parts[:_GROUP.value]) or "(top level)"] += us
    print("\nby op_name prefix (forward = jvp(...), backward = transpose(jvp(...))):")
    for group, us in groups.most_common(_TOP.value):
      ms = us / 1e3 / steps
      print(f"{ms:8.2f} {ms / max(total_ms, 1e-9):6.1%}  {group}")


if __name__ == "__main__":
  app.run(main)
