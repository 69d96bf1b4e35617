"""Data parallelism on JAX's own engine: ``jax.sharding`` meshes under ``jit``, ``jax.distributed``.

A mesh with one axis named ``"data"`` spans the devices. ``fit`` and ``make_train_step`` shard
every minibatch's rows across that axis and replicate the parameters and optimizer state, so
XLA's SPMD partitioner inserts the gradient all-reduce itself (the ``a_prev^T dz`` contraction
runs over a sharded batch axis). ``fit_ensemble`` can shard the member axis instead.

Several processes (hosts) run the same program: each calls :func:`initialize`, holds the same
data set, and draws the same global permutation from the shared key; each process's devices
compute their rows of every global batch, so the result equals a single-process run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
ENV_COORDINATOR = "JAXMLP_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAXMLP_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXMLP_PROCESS_ID"


def data_parallel_mesh(devices: Sequence[Any] | None = None, *, axis_name: str = DATA_AXIS) -> Mesh:
    """A one-axis mesh over ``devices`` (default: every device of every process, ``jax.devices()``)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices: need at least one device")
    return Mesh(np.array(devices), (axis_name,))


def check_mesh(mesh: Any, batch_size: int | None = None, argname: str = "mesh") -> int:
    """Checks ``mesh`` has a ``"data"`` axis; returns its size.

    Raises:
        TypeError: ``mesh`` is not a ``jax.sharding.Mesh``.
        ValueError: no ``"data"`` axis, or ``batch_size`` does not divide across it (we raise
            rather than pad: padding would change the per-device shapes every call).
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{argname}: expected a jax.sharding.Mesh, got {type(mesh).__name__}")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(
            f"{argname}: needs an axis named {DATA_AXIS!r}, got axes {mesh.axis_names}"
        )
    size = mesh.shape[DATA_AXIS]
    if batch_size is not None and batch_size % size:
        raise ValueError(
            f"batch_size: {batch_size} rows do not divide across the {size} devices of the mesh's "
            f"{DATA_AXIS!r} axis; use a multiple of {size}"
        )
    return size


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def sharded(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """Axis ``axis`` split across the mesh's ``"data"`` axis."""
    return NamedSharding(mesh, P(*([None] * axis), DATA_AXIS))


def put(tree: Any, sharding: NamedSharding) -> Any:
    """Places every leaf with ``sharding``; works across processes when all hold the same values."""

    def one(leaf):
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(
                one(jax.random.key_data(leaf)), impl=jax.random.key_impl(leaf)
            )
        host = np.asarray(local(leaf))
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(one, tree)


def local(leaf: Any) -> Any:
    """A fully addressable copy of a replicated array (this process's first shard)."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return leaf.addressable_data(0)
    return leaf


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins a multi-process run (``jax.distributed.initialize``).

    Arguments default to the environment variables ``JAXMLP_COORDINATOR_ADDRESS`` (host:port of
    process 0), ``JAXMLP_NUM_PROCESSES`` and ``JAXMLP_PROCESS_ID``; with none of them set, JAX's
    own cluster detection (SLURM, TPU pods, ...) decides. Call it before anything touches a device.
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
    if num_processes is None and ENV_NUM_PROCESSES in os.environ:
        num_processes = int(os.environ[ENV_NUM_PROCESSES])
    if process_id is None and ENV_PROCESS_ID in os.environ:
        process_id = int(os.environ[ENV_PROCESS_ID])
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes: must be >= 1, got {num_processes}")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id: must lie in [0, {num_processes}), got {process_id}")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
