"""Times OUR train and eval steps: the task from `build_task`, the optimizer from
`shared.optim`, and `shared.train.make_train_step` (the loop's jitted step: shardings, donation).

Batches are synthetic (right shapes and dtypes) so the step is measured alone; the input
pipeline has its own section (pipeline_bench.py).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common


def _unet_config(variant: str, size: str, overrides: dict):
  from configs import unet as unet_configs  # pylint: disable=g-import-not-at-top
  config = unet_configs.get_config(variant + (",cpu" if size == "cpu" else ""))
  _apply(config, overrides)
  return config


def _cvae_config(dataset: str, overrides: dict):
  from configs import cvae as cvae_configs  # pylint: disable=g-import-not-at-top
  config = cvae_configs.get_config(dataset)
  _apply(config, overrides)
  return config


def _classifier_config(dataset: str, overrides: dict):
  from configs import classifier as classifier_configs  # pylint: disable=g-import-not-at-top
  config = classifier_configs.get_config(dataset)
  _apply(config, overrides)
  return config


def _apply(config, overrides: dict) -> None:
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = tuple(value) if isinstance(value, list) else value


def config_for(spec: dict):
  if spec["model"] == "unet":
    return _unet_config(spec["variant"], spec["size"], spec.get("overrides", {}))
  if spec["model"] == "classifier":
    return _classifier_config(spec["dataset"], spec.get("overrides", {}))
  return _cvae_config(spec["dataset"], spec.get("overrides", {}))


def _random_classifier(config):
  """Stands in for `classifier_loader.load_classifier`: the CVAE eval reads a trained judge
  classifier, which a fresh clone does not have. Random weights cost the same."""
  from configs import classifier as classifier_configs  # pylint: disable=g-import-not-at-top
  from cvae import input_pipeline, models  # pylint: disable=g-import-not-at-top
  clf_cfg = classifier_configs.get_config(config.data.name).model

  def load(workdir, dataset):
    del workdir
    model = models.classifier_from_config(clf_cfg, len(input_pipeline.CLASS_NAMES[dataset]))
    # Random images: a whitening stem is computed from the batch it is initialised with.
    x = np.random.default_rng(0).random((8,) + input_pipeline.IMAGE_SHAPES[dataset], np.float32)
    return model, model.init(jax.random.key(0), x)
  return load


def build_task(config):
  if config.task == "cvae.task":
    from cvae import task as cvae_task  # pylint: disable=g-import-not-at-top
    return cvae_task.build_task(config, judge_loader=_random_classifier(config))
  from shared import train  # pylint: disable=g-import-not-at-top
  return train.load_task(config)


def synthetic_batch(config, batch_size: int, eval_batch: bool = False) -> dict[str, np.ndarray]:
  """The batch the data package would yield: float32 images in [0, 1] plus the task's labels."""
  rng = np.random.default_rng(0)
  if config.task == "unet.task":
    s = config.data.image_size
    batch = {"image": rng.random((batch_size, s, s, 3), np.float32),
             "trimap": rng.integers(1, 4, (batch_size, s, s)).astype(np.uint8)}
  else:
    from cvae import input_pipeline  # pylint: disable=g-import-not-at-top
    shape = input_pipeline.IMAGE_SHAPES[config.data.name]
    batch = {"image": rng.random((batch_size,) + shape, np.float32),
             "label": rng.integers(0, 10, (batch_size,)).astype(np.int32)}
  if eval_batch:
    batch["valid"] = np.ones((batch_size,), np.float32)
    batch["index"] = np.arange(batch_size, dtype=np.int32)
  return batch


def _flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (not every backend implements it)
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def prepare(spec: dict):
  """(config, task, mesh, state, batch, step_fn) for `spec`: exactly the loop's functions
  (shared/train.py), on a synthetic batch of the config's train batch size."""
  from shared import optim, sharding, train  # pylint: disable=g-import-not-at-top
  config = config_for(spec)
  batch_size = spec.get("batch_size") or config.train.batch_size
  task = build_task(config)
  tx, schedule = optim.make_optimizer(config.optimizer, 100, 10_000)
  mesh = sharding.make_mesh()
  batch = sharding.to_global(synthetic_batch(config, batch_size), mesh)
  state = train.init_train_state(task, tx, jax.random.key(config.seed), batch, mesh)
  step_fn = train.make_train_step(task, tx, schedule, config.seed, mesh)
  return config, task, mesh, state, batch, step_fn


def measure(spec: dict) -> dict:
  """Compile time, median step time, images/s, eval images/s, FLOPs of one model's steps."""
  from shared import sharding, train  # pylint: disable=g-import-not-at-top
  config, task, mesh, state, batch, step_fn = prepare(spec)
  batch_size = spec.get("batch_size") or config.train.batch_size
  repl = sharding.replicated(mesh)
  n_params = train.count_params(state["params"])
  t0 = time.perf_counter()
  lowered = step_fn.lower(state, batch)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  flops = _flops(compiled)

  t0 = time.perf_counter()
  state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  first_call_s = time.perf_counter() - t0
  for _ in range(spec.get("warmup", 2)):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))

  def one_step():
    nonlocal state
    state, m = compiled(state, batch)
    jax.block_until_ready((state, m))

  step_s, times = common.median_time(one_step, spec["steps"])
  if not np.isfinite(float(jax.device_get(metrics["loss"]))):
    raise FloatingPointError("non-finite loss in the benchmark step")

  result = {"framework": "jax", "num_params": n_params, "batch_size": batch_size,
            "compile_s": compile_s, "first_call_s": first_call_s, "step_s": step_s,
            "step_s_all": times, "images_per_s": batch_size / step_s,
            "flops_per_step": flops,
            "flops_per_s": flops / step_s if flops else None,
            "num_devices": jax.device_count()}
  if spec.get("eval", True):
    result.update(_measure_eval(task, config, state, mesh, repl, spec))
  return result


def _measure_eval(task, config, state, mesh, repl, spec) -> dict:
  """The loop's eval step (`task.eval_sums` over a padded eval batch) at eval.batch_size."""
  from shared import sharding, train  # pylint: disable=g-import-not-at-top
  eval_bs = spec.get("eval_batch_size") or config.eval.batch_size
  batch = sharding.to_global(synthetic_batch(config, eval_bs, eval_batch=True), mesh)
  variables = train.variables_of(state)
  eval_step = jax.jit(task.eval_sums, out_shardings=repl)
  t0 = time.perf_counter()
  compiled = eval_step.lower(variables, batch).compile()
  eval_compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(variables, batch))
  eval_s, _ = common.median_time(lambda: jax.block_until_ready(compiled(variables, batch)),
                                 max(3, spec["steps"] // 4))
  return {"eval_batch_size": eval_bs, "eval_compile_s": eval_compile_s, "eval_step_s": eval_s,
          "eval_images_per_s": eval_bs / eval_s}


def matmul_flops(n: int, repeats: int) -> dict:
  """Dense fp32 matmul GFLOP/s, numpy (OpenBLAS) and jax: the ceiling utilisation is against."""
  a = np.random.default_rng(0).random((n, n), np.float32)
  b = np.random.default_rng(1).random((n, n), np.float32)
  a @ b
  np_s, _ = common.median_time(lambda: a @ b, repeats)
  mm = jax.jit(jnp.matmul)
  ja, jb = jnp.asarray(a), jnp.asarray(b)
  mm(ja, jb).block_until_ready()
  jax_s, _ = common.median_time(lambda: mm(ja, jb).block_until_ready(), repeats)
  flops = 2.0 * n**3
  return {"n": n, "numpy_gflops": flops / np_s / 1e9, "jax_gflops": flops / jax_s / 1e9}
