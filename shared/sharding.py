"""Data parallelism over every device: one `data` mesh axis, batch split on it, state replicated.

The same code runs on one CPU, on 8 simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), on a TPU VM and on a multi-host slice,
where each process feeds only its local share of the global batch.
"""

from __future__ import annotations

import os

from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from shared import errors

DATA_AXIS = "data"


# The environment of one process of a multi-process job (documented in README.md, set by
# tools/local_hosts.py). jax.distributed.initialize reads only the coordinator address from the
# environment; the count, the id and the heartbeat timeout are ours.
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_HEARTBEAT_TIMEOUT = "JAX_HEARTBEAT_TIMEOUT_SECONDS"


def _env_int(environ, name: str, minimum: int) -> int | None:
  value = environ.get(name, "").strip()
  if not value:
    return None
  try:
    number = int(value)
  except ValueError:
    number = None
  if number is None or number < minimum:
    raise errors.ConfigError(f"{name}={value!r}: must be an integer >= {minimum}")
  return number


def distributed_settings(environ=None) -> dict | None:
  """The `jax.distributed.initialize` arguments this process's environment asks for, or None
  for a single-process run.

  A Cloud TPU VM slice with several hosts (TPU_WORKER_HOSTNAMES lists more than one) is joined
  with JAX's own discovery. Elsewhere JAX_COORDINATOR_ADDRESS=host:port (of process 0) makes
  this process one of JAX_NUM_PROCESSES, number JAX_PROCESS_ID; both may be left unset where
  JAX's cluster detection knows them (SLURM, Open MPI), but not just one of them.
  JAX_HEARTBEAT_TIMEOUT_SECONDS (JAX's default 100) bounds how long the survivors of a lost
  process keep waiting for it before they abort.
  Raises ConfigError naming the variable when a value is malformed or inconsistent.
  """
  environ = os.environ if environ is None else environ
  multi_host_tpu = environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0
  address = environ.get(ENV_COORDINATOR, "").strip()
  count = _env_int(environ, ENV_NUM_PROCESSES, 1)
  index = _env_int(environ, ENV_PROCESS_ID, 0)
  heartbeat = _env_int(environ, ENV_HEARTBEAT_TIMEOUT, 1)
  if (count is None) != (index is None):
    given, missing = ((ENV_NUM_PROCESSES, ENV_PROCESS_ID) if index is None
                      else (ENV_PROCESS_ID, ENV_NUM_PROCESSES))
    raise errors.ConfigError(f"{given} is set but {missing} is not; set both (or neither, to "
                             f"let JAX detect them)")
  if count is not None and index >= count:
    raise errors.ConfigError(f"{ENV_PROCESS_ID}={index} with {ENV_NUM_PROCESSES}={count}: the "
                             f"id must be in 0..{count - 1}")
  if count is not None and not address and not multi_host_tpu:
    raise errors.ConfigError(f"{ENV_NUM_PROCESSES}={count} needs {ENV_COORDINATOR}=HOST:PORT "
                             f"of process 0 (the same on every process)")
  if address and (":" not in address or not address.rsplit(":", 1)[1].isdigit()):
    raise errors.ConfigError(f"{ENV_COORDINATOR}={address!r}: expected HOST:PORT of process 0")
  if not (multi_host_tpu or address):
    return None
  settings = {}
  if address:
    settings["coordinator_address"] = address
  if count is not None:
    settings.update(num_processes=count, process_id=index)
  if heartbeat is not None:
    settings["heartbeat_timeout_seconds"] = heartbeat
  return settings


def maybe_initialize_distributed(environ=None) -> None:
  """Joins a multi-process job (TPU pod slice, several GPU hosts, or processes on one CPU
  machine) when the environment says so (`distributed_settings`); a no-op otherwise.

  Must run before JAX's first computation. On CPU, the processes' devices talk through gloo
  (TCP): XLA:CPU has no cross-process collectives of its own, so without it the first train
  step of a multi-process CPU job fails (jax 0.10.2 defaults to gloo; set here so that a change
  of default cannot break it). A user's JAX_CPU_COLLECTIVES_IMPLEMENTATION wins.
  Raises ConfigError for a malformed environment, HostsError when the job cannot be joined.
  """
  settings = distributed_settings(environ)
  if settings is None:
    return
  if not os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**settings)
  except Exception as e:  # pylint: disable=broad-except  (jaxlib raises its own types)
    where = settings.get("coordinator_address", "the TPU slice's coordinator")
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise errors.HostsError(
        f"could not join the multi-process job at {where} as process "
        f"{settings.get('process_id', '?')} of {settings.get('num_processes', '?')}: {first} "
        f"(is process 0 running, and the address reachable from here?)") from e
  logging.info("process %d of %d: %d local device(s) of %d", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This host's numpy batch -> global jax arrays sharded over the `data` axis."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}

