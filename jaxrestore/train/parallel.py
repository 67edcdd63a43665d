"""Data parallelism on a device mesh (``jax.sharding``; no ``pmap``).

:class:`DataParallel` is a 1-D :class:`~jax.sharding.Mesh` with one axis, ``data``, over the
devices a run uses. Parameters and optimizer state are *replicated* on it, each batch (images,
per-image operators) is *sharded* along its leading axis, and the trainers' jitted steps are
left as they are: ``jit`` sees the input shardings, splits the batch computation over the
devices and inserts the all-reduce of the gradient (a mean over the batch) itself. The
computation is the single-device one, so a run on N devices takes the same steps as on one, up
to the order of floating-point sums.

Batches are built on every process from ``(seed, step)`` (they are deterministic), and each
process hands its own devices their slices (:func:`jax.make_array_from_callback`), so the same
code runs on one host or several (:func:`initialize_distributed`).

With one device every method is the identity (the arrays stay uncommitted on the default
device, exactly as without this module).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

_DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize_distributed() -> bool:
    """Call :func:`jax.distributed.initialize` when the usual environment variables are set
    (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``; or a cluster JAX
    detects itself, such as SLURM, when ``JAXRESTORE_DISTRIBUTED=1``). Returns whether it did.
    Must run before anything touches a device; safe to call twice."""
    explicit = all(os.environ.get(k) for k in _DISTRIBUTED_ENV)
    if not explicit and os.environ.get("JAXRESTORE_DISTRIBUTED") != "1":
        return False
    if jax.distributed.is_initialized():
        return True
    if explicit:
        jax.distributed.initialize(coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
                                   num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                                   process_id=int(os.environ["JAX_PROCESS_ID"]))
    else:
        jax.distributed.initialize()
    return True


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """A ``data`` mesh over ``devices`` (all visible devices of every process by default)."""

    mesh: Mesh

    @classmethod
    def create(cls, devices: int | None = None, *, batch_size: int | None = None) -> "DataParallel":
        """The mesh over the first ``devices`` visible devices (``None``: all of them). The batch
        size must divide by the device count (each device gets an equal slice)."""
        available = jax.devices()
        n = len(available) if devices is None else int(devices)
        if n < 1:
            raise ValueError(f"the number of devices must be >= 1, got {n}")
        if n > len(available):
            raise ValueError(f"{n} devices requested but only {len(available)} are visible "
                             f"({available[0].platform}; on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N "
                             "makes N of them)")
        if jax.process_count() > 1 and n != len(available):
            raise ValueError(f"a multi-process run uses all {len(available)} devices of its processes, not {n}")
        if batch_size is not None and batch_size % n:
            raise ValueError(f"the batch size {batch_size} does not divide by the {n} devices of the data-parallel "
                             f"mesh; choose a batch size that is a multiple of {n}, or --devices D with D dividing it")
        return cls(Mesh(np.asarray(available[:n]), ("data",)))

    @property
    def size(self) -> int:
        return self.mesh.size

    @property
    def active(self) -> bool:
        """More than one device: placement matters."""
        return self.mesh.size > 1

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def batch_sharding(self) -> NamedSharding:
        return NamedSharding(self.mesh, P("data"))

    def _put(self, tree, sharding):
        def put(a):
            a = np.asarray(a) if not isinstance(a, jax.Array) or a.is_fully_addressable else a
            if isinstance(a, jax.Array):  # already global (a replicated value): reshard
                return jax.device_put(a, sharding)
            return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

        return jax.tree.map(put, tree)

    def replicate(self, tree):
        """Every leaf replicated on every device of the mesh (parameters, optimizer state)."""
        return self._put(tree, self.replicated) if self.active else tree

    def shard(self, tree):
        """Every leaf split along its leading (batch) axis over the mesh (images, batched
        operators). The leading axis must divide by the device count."""
        if not self.active:
            return jax.tree.map(lambda a: a if isinstance(a, jax.Array) else jax.numpy.asarray(a), tree)
        for a in jax.tree.leaves(tree):
            if np.ndim(a) == 0 or np.shape(a)[0] % self.size:
                raise ValueError(f"a batch of leading size {np.shape(a)[:1]} cannot be split over {self.size} devices")
        return self._put(tree, self.batch_sharding)

    @property
    def is_main(self) -> bool:
        """The process that writes logs, configs and exports (process 0)."""
        return jax.process_index() == 0

    def describe(self) -> str:
        devs = self.mesh.devices.ravel()
        where = f"{jax.process_count()} processes, " if jax.process_count() > 1 else ""
        return f"{where}{len(devs)} {devs[0].platform} device{'s' if len(devs) > 1 else ''}"


__all__ = ["DataParallel", "initialize_distributed"]
