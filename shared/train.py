"""The one training loop every model family uses: `train_and_evaluate(config, workdir)`.

A family contributes a `Task` (model, loss, eval sums, pictures); this module owns the rest:
data parallelism over all devices, the jitted pure train step over a plain-dict state, the
optimizer, orbax checkpoints with automatic resume, progress lines, metrics.jsonl/TensorBoard,
evaluation over the whole test split and the final `eval.json`.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import json
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from shared import checkpoint
from shared import data
from shared import metric_writer
from shared import optim
from shared import plotting
from shared import sharding
from shared.task import Task

State = dict[str, Any]


def load_task(config) -> Task:
  """`config.task` names a module with `build_task(config)`; the launcher needs no change per family."""
  if not config.task:
    raise ValueError("config.task is empty; it must name a module such as 'unet.task'")
  try:
    module = importlib.import_module(config.task)
  except ModuleNotFoundError as e:
    raise ValueError(f"config.task={config.task!r}: no such module ({e})") from e
  return module.build_task(config)


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def variables_of(state: State) -> dict:
  return {"params": state["params"], **state["model_state"]}


def _init_state(task: Task, tx, rng, batch) -> State:
  variables = dict(task.init(rng, batch))
  params = variables.pop("params")
  return {"step": jnp.zeros((), jnp.int32), "params": params, "model_state": variables,
          "opt_state": tx.init(params), "train_time_s": jnp.zeros((), jnp.float32)}


def _train_step(state: State, batch, *, task: Task, tx, schedule, seed: int):
  """One optimizer step. Pure: the step's randomness is `fold_in(key(seed), step)`."""
  rng = jax.random.fold_in(jax.random.key(seed), state["step"])

  def loss_fn(params):
    return task.loss(params, state["model_state"], batch, rng)

  (loss, (metrics, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"])
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  new_state = {**state, "step": state["step"] + 1, "params": optax.apply_updates(
      state["params"], updates), "model_state": model_state, "opt_state": opt_state}
  metrics = {"loss": loss, **metrics, "grad_norm": optax.tree.norm(grads),
             "learning_rate": schedule(state["step"])}
  return new_state, metrics


class _Clock:
  """Separates time spent in train steps from eval / checkpoint pauses, for images/s."""

  def __init__(self):
    self.start = time.time()
    self.steady_s = 0.0
    self.steady_steps = 0
    self._mark = None

  def resume(self):
    self._mark = time.time()

  def pause(self, steps_since_resume: int):
    if self._mark is not None:
      self.steady_s += time.time() - self._mark
      self.steady_steps += steps_since_resume
      self._mark = None


def evaluate(task: Task, eval_step, state: State, store: data.ExampleStore, batch_size: int,
             mesh) -> dict[str, float]:
  """Runs the whole eval split once and turns the summed arrays into metrics."""
  outs = []
  for batch in data.eval_batches(store, batch_size, task.image_keys, jax.process_index(),
                                 jax.process_count()):
    outs.append(eval_step(variables_of(state), sharding.to_global(batch, mesh)))
  host = jax.device_get(outs)
  sums = {k: np.sum([np.asarray(o[k], np.float64 if np.asarray(o[k]).dtype.kind == "f"
                                else np.int64) for o in host], axis=0) for k in host[0]}
  return task.summarize(sums)


def _write_json(path: str, obj) -> None:
  if jax.process_index() != 0:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _fmt_eta(seconds: float) -> str:
  return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (resuming from `workdir/checkpoints` if present) and evaluates; returns eval.json."""
  os.makedirs(workdir, exist_ok=True)
  task = load_task(config)
  mesh = sharding.make_mesh()
  sharding.check_batch_divisible(config.train.batch_size, "train.batch_size")
  sharding.check_batch_divisible(config.eval.batch_size, "eval.batch_size")
  pidx, pcount = jax.process_index(), jax.process_count()

  train_store, eval_store = task.load_data(config)
  batch_size = config.train.batch_size
  spe = data.steps_per_epoch(len(train_store), batch_size)
  total_steps = spe * config.train.num_epochs
  tx, schedule = optim.make_optimizer(config.optimizer, spe, total_steps)
  logging.info("train %d examples (%s), eval %d; %d steps/epoch, %d steps; %d device(s)",
               len(train_store), "cached" if train_store.cached else "decoded per batch",
               len(eval_store), spe, total_steps, jax.device_count())

  repl = sharding.replicated(mesh)
  train_iter = lambda start: data.train_batches(  # pylint: disable=g-long-lambda
      train_store, batch_size, config.seed, start, task.flip_keys, task.image_keys, pidx, pcount)
  example = sharding.to_global(next(train_iter(0)), mesh)
  # Init runs once and is dominated by compiling the random initialisers: XLA's backend
  # optimisations cost ~9 s there and save nothing, so compile it at optimisation level 0.
  init_fn = jax.jit(functools.partial(_init_state, task, tx), out_shardings=repl).lower(
      jax.random.key(config.seed), example).compile({"xla_backend_optimization_level": 0})
  state = init_fn(jax.random.key(config.seed), example)
  n_params = count_params(state["params"])

  ckpt = checkpoint.Checkpointer(workdir, config.train.max_to_keep)
  restored = ckpt.restore_latest(state)
  if restored is not None:
    state = restored
    logging.info("resumed from %s at step %d", ckpt.directory, int(state["step"]))
  _write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))

  eval_step = jax.jit(task.eval_sums, out_shardings=repl)
  writer = metric_writer.MetricWriter(workdir)
  step = int(state["step"])
  prior_train_s = float(state["train_time_s"])
  clock = _Clock()

  def run_eval():
    metrics = evaluate(task, eval_step, state, eval_store, config.eval.batch_size, mesh)
    writer.write("eval", step, metrics)
    logging.info("eval at step %d: %s", step,
                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics

  def save():
    nonlocal state
    elapsed = prior_train_s + time.time() - clock.start
    state = {**state, "train_time_s": jax.device_put(jnp.float32(elapsed), repl)}
    ckpt.save(step, state)

  if config.mode not in ("train", "eval"):
    raise ValueError(f"config.mode={config.mode!r}; allowed: 'train', 'eval'")
  if config.mode == "eval" and restored is None:
    raise FileNotFoundError(f"--config.mode=eval needs a checkpoint in {ckpt.directory}; none found")

  final_metrics = None
  if config.mode == "train" and step < total_steps:
    train_step = jax.jit(
        functools.partial(_train_step, task=task, tx=tx, schedule=schedule, seed=config.seed),
        in_shardings=(repl, sharding.batch_sharded(mesh)), out_shardings=(repl, repl),
        donate_argnums=(0,))
    pending, steps_in_window = [], 0
    first_step_of_run = True
    it = train_iter(step)
    while step < total_steps:
      batch = sharding.to_global(next(it), mesh)
      state, metrics = train_step(state, batch)
      step += 1
      pending.append(metrics)
      steps_in_window += 1
      if first_step_of_run:  # compile time is not steady-state throughput
        jax.block_until_ready(metrics)
        logging.info("first step (incl. compile) took %.1fs", time.time() - clock.start)
        first_step_of_run, steps_in_window, pending = False, 0, []
        clock.resume()
      epoch_end = step % spe == 0
      if pending and (step % config.train.log_every_steps == 0 or step == total_steps):
        host = jax.device_get(pending)   # the only per-log host sync in the loop
        clock.pause(steps_in_window)
        steps_in_window = 0
        means = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        ips = clock.steady_steps * batch_size / max(clock.steady_s, 1e-9)
        eta = (total_steps - step) * batch_size / max(ips, 1e-9)
        writer.write("train", step, {**means, "images_per_s": ips})
        logging.info("step %d/%d (epoch %d/%d) loss %.4f | %.1f img/s | ETA %s", step,
                     total_steps, -(-step // spe), config.train.num_epochs, means["loss"],
                     ips, _fmt_eta(eta))
        pending = []
        clock.resume()
      epoch = step // spe
      if epoch_end and epoch % config.train.eval_every_epochs == 0 or step == total_steps:
        clock.pause(steps_in_window)
        steps_in_window = 0
        final_metrics = run_eval()
        clock.resume()
      if step % config.train.checkpoint_every_steps == 0 or step == total_steps:
        clock.pause(steps_in_window)
        steps_in_window = 0
        save()
        clock.resume()
    clock.pause(steps_in_window)

  if final_metrics is None:
    final_metrics = run_eval()
  train_time_s = (float(state["train_time_s"]) if config.mode == "eval"
                  else prior_train_s + time.time() - clock.start)
  images_per_s = (clock.steady_steps * batch_size / clock.steady_s if clock.steady_s else None)
  if images_per_s is None and os.path.exists(os.path.join(workdir, "eval.json")):
    with open(os.path.join(workdir, "eval.json")) as f:  # eval-only: keep the training figure
      images_per_s = json.load(f).get("images_per_s")
  result = {
      "variant": config.variant, "task": config.task, **final_metrics,
      "num_params": n_params, "num_eval_examples": len(eval_store), "step": step,
      "train_time_s": train_time_s, "images_per_s": images_per_s,
      "num_devices": jax.device_count(), "config": json.loads(config.to_json_best_effort()),
  }
  _write_json(os.path.join(workdir, "eval.json"), result)
  if pidx == 0:
    task.write_pictures(variables_of(state), eval_store, workdir,
                        jax.random.fold_in(jax.random.key(config.seed), 0x5EED))
    plotting.plot_curves(writer.path, os.path.join(workdir, "curves.png"),
                         eval_keys=task.curve_metrics)
  ckpt.wait()
  ckpt.close()
  writer.close()
  logging.info("wrote %s", os.path.join(workdir, "eval.json"))
  return result
