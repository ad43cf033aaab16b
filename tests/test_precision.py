"""`model.dtype` (shared/layers/precision.py) in every family, and what the loop reports about its
step (shared/profiling.py).

bfloat16: every layer's output is bfloat16, while parameters, optimizer state, batch statistics,
the models' outputs and the losses stay float32. float32 (the default) computes exactly what
the un-annotated layers compute (Flax's dtype inferred from float32 inputs, as before the field
existed); the full check of that is the UNet `cpu` run's eval.json (docs/precision.md).
"""

import glob
import gzip
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import run_fast, tiny_unet_config

from configs import classifier as classifier_configs
from configs import cvae as cvae_configs
from configs import unet as unet_configs
from cvae import classifier_task
from cvae import input_pipeline
from cvae import losses
from cvae import models as cvae_models
from cvae import task as cvae_task
from shared import layers
from shared import metric_writer
from shared import optim
from shared import sharding
from shared import train
from shared import validate
from shared.errors import ConfigError
from unet import models as unet_models
from unet import task as unet_task


def _no_judge(workdir, dataset):
  raise AssertionError(f"the judge ({workdir!r}, {dataset!r}) was loaded outside the eval")


# ---------------------------------------------------------------- tiny configs of every family


def _unet(dtype):
  config = unet_configs.get_config("strconv_ups_dice")
  config.model.depth, config.model.base_features = 2, 4
  config.model.dtype = dtype
  return config


def _cvae_conv(dtype):
  """MNIST's conv CVAE with its label critic."""
  config = cvae_configs.get_config("mnist")
  config.model.features, config.model.hidden, config.model.latent_dim = (4, 8), 16, 4
  config.model.critic_features, config.model.critic_hidden = (4, 8), 8
  config.model.dtype = dtype
  return config


def _cvae_resnet(dtype):
  """CIFAR-10's residual CVAE (latent map, FiLM) with the wrong-decode critic."""
  config = cvae_configs.get_config("cifar10")
  config.model.features, config.model.latent_channels, config.model.embed_dim = (4, 8), 2, 3
  config.model.critic_features, config.model.critic_hidden = (4, 8), 8
  config.model.dtype = dtype
  return config


def _judge_cnn(dtype):
  config = classifier_configs.get_config("mnist")
  config.model.features, config.model.hidden = (4, 8), 8
  config.model.dtype = dtype
  return config


def _judge_resnet(dtype, stem="conv"):
  config = classifier_configs.get_config("cifar10")
  config.model.features, config.model.stem = (4, 8, 8, 8), stem
  config.model.dtype = dtype
  return config


FAMILIES = {
    "unet": _unet, "cvae_conv": _cvae_conv, "cvae_resnet": _cvae_resnet,
    "judge_cnn": _judge_cnn, "judge_resnet": _judge_resnet,
    "judge_resnet_whiten": lambda dtype: _judge_resnet(dtype, stem="whiten"),
}


def _task(config):
  if config.task == "cvae.task":
    return cvae_task.build_task(config, judge_loader=_no_judge)
  return train.load_task(config)


def _batch(config, n=4):
  rng = np.random.default_rng(0)
  if config.task == "unet.task":
    s = 32
    return {"image": rng.random((n, s, s, 3), np.float32),
            "trimap": rng.integers(1, 4, (n, s, s)).astype(np.uint8)}
  shape = input_pipeline.IMAGE_SHAPES[config.data.name]
  return {"image": rng.random((n,) + shape, np.float32),
          "label": rng.integers(0, 10, (n,)).astype(np.int32)}


def _model_and_apply(config, variables, batch):
  """(model, a function applying it to `batch` as training does, capturing intermediates)."""
  x = batch["image"]
  if config.task == "unet.task":
    model = unet_models.from_config(config.model, 1)
    return model, lambda v, m: m.apply(v, x, train=True, capture_intermediates=True,
                                       mutable=["batch_stats", "intermediates"])
  if config.task == "cvae.task":
    shape = input_pipeline.IMAGE_SHAPES[config.data.name]
    out_ch = shape[-1] * losses.OUTPUTS_PER_CHANNEL[config.loss.likelihood]
    model = cvae_models.from_config(config.model, shape, out_ch, 10)
    y = batch["label"]

    def apply(v, m):
      # The whole model, the critic included (init made its parameters).
      out = m.apply(v, x, y, y, jax.random.key(3), capture_intermediates=True,
                    mutable=["intermediates"])
      critic = m.apply(v, x, method=cvae_models.CVAE.criticize, capture_intermediates=True,
                       mutable=["intermediates"])
      return (out[0], critic[0]), {"model": out[1], "critic": critic[1]}
    return model, apply
  model = cvae_models.classifier_from_config(config.model, 10)
  return model, lambda v, m: m.apply(v, x, train=True, capture_intermediates=True,
                                     mutable=["batch_stats", "intermediates"])


def _intermediates(captured):
  """Every captured floating output of a submodule's `__call__` (the top-level one excluded),
  as (path, array)."""
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(captured)[0]:
    names = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
    if "intermediates" not in names:
      continue
    inside = names[names.index("intermediates") + 1:]
    if inside[0] == "__call__":      # the top-level module's own output
      continue
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      out.append(("/".join(map(str, names)), leaf))
  return out


# ---------------------------------------------------------------- bfloat16


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bfloat16_computes_in_bf16_and_keeps_params_state_and_losses_float32(family):
  config = FAMILIES[family]("bfloat16")
  task = _task(config)
  mesh = sharding.make_mesh()
  batch = sharding.to_global(_batch(config), mesh)
  tx, schedule = optim.make_optimizer(config.optimizer, 10, 100)
  state = train.init_train_state(task, tx, jax.random.key(0), batch, mesh)
  step = train.make_train_step(task, tx, schedule, 0, mesh).lower(state, batch).compile(
      {"xla_backend_optimization_level": 0})
  new_state, metrics = step(state, batch)

  floats = lambda tree: [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
  for part in ("params", "opt_state", "model_state"):
    assert {str(x.dtype) for x in floats(new_state[part])} <= {"float32"}, part
  assert floats(new_state["params"]) and floats(new_state["opt_state"])
  for name, value in metrics.items():
    if jnp.issubdtype(value.dtype, jnp.floating):
      assert value.dtype == jnp.float32, name
      assert np.isfinite(float(value)), name
  assert metrics["loss"].dtype == jnp.float32 and float(metrics["grad_norm"]) > 0

  # Every layer's output is bfloat16; what leaves the model is float32.
  variables = train.variables_of(new_state)     # (`state` was donated to the step)
  model, apply = _model_and_apply(config, variables, jax.device_get(batch))
  outputs, captured = run_fast(lambda v: apply(v, model), variables)
  inner = _intermediates(captured)
  assert len(inner) >= 4
  assert {path: str(x.dtype) for path, x in inner if x.dtype != jnp.bfloat16} == {}
  for x in floats(outputs):
    assert x.dtype == jnp.float32


def test_bfloat16_model_outputs_are_close_to_float32():
  """Same parameters, both dtypes: bfloat16 keeps about 3 significant digits."""
  config = _unet("float32")
  model = unet_models.from_config(config.model, 1)
  x = jnp.asarray(_batch(config)["image"])
  variables = run_fast(lambda: model.init(jax.random.key(0), x))
  f32 = run_fast(lambda v: model.apply(v, x), variables)
  bf16 = run_fast(lambda v: model.clone(dtype=jnp.bfloat16).apply(v, x), variables)
  assert bf16.dtype == f32.dtype == jnp.float32
  scale = float(jnp.max(jnp.abs(f32)))
  assert 0 < float(jnp.max(jnp.abs(bf16 - f32))) < 0.05 * scale


@pytest.mark.parametrize("layer", ["conv", "transpose"])
@pytest.mark.parametrize("impl", ["phase", "xla"])
def test_conv_layers_accept_dtype(layer, impl):
  make = {"conv": lambda **kw: layers.Conv(5, (3, 3), strides=2, impl=impl, **kw),
          "transpose": lambda **kw: layers.ConvTranspose(5, (4, 4), strides=2, impl=impl, **kw)}
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  params = make[layer]().init(jax.random.key(0), x)
  assert {str(p.dtype) for p in jax.tree.leaves(params)} == {"float32"}
  # The same parameters serve every dtype: storage is param_dtype (float32) throughout.
  assert (jax.tree.map(lambda p: p.shape, make[layer](dtype=jnp.bfloat16).init(
      jax.random.key(0), x)) == jax.tree.map(lambda p: p.shape, params))
  y32 = make[layer]().apply(params, x)
  y_explicit = make[layer](dtype=jnp.float32).apply(params, x)
  y16 = make[layer](dtype=jnp.bfloat16).apply(params, x)
  np.testing.assert_array_equal(y_explicit, y32)
  assert y32.dtype == jnp.float32 and y16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y16, np.float32), y32,
                             atol=0.03 * float(jnp.max(jnp.abs(y32))))


# ---------------------------------------------------------------- float32 is what it was


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_float32_is_bit_identical_to_the_unannotated_model(family):
  """`model.dtype=float32` against the same model with `dtype=None` everywhere (Flax infers
  float32 from the inputs: the layers as they were built before the field existed): the same
  outputs and gradients, bit for bit."""
  config = FAMILIES[family]("float32")
  batch = _batch(config)
  task = _task(config)
  variables = run_fast(task.init, jax.random.key(0), batch)
  model, apply = _model_and_apply(config, variables, batch)
  assert model.dtype == jnp.float32
  unannotated = model.clone(dtype=None)

  def out_and_grad(m):
    def scalar(p):
      outputs, _ = apply({**variables, "params": p}, m)
      return sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(outputs)), outputs
    return jax.grad(scalar, has_aux=True)(variables["params"])

  a = run_fast(lambda: out_and_grad(model))
  b = run_fast(lambda: out_and_grad(unannotated))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert x.dtype == y.dtype == jnp.float32
    np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("family", ["unet", "cvae_conv", "judge_cnn"])
@pytest.mark.parametrize("value", ["float16", "bf16", "float64"])
def test_unknown_dtype_is_one_config_error_naming_the_field(family, value):
  config = FAMILIES[family](value)
  with pytest.raises(ConfigError) as e:
    _task(config)
  assert str(e.value) == f"model.dtype={value!r}; allowed: ('float32', 'bfloat16')"


def test_every_family_defaults_to_float32():
  for config in (unet_configs.get_config(None), cvae_configs.get_config("mnist"),
                 cvae_configs.get_config("cifar10"), classifier_configs.get_config("mnist"),
                 classifier_configs.get_config("cifar10")):
    assert config.model.dtype == "float32"
    assert config.train.profile_steps == 0


def test_runs_written_before_the_field_resume_as_float32():
  current = json.loads(unet_configs.get_config("mp_tr_bce,cpu").to_json_best_effort())
  saved = json.loads(json.dumps(current))
  del saved["model"]["dtype"]
  del saved["train"]["profile_steps"]
  assert validate.config_differences(saved, current) == []
  current["model"]["dtype"] = "bfloat16"
  current["train"]["profile_steps"] = 3      # a trace changes nothing the run computes
  assert validate.config_differences(saved, current) == [
      "model.dtype: 'float32' -> 'bfloat16'"]


@pytest.mark.parametrize("value", [-1, True])
def test_bad_profile_steps_is_named(value):
  config = unet_configs.get_config(None)
  config.train.profile_steps = value
  with pytest.raises(ConfigError, match=r"^train.profile_steps=.*: must be an integer >= 0"):
    validate.check_common(config)


# ---------------------------------------------------------------- the loop's reports


def test_run_reports_step_cost_and_writes_a_profile(tmp_path, tfds_dir):
  """A tiny bfloat16 run with `train.profile_steps=2`: eval.json holds XLA's FLOPs, bytes and
  peak memory of the compiled step, and workdir/profile holds a trace of steps 2 and 3 (after
  the first, compiling, step)."""
  workdir = str(tmp_path / "run")
  config = tiny_unet_config(tfds_dir, "strconv_ups_dice",
                            **{"model.dtype": "bfloat16", "train.profile_steps": 2})
  result = train.train_and_evaluate(config, workdir)

  assert result["config"]["model"]["dtype"] == "bfloat16"
  losses_seen = [r["loss"] for r in metric_writer.read_metrics(
      os.path.join(workdir, "metrics.jsonl")) if r["kind"] == "train"]
  assert losses_seen and all(np.isfinite(losses_seen)) and np.isfinite(result["loss"])
  with open(os.path.join(workdir, "eval.json")) as f:
    written = json.load(f)
  for key in ("step_flops", "step_bytes_accessed", "step_peak_memory_bytes"):
    assert written[key] == result[key] and written[key] > 0, key
  assert isinstance(written["step_peak_memory_bytes"], int)
  # A train step is forward + backward + update: more than twice the forward pass's FLOPs.
  model = unet_models.from_config(config.model, 1)
  x = jnp.zeros((config.train.batch_size, 32, 32, 3))
  variables = model.init(jax.random.key(0), x)
  forward = jax.jit(lambda v: model.apply(v, x)).lower(variables).compile().cost_analysis()
  assert written["step_flops"] > 2 * float(forward["flops"]) > 0

  profile = os.path.join(workdir, "profile")
  assert glob.glob(os.path.join(profile, "**", "*.xplane.pb"), recursive=True)
  (perfetto,) = glob.glob(os.path.join(profile, "**", "perfetto_trace.json.gz"), recursive=True)
  with gzip.open(perfetto, "rt") as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  steps = sorted(e["args"]["step_num"] for e in events
                 if e.get("name") == "train" and e.get("ph") == "X")
  assert steps == ["2", "3"]


def test_accelerator_estimate_is_the_roofline_bound_by_hand():
  from benchmarks import accelerator_estimate as est  # pylint: disable=g-import-not-at-top
  chip = est.Chip("toy", peak_flops=1e12, bandwidth=1e9)
  # 2e12 FLOPs: 2 s of compute at peak; 1e9 bytes: 1 s of traffic. Batch 10.
  e = est.estimate(2e12, 1e9, batch_size=10, chip=chip, utilisation=0.4)
  assert e["flop_bound_img_s"] == pytest.approx(5.0)
  assert e["bandwidth_bound_img_s"] == pytest.approx(10.0)
  assert e["roofline_img_s"] == pytest.approx(5.0)
  assert e["estimate_img_s"] == pytest.approx(2.0) and e["bound"] == "compute"   # 40% of 5
  # 1 s of compute, 4 s of traffic: the bandwidth limits both the roofline and the estimate.
  e = est.estimate(1e12, 4e9, batch_size=10, chip=chip, utilisation=0.5)
  assert e["roofline_img_s"] == e["estimate_img_s"] == pytest.approx(2.5)
  assert e["bound"] == "bandwidth"
