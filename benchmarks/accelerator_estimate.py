"""An ESTIMATE of train images/s on accelerators we do not have, from XLA's cost analysis of the
compiled train step (the `step_flops` and `step_bytes_accessed` every eval.json records).

  python -m benchmarks.accelerator_estimate --eval_json=runs/unet/eval.json
  python -m benchmarks.accelerator_estimate --model=unet --size=default
  python -m benchmarks.accelerator_estimate --model=cvae --dataset=cifar10 --set=model.dtype=bfloat16

With `--model`, the step is compiled here on a synthetic batch exactly as the loop compiles it
(benchmarks/jax_bench.py `prepare`), without data, a judge or training.

The roofline: a step cannot take less than FLOPs / peak FLOP/s (compute-bound) nor less than
bytes / memory bandwidth (bandwidth-bound); images/s <= batch / max(those two). The estimate
assumes the step reaches `--utilisation` (default 40%) of peak FLOP/s unless the memory traffic
at full bandwidth is slower: min(utilisation x FLOP-bound, bandwidth-bound). Why an estimate only: the counts are those of the
program XLA compiled for THIS backend (its fusions decide the bytes; on CPU bfloat16 ops are
partly computed in float32, so a bfloat16 step's bytes here are not a TPU's), the peaks are
datasheet numbers, and small convolutions rarely reach them. Use it to compare models and
sizes, or to see whether a step is compute- or bandwidth-bound, not as a measured speed.
"""

from __future__ import annotations

import dataclasses

from absl import app
from absl import flags

from shared import files


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  peak_flops: float        # dense bf16 FLOP/s, datasheet
  bandwidth: float         # memory bytes/s, datasheet


CHIPS = (Chip("TPU v5e (1 chip)", 197e12, 819e9), Chip("H100 SXM", 989e12, 3.35e12))


def _define_flags():
  """Flags are defined only when run as a script, so tests can import `estimate` next to the
  other benchmark modules (which define flags of the same names)."""
  return dict(
      eval_json=flags.DEFINE_list("eval_json", [], "eval.json files of finished runs"),
      model=flags.DEFINE_enum("model", None, ["unet", "cvae", "classifier"],
                              "compile this model's train step here instead"),
      variant=flags.DEFINE_string("variant", "strconv_ups_dice", "UNet variant"),
      size=flags.DEFINE_enum("size", "default", ["cpu", "default"], "UNet size"),
      dataset=flags.DEFINE_enum("dataset", "cifar10", ["mnist", "cifar10"],
                                "CVAE / judge dataset"),
      set=flags.DEFINE_list("set", [], "config overrides FIELD=VALUE, as benchmarks/run.py --set"),
      utilisation=flags.DEFINE_float("utilisation", 0.4, "share of the roofline bound assumed"))


def estimate(flops: float, bytes_accessed: float, batch_size: int, chip: Chip,
             utilisation: float) -> dict[str, float | str]:
  """images/s of one step of `flops` and `bytes_accessed` over `batch_size` images: the
  compute and bandwidth bounds, the roofline (the smaller), and the estimate
  min(utilisation x compute bound, bandwidth bound), with what limits it."""
  flop_bound = batch_size * chip.peak_flops / flops
  bandwidth_bound = batch_size * chip.bandwidth / bytes_accessed
  at_utilisation = utilisation * flop_bound
  return {"flop_bound_img_s": flop_bound, "bandwidth_bound_img_s": bandwidth_bound,
          "roofline_img_s": min(flop_bound, bandwidth_bound),
          "estimate_img_s": min(at_utilisation, bandwidth_bound),
          "bound": "compute" if at_utilisation <= bandwidth_bound else "bandwidth"}


def _from_eval_json(path: str) -> dict:
  result = files.read_json(path)
  missing = [k for k in ("step_flops", "step_bytes_accessed") if result.get(k) is None]
  if missing:
    raise SystemExit(f"{path}: no {', '.join(missing)} (a run from before the loop recorded "
                     f"them, or a backend without cost analysis)")
  return {"name": path, "batch_size": result["config"]["train"]["batch_size"],
          "step_flops": result["step_flops"], "step_bytes_accessed": result["step_bytes_accessed"],
          "step_peak_memory_bytes": result.get("step_peak_memory_bytes"),
          "dtype": result["config"]["model"].get("dtype", "float32")}


def _from_model(flag) -> dict:
  from shared.process import xla_flags  # pylint: disable=g-import-not-at-top
  xla_flags.apply_defaults()    # the step launch.py compiles (before JAX's CPU backend starts)
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from benchmarks import jax_bench  # pylint: disable=g-import-not-at-top
  from shared import profiling  # pylint: disable=g-import-not-at-top
  model, overrides = flag["model"].value, flag["set"].value
  spec = common.step_spec(model, flag["variant"].value, flag["size"].value,
                          flag["dataset"].value, common.parse_overrides(overrides))
  config, _, _, state, batch, step_fn = jax_bench.prepare(spec)
  cost = profiling.step_cost(step_fn.lower(state, batch).compile())
  name = " ".join([model, *((flag["variant"].value, flag["size"].value) if model == "unet"
                             else (flag["dataset"].value,)), *overrides])
  return {"name": name, "batch_size": config.train.batch_size, **cost,
          "dtype": config.model.get("dtype", "float32")}


def report(step: dict, utilisation: float) -> str:
  lines = [f"{step['name']} (model.dtype={step['dtype']}, batch {step['batch_size']}; ESTIMATE = "
           f"min({utilisation:.0%} of the FLOP bound, the bandwidth bound)): "
           f"{step['step_flops'] / 1e9:.3g} GFLOP and {step['step_bytes_accessed'] / 1e9:.3g} GB "
           f"accessed per step ({step['step_flops'] / step['step_bytes_accessed']:.0f} FLOP/byte)"
           + (f", peak memory {step['step_peak_memory_bytes'] / 2**20:.0f} MiB"
              if step.get("step_peak_memory_bytes") else ""),
           f"| chip | FLOP-bound img/s | at {utilisation:.0%} of peak | bandwidth-bound img/s | "
           f"ESTIMATE img/s | limited by |", "|---|---:|---:|---:|---:|---|"]
  for chip in CHIPS:
    e = estimate(step["step_flops"], step["step_bytes_accessed"], step["batch_size"], chip,
                 utilisation)
    lines.append(f"| {chip.name} | {e['flop_bound_img_s']:,.0f} | "
                 f"{utilisation * e['flop_bound_img_s']:,.0f} | {e['bandwidth_bound_img_s']:,.0f} | "
                 f"{e['estimate_img_s']:,.0f} | {e['bound']} |")
  return "\n".join(lines)


def main(argv, flag):
  del argv
  steps = [_from_eval_json(p) for p in flag["eval_json"].value]
  if flag["model"].value:
    steps.append(_from_model(flag))
  if not steps:
    raise app.UsageError("give --eval_json=PATH[,PATH] and/or --model")
  print("\n\n".join(report(s, flag["utilisation"].value) for s in steps))


if __name__ == "__main__":
  defined_flags = _define_flags()
  app.run(lambda argv: main(argv, defined_flags))
