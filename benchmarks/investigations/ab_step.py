"""Several forms of one train step, compiled in ONE process and timed alternately: the way to
see a 5% change on a machine whose step time moves 13-36% from one process to the next.

  python -m benchmarks.investigations.ab_step --variant=mp_tr_bce --size=cpu \
      --arm=base: \
      --arm=xla_convs:model.conv_impl=xla \
      --arm=no_ynn_reduce:--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT

Each `--arm=NAME:ITEMS` is one form of the step; ITEMS is a comma-separated list (may be empty)
of config overrides `FIELD=VALUE` (as run.py --set) and XLA compile options `--option=VALUE`
(passed to `compile(compiler_options=...)` for this arm alone, so unlike XLA_FLAGS they can
differ within one process; repeated-enum options take the enum's full names, e.g.
`LIBRARY_FUSION_TYPE_DOT`). The process's own XLA_FLAGS (with the project's defaults) apply to
every arm. Every arm runs `--steps` steps per round, arms in turn, for `--rounds` rounds, so
the machine's slow and fast minutes fall on all of them; the table gives each arm's median,
quartiles and its median relative to the first arm's.

Why in one process: compiling all arms first and interleaving them removes the variation
between processes (thread placement, allocator state, neighbours on the host) that the
one-process-per-measurement tables of run.py carry.
"""

from __future__ import annotations

import ast
import re
import time

from absl import app
from absl import flags

from benchmarks import common
from shared.process import allocator


def parse_arm(text: str) -> tuple[str, dict, dict]:
  """`"name:model.conv_impl=xla,--xla_cpu_foo=true"` -> (name, overrides, compile options).
  Values may be tuples: `"wide:model.features=(24,64,256,256)"`."""
  name, sep, items = text.partition(":")
  if not sep or not name:
    raise ValueError(f"--arm={text!r}: expected NAME:ITEMS (ITEMS may be empty)")
  overrides, options = [], {}
  # Commas inside brackets belong to a value: model.features=(24,48,192,192).
  for item in filter(None, re.split(r",(?![^()\[\]]*[)\]])", items)):
    if item.startswith("--"):
      key, eq, value = item[2:].partition("=")
      if not eq:
        raise ValueError(f"--arm={text!r}: compile option {item!r} needs =VALUE")
      options[key] = _option_value(value)
    else:
      overrides.append(item)
  try:
    return name, common.parse_overrides(overrides), options
  except ValueError as e:
    raise ValueError(f"--arm={text!r}: {e}") from e


def _option_value(value: str):
  """XLA compile options want typed values: true/false -> bool, numbers -> int/float."""
  if value.lower() in ("true", "false"):
    return value.lower() == "true"
  try:
    number = ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return value
  return number if isinstance(number, (int, float)) else value


def compare(base_spec: dict, arms: list[tuple[str, dict, dict]], steps: int,
            rounds: int) -> dict[str, list[float]]:
  """Step times (s) of every arm, compiled first and then timed round by round."""
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_bench  # pylint: disable=g-import-not-at-top
  built = {}
  for name, overrides, options in arms:
    spec = {**base_spec, "overrides": {**base_spec.get("overrides", {}), **overrides}}
    _, _, _, state, batch, step_fn = jax_bench.prepare(spec)
    compiled = step_fn.lower(state, batch).compile(compiler_options=options or None)
    state, metrics = compiled(state, batch)        # first call and one warm-up step
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    built[name] = [compiled, state, batch]
  times = {name: [] for name in built}
  for _ in range(rounds):
    for name, entry in built.items():
      compiled, state, batch = entry
      for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        times[name].append(time.perf_counter() - t0)
      entry[1] = state
  return times


def table(times: dict[str, list[float]]) -> str:
  import numpy as np  # pylint: disable=g-import-not-at-top
  first = None
  lines = [f"{'arm':24s} {'median_ms':>9s} {'p25_ms':>8s} {'p75_ms':>8s} {'vs_first':>8s}"]
  for name, step_times in times.items():
    median_ms = float(np.median(step_times)) * 1e3
    first = first or median_ms
    lines.append(f"{name[:24]:24s} {median_ms:9.1f} {np.percentile(step_times, 25) * 1e3:8.1f} "
                 f"{np.percentile(step_times, 75) * 1e3:8.1f} {median_ms / first:8.3f}")
  return "\n".join(lines)


def _define_flags():
  """Flags are defined only when run as a script, so that tests can import this module next
  to profile_step.py (which defines flags of the same names)."""
  return dict(
      model=flags.DEFINE_enum("model", "unet", ["unet", "cvae", "classifier"],
                              "model family (classifier: the CVAE's judge)"),
      variant=flags.DEFINE_string("variant", "strconv_ups_dice", "UNet variant"),
      size=flags.DEFINE_enum("size", "cpu", ["cpu", "default"], "UNet size"),
      dataset=flags.DEFINE_enum("dataset", "mnist", ["mnist", "cifar10"],
                                "CVAE / classifier dataset"),
      arm=flags.DEFINE_multi_string("arm", ["base:"], "NAME:ITEMS, ITEMS = comma-separated "
                                    "FIELD=VALUE config overrides and --xla_option=VALUE"),
      steps=flags.DEFINE_integer("steps", 5, "timed steps per arm per round"),
      rounds=flags.DEFINE_integer("rounds", 6, "rounds (every arm once per round)"),
      set=flags.DEFINE_list("set", [], "config overrides applied to every arm, FIELD=VALUE"),
      allocator=flags.DEFINE_enum("allocator", "auto", allocator.MODES,
                                  "as launch.py --allocator (shared/process/allocator.py)"))


def main(argv, flag):
  del argv
  allocator.maybe_reexec(flag["allocator"].value)   # time what launch.py runs
  from shared.process import xla_flags  # pylint: disable=g-import-not-at-top
  xla_flags.apply_defaults()
  try:
    arms = [parse_arm(a) for a in flag["arm"].value]
    shared_overrides = common.parse_overrides(flag["set"].value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  names = [a[0] for a in arms]
  if len(set(names)) != len(names):
    raise app.UsageError(f"--arm names must differ; got {names}")
  spec = common.step_spec(flag["model"].value, flag["variant"].value, flag["size"].value,
                          flag["dataset"].value, shared_overrides)
  steps, rounds = flag["steps"].value, flag["rounds"].value
  if steps < 1 or rounds < 1:
    raise app.UsageError(f"--steps={steps} --rounds={rounds}: both must be at least 1")
  times = compare(spec, arms, steps, rounds)
  print(f"{spec}: {rounds} rounds x {steps} steps per arm, in one process")
  print(table(times))


if __name__ == "__main__":
  defined_flags = _define_flags()
  app.run(lambda argv: main(argv, defined_flags))
