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
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import optax

from shared import checkpoint
from shared import data
from shared import errors
from shared import files
from shared import metric_writer
from shared import optim
from shared import plotting
from shared import preemption
from shared import profiling
from shared import sharding
from shared import validate
from shared import workdir_lock
from shared.task import Task

State = dict[str, Any]


def load_task(config) -> Task:
  """`config.task` names a module with `build_task(config)`; the launcher needs no change per family."""
  if not config.task:
    raise errors.ConfigError("task is empty; it must name a module such as 'unet.task'")
  try:
    module = importlib.import_module(config.task)
  except ModuleNotFoundError as e:
    raise errors.ConfigError(f"task={config.task!r}: no such module ({e})") from e
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


def init_train_state(task: Task, tx, rng, example_batch, mesh) -> State:
  """The initial replicated train state.

  Init runs once and is dominated by compiling the random initialisers: XLA's backend
  optimisations cost ~9 s there and save nothing, so it is compiled at optimisation level 0.
  """
  init_fn = jax.jit(functools.partial(_init_state, task, tx),
                    out_shardings=sharding.replicated(mesh)).lower(
                        rng, example_batch).compile({"xla_backend_optimization_level": 0})
  return init_fn(rng, example_batch)


def make_train_step(task: Task, tx, schedule, seed: int, mesh):
  """The jitted `train_step(state, batch) -> (state, metrics)` the loop (and the benchmarks)
  run: state replicated and donated, batch sharded over the `data` axis."""
  repl = sharding.replicated(mesh)
  return jax.jit(functools.partial(_train_step, task=task, tx=tx, schedule=schedule, seed=seed),
                 in_shardings=(repl, sharding.batch_sharded(mesh)), out_shardings=(repl, repl),
                 donate_argnums=(0,))


def compile_train_step(task: Task, tx, schedule, seed: int, mesh, state: State, batch):
  """(`make_train_step`'s step compiled ahead of time for `state` and `batch`'s shapes, XLA's
  `profiling.step_cost` of it). The loop runs this compiled step, so the cost analysis costs
  no second compile."""
  compiled = make_train_step(task, tx, schedule, seed, mesh).lower(state, batch).compile()
  return compiled, profiling.step_cost(compiled)


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
             mesh, stop=lambda: False) -> dict[str, float] | None:
  """Runs the whole eval split once and turns the summed arrays into metrics; None when
  `stop()` became true between batches (a signal: the run is about to save and exit)."""
  outs = []
  for batch in data.eval_batches(store, batch_size, task.image_keys, jax.process_index(),
                                 jax.process_count()):
    if stop():
      return None
    outs.append(eval_step(variables_of(state), sharding.to_global(batch, mesh)))
  host = jax.device_get(outs)
  sums = {k: np.sum([np.asarray(o[k], np.float64 if np.asarray(o[k]).dtype.kind == "f"
                                else np.int64) for o in host], axis=0) for k in host[0]}
  return task.summarize(sums)


def _write_json(path: str, obj) -> None:
  if jax.process_index() != 0:
    return
  files.write_json(path, obj)


def _fmt_eta(seconds: float | None) -> str:
  """None while no step has been timed yet (the first steps compile)."""
  if seconds is None:
    return "not yet known"
  return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _ensure_writable(workdir: str) -> None:
  probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise errors.WorkdirError(f"workdir {workdir!r} is not writable: {e.strerror or e} "
                              f"(choose another --workdir or free space)") from e


def _check_finite(window: list[tuple[int, dict]], ckpt: checkpoint.Checkpointer) -> None:
  for step, metrics in window:
    loss = float(metrics["loss"])
    if not np.isfinite(loss):
      last = ckpt.latest_step()
      kept = f"the last good checkpoint (step {last}) is kept" if last is not None else (
          "no checkpoint was written yet")
      raise errors.NonFiniteLossError(
          f"training loss became {loss} at step {step}; stopped, {kept} in {ckpt.directory}. "
          f"Try a lower --config.optimizer.learning_rate, gradient clipping "
          f"(--config.optimizer.grad_clip_norm=1.0) or a longer warmup")


def _load_config_guard(config, workdir: str, has_checkpoint: bool) -> bool:
  """Refuses to resume a workdir trained with another config; records the config otherwise.
  Returns whether the workdir's config.json was this config already."""
  path = os.path.join(workdir, "config.json")
  current = json.loads(config.to_json_best_effort())
  saved = files.read_json(path) if os.path.exists(path) else None
  if has_checkpoint and saved is not None:
    validate.check_resume(saved, current, workdir)
  if config.mode == "train" and saved != current:
    _write_json(path, current)
  return saved == current


def _finished_result(config, workdir: str, latest_step: int | None, total_steps: int):
  """The eval.json of a finished run (its final step committed, eval.json written for it), or
  None. Training the same config again changes nothing, so nothing is written: no second eval
  line in metrics.jsonl, no new eval.json (`--config.mode=eval` re-evaluates on purpose)."""
  path = os.path.join(workdir, "eval.json")
  if config.mode != "train" or latest_step != total_steps or not os.path.exists(path):
    return None
  result = files.read_json(path)   # a garbled one is named, not overwritten
  if not isinstance(result, dict) or result.get("step") != total_steps:
    return None
  logging.info("%s is finished (step %d, %s); nothing to do. --config.mode=eval evaluates "
               "it again", workdir, total_steps, path)
  return result


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (resuming from `workdir/checkpoints` if present) and evaluates; returns eval.json.

  Raises the `shared.errors` types for problems a user can fix: bad config, missing data,
  unwritable workdir, non-finite loss, preemption (after committing a checkpoint).
  """
  if jax.process_count() > 1:   # first thing: shared/preemption.report_step says why
    preemption.report_step(checkpoint.newest_committed_step(workdir))
  validate.check_common(config)
  task = load_task(config)   # task-specific config checks happen here, before any compile
  # Files the eval needs besides the data (the CVAE's judge): a missing one fails now, before
  # the workdir is touched, not after training.
  task.load_eval_resources()
  _ensure_writable(workdir)
  # One run per workdir, for the whole run (shared/workdir_lock.py).
  lock = workdir_lock.acquire_for_job(workdir, jax.process_index(), jax.process_count())
  try:
    # SIGTERM / Ctrl-C from here on end the run at the next boundary; in a job of several
    # processes, at the same step on every process (shared/preemption.py).
    with preemption.PreemptionGuard(job_wide=jax.process_count() > 1) as guard:
      stores = task.load_data(config)   # before anything is written: its errors leave no trace
      steps_in_epoch = data.steps_per_epoch(len(stores[0]), config.train.batch_size)
      total_steps = steps_in_epoch * config.train.num_epochs
      guard.stop_if_requested("while loading data; nothing was written. Re-run the same "
                              "command to start")
      ckpt = checkpoint.Checkpointer(workdir, config.train.max_to_keep,
                                     save_every_steps=config.train.checkpoint_every_steps,
                                     final_step=total_steps)
      writer, failed = None, True
      try:
        same_config = _load_config_guard(config, workdir, ckpt.latest_step() is not None)
        result = (_finished_result(config, workdir, ckpt.latest_step(), total_steps)
                  if same_config else None)
        if result is None:
          writer = metric_writer.MetricWriter(workdir)
          result = _run(config, workdir, task, stores, steps_in_epoch, ckpt, writer, guard)
        failed = False
        return result
      finally:
        if writer is not None:
          try:
            writer.close()   # also on errors: no open files left in the workdir
          except errors.WorkdirError:
            if not failed:
              raise
        profiling.stop_active_trace()   # a run that ended inside its traced steps
        # Commit saves still in flight (e.g. the last good step before a NaN or a preemption).
        try:
          ckpt.close()
        except errors.WorkdirError:
          if not failed:
            raise
  finally:
    lock.release()


def _run(config, workdir: str, task: Task, stores, steps_in_epoch: int,
         ckpt: checkpoint.Checkpointer, writer: metric_writer.MetricWriter,
         guard: preemption.PreemptionGuard) -> dict:
  mesh = sharding.make_mesh()
  process_index, process_count = jax.process_index(), jax.process_count()

  train_store, eval_store = stores
  batch_size = config.train.batch_size
  total_steps = steps_in_epoch * config.train.num_epochs
  tx, schedule = optim.make_optimizer(config.optimizer, steps_in_epoch, total_steps)
  logging.info("train %d examples (%s), eval %d; %d steps/epoch, %d steps; %d device(s)",
               len(train_store), "cached" if train_store.cached else "decoded per batch",
               len(eval_store), steps_in_epoch, total_steps, jax.device_count())

  if config.mode == "eval" and ckpt.latest_step() is None:
    raise errors.CheckpointNotFoundError(f"--config.mode=eval needs a checkpoint in {ckpt.directory}; none found")

  repl = sharding.replicated(mesh)
  train_iter = lambda start: data.train_batches(  # pylint: disable=g-long-lambda
      train_store, batch_size, config.seed, start, task.flip_keys, task.image_keys,
      process_index, process_count)
  example = sharding.to_global(next(train_iter(0)), mesh)
  state = init_train_state(task, tx, jax.random.key(config.seed), example, mesh)
  n_params = count_params(state["params"])
  restored = ckpt.restore_latest(state)
  if restored is not None:
    state = restored
    logging.info("resumed from %s at step %d", ckpt.directory, int(state["step"]))
    preemption.report_step(int(state["step"]))
  elif config.mode == "eval":
    raise errors.CheckpointNotFoundError(f"--config.mode=eval: no restorable checkpoint in {ckpt.directory}")

  eval_step = jax.jit(task.eval_sums, out_shardings=repl)
  step = int(state["step"])
  prior_train_s = float(state["train_time_s"])
  clock = _Clock()

  def run_eval():
    """The eval's metrics, or None when a signal cut it short."""
    logging.info("evaluating at step %d", step)
    metrics = evaluate(task, eval_step, state, eval_store, config.eval.batch_size, mesh,
                       stop=lambda: guard.requested)
    if metrics is None:
      logging.info("eval at step %d interrupted by %s", step, guard.signal_name)
      return None
    writer.write("eval", step, metrics)
    logging.info("eval at step %d: %s", step,
                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics

  def save():
    nonlocal state
    elapsed = prior_train_s + time.time() - clock.start
    # Every process's clock differs a little; a replicated value must be one: process 0's.
    elapsed = multihost_utils.broadcast_one_to_all(np.float32(elapsed))
    state = {**state, "train_time_s": jax.device_put(jnp.float32(elapsed), repl)}
    logging.info("saving checkpoint at step %d", step)
    ckpt.save(step, state)

  final_metrics = None
  step_cost = dict.fromkeys(profiling.COST_KEYS)
  if config.mode == "train" and step < total_steps:
    logging.info("compiling the train step")
    train_step, step_cost = compile_train_step(task, tx, schedule, config.seed, mesh, state,
                                               example)
    # A signal while it compiled (a minute on a TPU pod) ends the run here, with no step trained.
    last = ckpt.latest_step()
    guard.stop_if_requested(
        "while the train step compiled; no step was trained" + (
            f" (checkpoint step {last} is unchanged)" if last is not None else "")
        + ". Re-run the same command to resume")
    logging.info("train step compiled (%.1fs since start): %s", time.time() - clock.start,
                 profiling.describe_cost(step_cost))
    trace = profiling.StepTrace(os.path.join(workdir, "profile"), config.train.profile_steps)
    on_device, fetched = [], []   # (step, metrics) not yet fetched / fetched, not yet logged
    steps_timed, timing_started = 0, False
    it = train_iter(step)
    while step < total_steps:
      batch = sharding.to_global(next(it), mesh)
      with trace.annotate(step + 1):
        state, metrics = train_step(state, batch)
      step += 1
      on_device.append((step, metrics))
      if not timing_started:
        jax.block_until_ready(metrics)  # the first step includes compilation: not timed
        logging.info("first step (incl. compile) took %.1fs", time.time() - clock.start)
        timing_started = True
        clock.resume()
      else:
        steps_timed += 1
      if trace.step_done():      # writing the trace takes seconds: not train time
        jax.block_until_ready(metrics)
        clock.pause(steps_timed)
        steps_timed = 0
        trace.stop()
        clock.resume()
      # One read of the signal flag per step: a signal arriving later in this iteration is
      # honoured at the next step, never half (raised without the save).
      preempt = guard.stop_at(step)
      is_log = step % config.train.log_every_steps == 0 or step == total_steps
      epoch_done, epoch = step % steps_in_epoch == 0, step // steps_in_epoch
      is_eval = epoch_done and epoch % config.train.eval_every_epochs == 0 or step == total_steps
      is_save = preempt or ckpt.should_save(step)
      if is_log or is_save or is_eval:
        # The only host syncs: every log / eval / checkpoint, never every step.
        fetched += [(s, m) for s, m in zip([s for s, _ in on_device],
                                           jax.device_get([m for _, m in on_device]))]
        on_device = []
        clock.pause(steps_timed)
        steps_timed = 0
        _check_finite(fetched, ckpt)   # before any checkpoint of a broken state is written
      if is_log:
        means = {k: float(np.mean([m[k] for _, m in fetched])) for k in fetched[0][1]}
        ips = clock.steady_steps * batch_size / max(clock.steady_s, 1e-9)
        eta = (total_steps - step) * batch_size / ips if ips > 0 else None
        writer.write("train", step, {**means, "images_per_s": ips})
        logging.info("step %d/%d (epoch %d/%d) loss %.4f | %.1f img/s | ETA %s", step,
                     total_steps, -(-step // steps_in_epoch), config.train.num_epochs,
                     means["loss"], ips, _fmt_eta(eta))
        fetched = []
      saved = False
      if is_eval:
        if step == total_steps:
          # Committed before the final eval starts: a host lost during that eval (or a
          # preemption notice a multi-process job cannot act on inside an eval) costs the eval
          # alone; the rerun only evaluates.
          save()
          ckpt.wait()
          saved = True
        final_metrics = run_eval()
        preempt = preempt or guard.requested     # a signal during the eval counts now
      if (is_save or preempt) and not saved:
        save()
      if preempt:
        ckpt.wait()
        raise guard.preempted(step, total_steps, ckpt.directory)
      if is_log or is_save or is_eval:
        clock.resume()
    clock.pause(steps_timed)

  if final_metrics is None:
    final_metrics = run_eval()
  last = ckpt.latest_step()
  guard.stop_if_requested(
      f"during the eval at step {step}; " + (f"checkpoint step {last} is committed. Re-run the "
                                              f"same command to finish" if last is not None
                                              else "no checkpoint was written"))
  train_time_s = (float(state["train_time_s"]) if config.mode == "eval"
                  else prior_train_s + time.time() - clock.start)
  images_per_s = (clock.steady_steps * batch_size / clock.steady_s if clock.steady_s else None)
  training_figures = {"images_per_s": images_per_s, **step_cost}
  missing = [k for k, v in training_figures.items() if v is None]
  if missing and os.path.exists(os.path.join(workdir, "eval.json")):
    try:   # eval-only: keep the training figures of the eval.json this one replaces
      previous = files.read_json(os.path.join(workdir, "eval.json"))
      training_figures.update({k: previous.get(k) for k in missing})
    except (errors.WorkdirError, AttributeError) as e:
      logging.warning("previous eval.json unreadable, its %s are not kept: %s",
                      ", ".join(missing), e)
  result = {
      "variant": config.variant, "task": config.task, **final_metrics,
      "num_params": n_params, "num_eval_examples": len(eval_store), "step": step,
      "train_time_s": train_time_s, **training_figures,
      "num_devices": jax.device_count(),
      "skipped_train_examples": train_store.num_skipped,
      "skipped_eval_examples": eval_store.num_skipped,
      "config": json.loads(config.to_json_best_effort()),
  }
  # A run is finished when its final checkpoint is committed: only then eval.json, then the
  # pictures (a run killed before this line has no eval.json and resumes from that checkpoint).
  ckpt.wait()
  _write_json(os.path.join(workdir, "eval.json"), result)
  guard.stop_if_requested(f"after eval.json was written (step {step}); the pictures were not "
                          f"drawn: --config.mode=eval draws them")
  if process_index == 0:
    task.write_pictures(variables_of(state), eval_store, workdir,
                        jax.random.fold_in(jax.random.key(config.seed), 0x5EED))
    plotting.plot_curves(writer.path, os.path.join(workdir, "curves.png"),
                         eval_keys=task.curve_metrics)
    logging.info("wrote %s", os.path.join(workdir, "eval.json"))
  return result
