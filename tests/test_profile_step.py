"""benchmarks/investigations/profile_step.py: op names are read from compiled HLO and trace
events are summed by name, so its table maps time to the model's layers."""

import gzip
import json

import jax
import jax.numpy as jnp

from benchmarks.investigations import profile_step


def test_op_names_map_hlo_instructions_to_jax_source():
  def layer(x):
    return jnp.sin(x) @ x.T
  text = jax.jit(layer).lower(jnp.ones((8, 8))).compile().as_text()
  names = profile_step.op_names(text)
  assert names, "no op_name metadata parsed from the compiled HLO"
  # Computations are named after their source ops (parameters keep their argument names).
  assert {"jit(layer)/sin", "jit(layer)/dot_general"} <= set(names.values())
  for instr in names:          # every key is an instruction defined in the module text
    assert f"{instr} = " in text


def test_summed_events_adds_complete_events_by_name(tmp_path):
  trace = {"traceEvents": [
      {"ph": "X", "name": "fusion.1", "dur": 10.0}, {"ph": "X", "name": "fusion.1", "dur": 5.5},
      {"ph": "X", "name": "dot.2", "dur": 3.0}, {"ph": "i", "name": "fusion.1"},   # instant
      {"ph": "M", "name": "process_name"}]}
  run = tmp_path / "plugins" / "profile" / "run1"
  run.mkdir(parents=True)
  with gzip.open(run / "perfetto_trace.json.gz", "wt") as f:
    json.dump(trace, f)
  assert profile_step.summed_events(str(tmp_path)) == {"fusion.1": 15.5, "dot.2": 3.0}
