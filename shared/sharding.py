"""Data parallelism over every device: one `data` mesh axis, batch split on it, state replicated.

The same code runs on one CPU, on 8 simulated CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), on a TPU VM and on a multi-host slice,
where each process feeds only its local share of the global batch.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
  """Joins a multi-process run (TPU pod slice, multi-host GPU) when the environment says so.

  On a Cloud TPU VM slice with more than one host, `jax.distributed.initialize()` discovers the
  peers by itself; elsewhere it is skipped unless the standard coordinator variables are set.
  """
  import os  # pylint: disable=g-import-not-at-top
  multi_host_tpu = os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0
  if multi_host_tpu or os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()


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

