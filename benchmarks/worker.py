"""One measurement in a fresh interpreter: `python -m benchmarks.worker --spec=JSON`; prints
one result line.

Run by run.py (see common.run_worker), not by hand, so that each result's peak RSS, XLA flags
and thread settings belong to that measurement alone.
"""

from __future__ import annotations

import json

from absl import app
from absl import flags

from benchmarks import common

_SPEC = flags.DEFINE_string("spec", None, "JSON measurement spec (see run.py)", required=True)


def main(argv):
  del argv
  spec = json.loads(_SPEC.value)
  from shared.process import xla_flags  # pylint: disable=g-import-not-at-top
  xla_flags.apply_defaults()     # the project's XLA:CPU defaults, as launch.py applies them
  kind = spec["kind"]
  if kind == "jax_step":
    from benchmarks import jax_bench  # pylint: disable=g-import-not-at-top
    result = jax_bench.measure(spec)
  elif kind == "torch_step":
    from benchmarks import torch_bench  # pylint: disable=g-import-not-at-top
    result = torch_bench.measure(spec)
  elif kind == "pipeline":
    from benchmarks import pipeline_bench  # pylint: disable=g-import-not-at-top
    result = pipeline_bench.measure(spec)
  elif kind == "matmul":
    from benchmarks import jax_bench  # pylint: disable=g-import-not-at-top
    result = jax_bench.matmul_flops(spec["n"], spec["steps"])
  else:
    raise ValueError(f"unknown measurement kind {kind!r}")
  from shared.process import allocator  # pylint: disable=g-import-not-at-top
  result["allocator"] = allocator.describe()
  common.emit(result)


if __name__ == "__main__":
  app.run(main)
