"""Where the step runs: one device, ``pmap`` replicas, or one ``jit`` over a device mesh.

A :class:`Placement` turns the one pure ``train_step`` (and the fused epoch built from it)
into a compiled program for its devices and moves states and batches to them. The loop only
ever calls ``placement.step(state, batch)``; checkpoints always hold the placement-free
state (``placement.host_state``), so a checkpoint of any placement restores into any other.

- ``none``: ``jax.jit`` on the default device.
- ``pmap``: ``jax.pmap`` over the local devices, axis ``"data"``; the state is replicated
  (a leading device axis), each batch arrives from the pipeline as
  ``[devices, batch / devices, ...]``, the step ``pmean``s gradients and metrics.
- ``sharded``: ``jax.jit`` over a 1-D ``Mesh`` of every device of every process, batch axis
  sharded (``P("data")``), parameters replicated (``P()``); XLA inserts the gradient
  all-reduce. Under ``jax.distributed`` each process passes only its rows of the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtrain.config import ConfigError

AXIS = "data"  # the data-parallel axis name (pmap axis, mesh axis)


@dataclass(frozen=True)
class Placement:
    """``kind`` is ``none``, ``pmap`` or ``sharded``; ``width`` the number of devices a
    global batch is split over (1 for ``none``)."""

    kind: str
    width: int
    mesh: Mesh | None = None

    @property
    def axis_name(self) -> str | None:
        """The collective axis the step itself must reduce over (``pmap`` only: under
        ``sharded`` the compiler partitions the global computation)."""
        return AXIS if self.kind == "pmap" else None

    @property
    def pmap_devices(self) -> int | None:
        """How many slices the pipeline lays each batch out in (``pmap`` only)."""
        return self.width if self.kind == "pmap" else None

    @property
    def process_shard(self) -> tuple[int, int]:
        """``(index, count)``: the slice of every global batch this process supplies."""
        if self.kind == "sharded":
            return jax.process_index(), jax.process_count()
        return 0, 1

    def check_batch(self, batch_size: int, key: str) -> None:
        """Raise ConfigError naming ``key`` unless ``batch_size`` splits evenly over devices."""
        if batch_size % self.width:
            raise ConfigError(
                f"{key}={batch_size} does not split evenly over the {self.width} devices of "
                f"train.parallel={self.kind}; use a multiple of {self.width}"
            )

    # -- compiled programs -------------------------------------------------------------
    def compile(self, fn: Callable, *, donate: bool = False) -> Callable:
        """``fn(state, batch_like...) -> (state, metrics)`` compiled for the placement: every
        argument after the state is split along its leading (batch) axis, or for a fused
        call ``(state, data, indices)``, along the indices' second axis."""
        donate_argnums = (0,) if donate else ()
        if self.kind == "pmap":
            return jax.pmap(fn, axis_name=AXIS, donate_argnums=donate_argnums)
        if self.kind == "sharded":
            replicated = NamedSharding(self.mesh, P())
            return jax.jit(fn, out_shardings=replicated, donate_argnums=donate_argnums)
        return jax.jit(fn, donate_argnums=donate_argnums)

    def compile_eval(self, fn: Callable) -> Callable:
        """``fn(state, batch) -> outputs`` for evaluation and prediction of a
        :meth:`host_state`: under ``pmap`` that is one device's copy, evaluated there; under
        ``sharded`` the batch is split over the mesh and the outputs come back replicated
        (readable by every process)."""
        if self.kind == "sharded":
            compiled = jax.jit(fn, out_shardings=NamedSharding(self.mesh, P()))
            return lambda state, batch: compiled(state, self.put_batch(batch, whole=True))
        return jax.jit(fn)

    # -- moving arrays -----------------------------------------------------------------
    def put_state(self, state: Any) -> Any:
        """A placement-free state (host or one device) laid out for the step."""
        if self.kind == "pmap":
            return _stack_replicas(state, self.width)
        if self.kind == "sharded":
            return _replicate_global(state, self.mesh)
        return state

    def host_state(self, state: Any) -> Any:
        """The state as checkpoints and evaluation want it: no device axis. (Under
        ``sharded`` the replicated global arrays themselves; Orbax writes each once.)"""
        return _first(state) if self.kind == "pmap" else state

    def put_batch(self, batch: Any, *, whole: bool = False) -> Any:
        """A host batch onto the devices: ``sharded`` splits it over the mesh; ``pmap``
        batches arrive from the pipeline already laid out. In a multi-process run a training
        batch holds only this process's rows; a ``whole`` batch (evaluation: the same on
        every process) is cut to this process's rows here."""
        if self.kind != "sharded":
            return batch
        index, count = self.process_shard

        def put(value):
            if whole and count > 1:
                rows = len(value) // count
                value = value[index * rows : (index + 1) * rows]
            return _put_local(value, NamedSharding(self.mesh, P(AXIS)))

        return jax.tree.map(put, batch)

    def put_indices(self, indices: np.ndarray) -> Any:
        """Index batches ``i32[steps, batch]`` for a fused call: split along the batch axis
        (``pmap``: ``[devices, steps, batch / devices]``)."""
        if self.kind == "pmap":
            steps, size = indices.shape
            return indices.reshape(steps, self.width, size // self.width).transpose(1, 0, 2)
        if self.kind == "sharded":
            return _put_local(indices, NamedSharding(self.mesh, P(None, AXIS)))
        return indices

    def put_replicated(self, arrays: Any) -> Any:
        """Arrays every device needs whole (the training split of a fused epoch)."""
        if self.kind == "pmap":
            return _stack_replicas(arrays, self.width)
        if self.kind == "sharded":
            return _replicate_global(arrays, self.mesh)
        return jax.device_put(arrays)

    def host_metrics(self, metrics: Any) -> Any:
        """Fetched metrics without the device axis (``pmap`` metrics are ``pmean``ed: equal
        on every device)."""
        fetched = jax.device_get(metrics)
        return jax.tree.map(lambda x: x[0], fetched) if self.kind == "pmap" else fetched


def build_placement(kind: str) -> Placement:
    """The placement named by ``train.parallel`` over every device visible (all processes'
    for ``sharded``, this process's for ``pmap``)."""
    if kind == "pmap":
        if jax.process_count() > 1:
            raise ConfigError(
                "train.parallel=pmap spans one process's devices; with distributed: use "
                "train.parallel=sharded"
            )
        return Placement("pmap", jax.local_device_count())
    if kind == "sharded":
        devices = np.asarray(jax.devices())
        return Placement("sharded", devices.size, Mesh(devices, (AXIS,)))
    if kind == "none":
        if jax.process_count() > 1:
            raise ConfigError(
                "train.parallel=none trains on one device; a multi-process run "
                "(distributed:) needs train.parallel=sharded"
            )
        return Placement("none", 1)
    raise ConfigError(f"train.parallel: unknown placement {kind!r} (none, pmap or sharded)")


def _put_local(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """This process's part of a global array sharded by ``sharding`` (one process: all of it)."""
    if jax.process_count() == 1:
        return jax.device_put(value, sharding)
    return jax.make_array_from_process_local_data(sharding, value)


def _first(tree: Any) -> Any:
    """The first replica of every leaf of a pmap-replicated tree."""
    return jax.tree.map(lambda x: x[0], tree)


def _stack_replicas(tree: Any, width: int) -> Any:
    """One copy of every leaf per local device, stacked on a leading device axis (pmap's
    replicated layout)."""
    mesh = Mesh(np.asarray(jax.local_devices()[:width]), (AXIS,))
    sharding = NamedSharding(mesh, P(AXIS))
    return jax.tree.map(
        lambda leaf: jax.device_put(jnp.broadcast_to(leaf, (width, *jnp.shape(leaf))), sharding),
        tree,
    )


def _replicate_global(tree: Any, mesh: Mesh) -> Any:
    """``tree`` (the same values on every process) as arrays replicated over ``mesh``."""
    sharding = NamedSharding(mesh, P())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def replicate(leaf):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            data = replicate(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        host = np.asarray(jax.device_get(leaf))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(replicate, tree)
