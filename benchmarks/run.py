"""Side-by-side benchmark of our train/eval steps against PyTorch on this machine.

  python -m benchmarks.run [--quick] [--only=unet,cvae,pipeline,scaling] [--steps=20]
                           [--repeats=N] [--torch_threads=N] [--out=bench.json]
                           [--set=FIELD=VALUE,...] [--allocator=auto] [--notorch_tcmalloc]

Prints one table per section; the last line is `unet_vs_pytorch=R`: our train images/s over
PyTorch eager's for strconv_ups_dice at the default size (R > 1: ours is faster). Each
measurement runs in its own subprocess (benchmarks/worker.py), so peak RSS is per model and
per framework. Our rows run under the allocator launch.py uses (`--allocator`, default auto:
tcmalloc when installed, shared/process/allocator.py); PyTorch eager under the system allocator, as
it runs by default, and once more under tcmalloc (`torch_tcmalloc` rows) so that the share of
our lead that is the allocator's shows. See benchmarks/README.md for the columns.

Run it from the repo root (its worker subprocesses run as `python -m benchmarks.worker` there),
in the environment `pip install -r requirements.txt -r requirements-bench.txt` made.
"""

from __future__ import annotations

import json
import math
import os
import sys

from absl import app
from absl import flags

from benchmarks import common
from benchmarks import report
from shared.process import allocator
from shared.process import xla_flags

SECTIONS = ("unet", "cvae", "pipeline", "scaling")
ABLATION = ("mp_tr_bce", "mp_tr_dice", "strconv_tr_bce", "strconv_ups_dice")
RATIO_VARIANT = "strconv_ups_dice"

_QUICK = flags.DEFINE_bool("quick", False, "tiny shapes and few steps: a smoke test, not a "
                           "measurement")
_ONLY = flags.DEFINE_list("only", list(SECTIONS), f"sections to run, from {SECTIONS}")
_STEPS = flags.DEFINE_integer("steps", 20, "timed train steps per measurement (after warm-up)")
_REPEATS = flags.DEFINE_integer("repeats", 1, "processes per train-step measurement, run in "
                                "rounds (every model and framework once per round); the table "
                                "shows the median of their medians and their spread")
_WARMUP = flags.DEFINE_integer("warmup", 2, "untimed steps after the first call")
_SCALING_STEPS = flags.DEFINE_integer("scaling_steps", 10, "timed steps per scaling point")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: default, "
                                      "one per core)")
_VARIANTS = flags.DEFINE_list("variants", list(ABLATION), "UNet variants to measure")
_SIZES = flags.DEFINE_list("sizes", ["cpu", "default"], "UNet sizes: cpu (the `cpu` modifier: "
                           "64 px, base 16) and/or default (128 px, base 32)")
_ALLOCATOR = flags.DEFINE_enum("allocator", "auto", allocator.MODES,
                               "allocator of our rows, as launch.py --allocator")
_TORCH_TCMALLOC = flags.DEFINE_bool("torch_tcmalloc", True, "also time PyTorch eager under "
                                    "tcmalloc (when installed)")
_OUT = flags.DEFINE_string("out", None, "also write every result as JSON here")
_SET = flags.DEFINE_list("set", [], "config overrides for every model of ours, FIELD=VALUE, "
                         "e.g. --set=model.conv_impl=xla (the PyTorch rows are unchanged)")


def _overrides(base: dict) -> dict:
  """`base` plus the --set overrides."""
  try:
    return {**base, **common.parse_overrides(_SET.value)}
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def _run(spec: dict, env: dict | None = None) -> dict:
  label = " ".join(str(spec.get(k)) for k in ("kind", "model", "variant", "dataset", "size")
                   if spec.get(k))
  print(f"  measuring {label} ...", file=sys.stderr, flush=True)
  mode = spec.get("allocator", _ALLOCATOR.value)
  return common.run_worker(spec, {**allocator.process_env(mode), **(env or {})})


def _step_specs(model_spec: dict, steps: int) -> list[dict]:
  base = {**model_spec, "steps": steps, "warmup": _WARMUP.value}
  torch = {**base, "kind": "torch_step", "torch_threads": _TORCH_THREADS.value,
           "allocator": "system"}
  specs = [{**base, "kind": "jax_step"}, torch, {**torch, "channels_last": True}]
  if _TORCH_TCMALLOC.value and allocator.find_tcmalloc():
    specs.append({**torch, "allocator": "tcmalloc"})
  return specs


def unet_specs(quick: bool) -> list[dict]:
  variants = [RATIO_VARIANT] if quick else _VARIANTS.value
  sizes = ["default"] if quick else _SIZES.value
  return [{"model": "unet", "variant": v, "size": s,
           "overrides": _overrides(common.QUICK_UNET if quick else {})}
          for v in variants for s in sizes]


def run_in_rounds(specs: list[dict], repeats: int) -> list[dict]:
  """Each spec measured in `repeats` processes, round by round (every spec once per round,
  so every framework sees the machine's slow and fast minutes alike), then combined into one
  result per spec (`common.combine_repeats`)."""
  runs = [[] for _ in specs]
  for r in range(repeats):
    if repeats > 1:
      print(f"  round {r + 1}/{repeats}", file=sys.stderr, flush=True)
    for i, spec in enumerate(specs):
      runs[i].append(_run(spec))
  return [rs[0] if repeats == 1 else common.combine_repeats(rs) for rs in runs]


def cvae_specs(quick: bool) -> list[dict]:
  datasets = ["mnist"] if quick else ["mnist", "cifar10"]
  overrides = _overrides(common.QUICK_CVAE if quick else {})
  return [{"model": "cvae", "dataset": dataset, "overrides": overrides}
          for dataset in datasets]


def pipeline_specs(quick: bool) -> list[dict]:
  limit = {"unet": 64, "cvae": 1024} if quick else {"unet": 0, "cvae": 0}
  specs = [{"model": "unet", "variant": RATIO_VARIANT, "size": s, "limit_train": limit["unet"]}
           for s in (["cpu"] if quick else ["cpu", "default"])]
  specs += [{"model": "cvae", "dataset": dataset, "limit_train": limit["cvae"]}
            for dataset in (["mnist"] if quick else ["mnist", "cifar10"])]
  return [{**s, "kind": "pipeline", "cached_epochs": 1 if quick else 3} for s in specs]


def scaling_specs(quick: bool) -> list[tuple[str, dict, dict]]:
  """(axis, spec, env): image size and batch at one device, then 1..8 simulated devices.

  The `cpu` model (base 16) keeps the 256 px and batch-64 points affordable on 2 cores.
  """
  sizes, batches, devices = ((32, 64), (4, 8), (1, 2)) if quick else (
      (64, 128, 256), (4, 8, 16, 32, 64), (1, 2, 4, 8))
  base = {"kind": "jax_step", "model": "unet", "variant": RATIO_VARIANT, "size": "cpu",
          "steps": 3 if quick else _SCALING_STEPS.value, "warmup": 1, "eval": False}
  small = _overrides({"model.base_features": 4, "model.depth": 2} if quick else {})
  out = [("image_size", {**base, "overrides": {**small, "data.image_size": s}}, {})
         for s in sizes]
  out += [("batch_size", {**base, "overrides": {**small, "data.image_size": sizes[0]},
                          "batch_size": b}, {}) for b in batches]
  flags_env = os.environ.get("XLA_FLAGS", "")
  out += [("devices", {**base, "overrides": {**small, "data.image_size": sizes[0]},
                       "batch_size": 8 if quick else 16},
           {"XLA_FLAGS": f"{flags_env} --xla_force_host_platform_device_count={n}".strip()})
          for n in devices]
  return out


def _default_data_dir() -> None:
  """Pipeline data: $TFDS_DATA_DIR, else the prepared copy beside the repo (../shared/tfds)."""
  beside = os.path.normpath(os.path.join(common.REPO_ROOT, "..", "shared", "tfds"))
  if not os.environ.get("TFDS_DATA_DIR") and os.path.isdir(beside):
    os.environ["TFDS_DATA_DIR"] = beside   # inherited by the worker subprocesses


def main(argv):
  del argv
  _default_data_dir()
  quick = _QUICK.value
  unknown = set(_ONLY.value) - set(SECTIONS)
  if unknown:
    raise app.UsageError(f"--only: unknown section(s) {sorted(unknown)}; allowed {SECTIONS}")
  if set(_SIZES.value) - {"cpu", "default"}:
    raise app.UsageError(f"--sizes={_SIZES.value}; allowed: cpu, default")
  if _REPEATS.value < 1:
    raise app.UsageError(f"--repeats={_REPEATS.value}; expected at least 1")
  steps = 3 if quick else _STEPS.value
  if not quick and steps < 20:
    print(f"note: --steps={steps} < 20: medians over fewer steps than the issue asks for")
  results: dict[str, list] = {}
  if quick:
    print("--quick: tiny shapes and 3 steps; a smoke test of the benchmark, not a measurement")
  our_flags = xla_flags.with_defaults(os.environ.get("XLA_FLAGS", ""))
  print(f"XLA_FLAGS of our rows (yours + shared/process/xla_flags.py defaults): {our_flags}")
  if _ALLOCATOR.value != "system" and not allocator.find_tcmalloc():
    print("note: tcmalloc is not installed; every row runs under the system allocator "
          "(apt-get install libtcmalloc-minimal4; shared/process/allocator.py)")

  if {"unet", "cvae"} & set(_ONLY.value):
    results["matmul"] = [_run({"kind": "matmul", "n": 512 if quick else 2048,
                               "steps": 3 if quick else 10})]
  for section, make in (("unet", unet_specs), ("cvae", cvae_specs)):
    if section in _ONLY.value:
      specs = [s for m in make(quick) for s in _step_specs(m, steps)]
      results[section] = run_in_rounds(specs, _REPEATS.value)
  if "pipeline" in _ONLY.value:
    results["pipeline"] = [_run(s) for s in pipeline_specs(quick)]
  if "scaling" in _ONLY.value:
    results["scaling"] = [{"axis": axis, **_run(spec, env)}
                          for axis, spec, env in scaling_specs(quick)]

  ceiling = report.matmul_ceiling(results.get("matmul", []))
  for section in ("unet", "cvae"):
    if section in results:
      print(report.step_table(section, results[section], ceiling))
  if "pipeline" in results:
    print(report.pipeline_table(results["pipeline"], results))
  if "scaling" in results:
    print(report.scaling_table(results["scaling"]))
  if "matmul" in results:
    print(report.matmul_line(results["matmul"][0]))
  print(report.allocator_line(results))
  ratio = report.unet_ratio(results.get("unet", []), RATIO_VARIANT)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump({"quick": quick, "results": results, "unet_vs_pytorch": ratio}, f, indent=2)
    print(f"wrote {_OUT.value}")
  errors = [r for rs in results.values() for r in rs if "error" in r]
  if errors:
    print(f"{len(errors)} measurement(s) failed; see the 'error' rows above")
  print(f"unet_vs_pytorch={ratio:.3f}" if not math.isnan(ratio) else "unet_vs_pytorch=nan")


if __name__ == "__main__":
  app.run(main)
