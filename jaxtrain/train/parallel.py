"""Where the step runs: one device, ``pmap`` replicas, or one ``jit`` over a device mesh.

A :class:`Placement` turns the one pure ``train_step`` (and the fused epoch built from it)
into a compiled program for its devices and moves states and batches to them. The loop only
ever calls the placement's compiled step; checkpoints always hold the placement-free state
(``placement.host_state``: no device axis; sharded arrays, which Orbax writes as one array
each), and a restore reads them back into one device's layout before ``put_state`` lays them
out, so a checkpoint of any placement restores into any other.

- ``none``: ``jax.jit`` on the default device.
- ``sharded`` (the default multi-device path): ``jax.jit`` with shardings over a
  ``data x model`` :class:`~jax.sharding.Mesh` of every device of every process
  (:mod:`jaxtrain.train.mesh`): the batch split over ``data``; parameters and optimizer
  state replicated, or under ``fsdp`` split over ``data`` too; the Transformer's heads, MLP
  and vocabulary split over ``model`` (tensor parallel). XLA partitions the one global step
  and inserts the collectives. Under ``jax.distributed`` each process passes only its rows
  of the batch.
- ``pmap``: ``jax.pmap`` over the local devices, axis ``"data"``; the state is replicated
  (a leading device axis), each batch arrives from the pipeline as
  ``[devices, batch / devices, ...]``, the step ``pmean``s gradients and metrics. Kept as a
  thin placement of the same step (the toolkit promises pmapped steps); current JAX builds
  ``pmap`` on the same machinery as ``sharded``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtrain.config import ConfigError
from jaxtrain.models.partitioning import logical_axes
from jaxtrain.train import mesh as meshes

AXIS = meshes.DATA  # the data-parallel axis name (pmap axis, mesh axis)
KINDS = ("none", "pmap", "sharded", "fsdp")  # the string forms of train.parallel


@dataclass(frozen=True)
class Placement:
    """``kind`` is ``none``, ``pmap`` or ``sharded``; ``width`` the number of devices a
    global batch is split over (1 for ``none``; the ``data`` axis of a ``sharded`` mesh).
    ``sharded`` only: ``mesh`` (axes ``data``, ``model``), ``fsdp`` (parameters and
    optimizer state split over ``data``) and ``axes``, the parameters' logical axis names by
    path (:func:`jaxtrain.models.partitioning.logical_axes`; absent ones follow the FSDP
    fallback of :func:`jaxtrain.train.mesh.param_spec`)."""

    kind: str
    width: int
    mesh: Mesh | None = None
    fsdp: bool = False
    axes: Mapping[str, tuple[str | None, ...]] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What ``metrics.json`` records of the placement."""
        described: dict[str, Any] = {"placement": self.kind, "devices": self.width}
        if self.kind == "sharded":
            described["devices"] = self.mesh.size
            described["mesh"] = dict(self.mesh.shape)
            described["fsdp"] = self.fsdp
        return described

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
            over = f"the {self.width} devices of train.parallel={self.kind}"
            if self.kind == "sharded":
                over = f"the mesh's data axis of {self.width} devices (train.parallel)"
            raise ConfigError(
                f"{key}={batch_size} does not split evenly over {over}; use a multiple of "
                f"{self.width}"
            )

    # -- layouts -----------------------------------------------------------------------
    def state_shardings(self, state: Any) -> Any:
        """``NamedSharding`` per leaf of ``state`` (``sharded`` only): see
        :func:`jaxtrain.train.mesh.state_specs`."""
        specs = meshes.state_specs(state, self.axes, dict(self.mesh.shape), self.fsdp)
        return meshes.shardings(specs, self.mesh)

    # -- compiled programs -------------------------------------------------------------
    def compile(self, fn: Callable, *, donate: bool = False) -> Callable:
        """``fn(state, batch_like...) -> (state, metrics)`` compiled for the placement: every
        argument after the state is split along its leading (batch) axis, or for a fused
        call ``(state, data, indices)``, along the indices' second axis."""
        donate_argnums = (0,) if donate else ()
        if self.kind == "pmap":
            return jax.pmap(fn, axis_name=AXIS, donate_argnums=donate_argnums)
        if self.kind == "sharded":
            return _ShardedCall(fn, self, donate_argnums)
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
            return _put_global(state, self.state_shardings(state))
        # Committed to the device it is on: a state restored from a checkpoint is committed,
        # and an uncommitted one would compile every step again for it (evaluation too).
        return jax.tree.map(_committed, state)

    def host_state(self, state: Any) -> Any:
        """The state as checkpoints and evaluation want it: no device axis. (Under
        ``sharded`` the global arrays themselves, replicated or sharded: Orbax writes each
        array once, whatever its layout, and restores it into any other. With several
        processes, sharded arrays are gathered first, replicated, so that every process can
        read them: checkpoint digests, evaluation, the returned state.)"""
        if self.kind == "pmap":
            return _first(state)
        if self.kind == "sharded" and jax.process_count() > 1:
            replicated = NamedSharding(self.mesh, P())
            if not all(x.sharding.is_fully_replicated for x in jax.tree.leaves(state)):
                gather = jax.jit(lambda tree: tree, out_shardings=replicated)
                return gather(state)
        return state

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
            replicated = NamedSharding(self.mesh, P())
            return _put_global(arrays, jax.tree.map(lambda _: replicated, arrays))
        return jax.device_put(arrays)

    def host_metrics(self, metrics: Any) -> Any:
        """Fetched metrics without the device axis (``pmap`` metrics are ``pmean``ed: equal
        on every device)."""
        fetched = jax.device_get(metrics)
        return jax.tree.map(lambda x: x[0], fetched) if self.kind == "pmap" else fetched


def build_placement(parallel: Any, pieces: Any = None) -> Placement:
    """The placement ``train.parallel`` names, over every device visible (all processes'
    for a mesh, this process's for ``pmap``).

    ``parallel`` is ``none``, ``pmap``, ``sharded`` (a mesh of every device on ``data``),
    ``fsdp`` (the same with parameters and optimizer state split over ``data``) or a
    :class:`~jaxtrain.config.schema.ParallelConfig` (``mesh: {data, model}``, ``fsdp``).
    ``pieces`` (:class:`~jaxtrain.train.pieces.Pieces`) gives the model whose logical axis
    annotations place its parameters on the ``model`` axis; without it every parameter
    follows the FSDP fallback (split over ``data`` under FSDP, replicated otherwise)."""
    if isinstance(parallel, str) and parallel not in KINDS:
        raise ConfigError(
            f"train.parallel: unknown placement {parallel!r} (none, pmap, sharded, fsdp or "
            "{mesh: {data: D, model: M}, fsdp: true|false})"
        )
    if parallel == "pmap":
        if jax.process_count() > 1:
            raise ConfigError(
                "train.parallel=pmap spans one process's devices; with distributed: use "
                "train.parallel=sharded"
            )
        return Placement("pmap", jax.local_device_count())
    if parallel == "none":
        if jax.process_count() > 1:
            raise ConfigError(
                "train.parallel=none trains on one device; a multi-process run "
                "(distributed:) needs train.parallel=sharded"
            )
        return Placement("none", 1)
    if isinstance(parallel, str):  # sharded, fsdp: every device on the data axis
        data, model, fsdp = None, 1, parallel == "fsdp"
    else:
        data, model, fsdp = parallel.mesh.data, parallel.mesh.model, parallel.fsdp
    mesh = meshes.make_mesh(data, model)
    axes = {} if pieces is None else _model_axes(pieces)
    return Placement("sharded", mesh.shape[meshes.DATA], mesh, fsdp, axes)


def check_placement(config: Any, source: object = "config") -> None:
    """Raise ConfigError naming ``source`` when ``config.train.parallel`` cannot be laid out
    on the visible devices or a batch size does not split over them: before a run starts, so
    a run directory is never left half made (the loop checks again, with the model)."""
    try:
        placement = build_placement(config.train.parallel)
        placement.check_batch(config.data.batch_size, "data.batch_size")
        placement.check_batch(config.data.eval_batch_size, "data.eval_batch_size")
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _model_axes(pieces: Any) -> dict[str, tuple[str | None, ...]]:
    """The logical axis names of ``pieces.model``'s parameters (see
    :func:`jaxtrain.models.partitioning.logical_axes`)."""
    train = pieces.data.splits["train"]
    return logical_axes(pieces.model, pieces.data.input_shape, train.inputs.dtype)


class _ShardedCall:
    """``jax.jit(fn)`` over a mesh with the state's output laid out as its input was (so an
    FSDP state stays sharded step after step) and every other output replicated; compiled
    on the first call, when the state's structure is known."""

    def __init__(self, fn: Callable, placement: Placement, donate_argnums: tuple[int, ...]):
        self.fn, self.placement, self.donate_argnums = fn, placement, donate_argnums
        self.compiled: Callable | None = None

    def jitted(self, state: Any) -> Callable:
        """The ``jax.jit`` of ``fn`` for states shaped like ``state``."""
        if self.compiled is None:
            replicated = NamedSharding(self.placement.mesh, P())
            self.compiled = jax.jit(
                self.fn,
                out_shardings=(self.placement.state_shardings(state), replicated),
                donate_argnums=self.donate_argnums,
            )
        return self.compiled

    def __call__(self, state: Any, *args: Any) -> Any:
        return self.jitted(state)(state, *args)

    def lower(self, state: Any, *args: Any) -> Any:
        """The lowered program (cost analysis, tests), as ``jax.jit(...).lower``."""
        return self.jitted(state).lower(state, *args)


def _put_local(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """This process's part of a global array sharded by ``sharding`` (one process: all of it)."""
    if jax.process_count() == 1:
        return jax.device_put(value, sharding)
    return jax.make_array_from_process_local_data(sharding, value)


def _first(tree: Any) -> Any:
    """The first replica of every leaf of a pmap-replicated tree."""
    return jax.tree.map(lambda x: x[0], tree)


def _committed(leaf: Any) -> Any:
    if isinstance(leaf, jax.Array) and not leaf.committed:
        (device,) = leaf.devices()
        return jax.device_put(leaf, device)
    return leaf


def _stack_replicas(tree: Any, width: int) -> Any:
    """One copy of every leaf per local device, stacked on a leading device axis (pmap's
    replicated layout)."""
    mesh = Mesh(np.asarray(jax.local_devices()[:width]), (AXIS,))
    sharding = NamedSharding(mesh, P(AXIS))
    return jax.tree.map(
        lambda leaf: jax.device_put(jnp.broadcast_to(leaf, (width, *jnp.shape(leaf))), sharding),
        tree,
    )


def _put_global(tree: Any, shardings: Any) -> Any:
    """``tree`` (the same values on every process) as global arrays laid out by
    ``shardings`` (one ``NamedSharding`` per leaf)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def put(leaf, sharding):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            data = put(jax.random.key_data(leaf), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        host = np.asarray(jax.device_get(leaf))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree, shardings)
