"""Device meshes and sharding rules: where each array of a train state lives.

A mesh has two axes, ``data`` and ``model`` (``data x model`` devices):

- the batch is split over ``data`` (data parallel); with ``fsdp`` every parameter and its
  optimizer state is split over ``data`` too (fully sharded data parallel: each device keeps
  ``1 / data`` of them and XLA gathers a layer's weights when the step needs them);
- the dimensions a model names ``heads``, ``mlp`` or ``vocab`` are split over ``model``
  (tensor parallel: Megatron-style attention and MLP, see
  :mod:`jaxtrain.models.partitioning`).

:func:`param_spec` turns a parameter's logical names into a ``PartitionSpec`` by
:func:`logical_rules` (Flax's ``nn.logical_to_mesh_axes``), then, under FSDP, splits the
largest still-whole dimension that divides evenly over ``data`` (so models without
annotations, an MLP or a ResNet, are sharded too). A dimension that does not divide evenly by
its mesh axes stays whole. :func:`state_specs` lays out a whole train state: parameters by
their specs, every optimizer-state leaf that mirrors a parameter (Adam's moments) like that
parameter, everything else (step, counts, hyperparameters, BatchNorm statistics, the key)
replicated. The step itself never changes: ``jax.jit`` with these shardings partitions it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtrain.config import ConfigError
from jaxtrain.models.partitioning import EMBED, HEADS, MLP, VOCAB

DATA, MODEL = "data", "model"  # mesh axis names
LogicalAxes = Mapping[str, tuple[str | None, ...]]  # parameter path -> logical names


def logical_rules(fsdp: bool) -> tuple[tuple[str, str | None], ...]:
    """Logical axis -> mesh axis, in order of precedence (Flax's rule format): ``heads``,
    ``mlp`` and ``vocab`` over ``model``; ``embed`` over ``data`` under FSDP (MaxText's
    choice), whole otherwise. ``batch`` is the activations' leading axis."""
    return (
        ("batch", DATA),
        (HEADS, MODEL),
        (MLP, MODEL),
        (VOCAB, MODEL),
        (EMBED, DATA if fsdp else None),
    )


def make_mesh(data: int | None, model: int, devices: Sequence[Any] | None = None) -> Mesh:
    """A ``data x model`` mesh over ``devices`` (default: every device of every process, in
    ``jax.devices()`` order, so each process's devices are neighbours along ``model`` and
    then ``data``). ``data`` None: every device not used by ``model``. Raises ConfigError
    (naming ``train.parallel.mesh``) when the shape does not match the device count."""
    devices = list(jax.devices() if devices is None else devices)
    count = len(devices)
    if data is None:
        if count % model:
            raise ConfigError(
                f"train.parallel.mesh.model={model} does not divide the {count} devices"
            )
        data = count // model
    if data * model != count:
        raise ConfigError(
            f"train.parallel.mesh: data={data} x model={model} = {data * model} devices, but "
            f"{count} are visible; make the product {count} (or leave data unset)"
        )
    if jax.process_count() > 1 and jax.local_device_count() % model:
        raise ConfigError(
            f"train.parallel.mesh.model={model} must divide each process's "
            f"{jax.local_device_count()} devices (the model axis stays within a host)"
        )
    return Mesh(np.asarray(devices, dtype=object).reshape(data, model), (DATA, MODEL))


def param_spec(
    shape: Sequence[int],
    names: Sequence[str | None] | None,
    mesh_shape: Mapping[str, int],
    fsdp: bool,
) -> P:
    """The ``PartitionSpec`` of one parameter of ``shape`` with logical ``names`` (None:
    unannotated) on a mesh of ``mesh_shape`` (``{"data": d, "model": m}``)."""
    spec: list[Any] = [None] * len(shape)
    if names is not None and len(names) == len(shape):
        spec = list(nn.logical_to_mesh_axes(tuple(names), logical_rules(fsdp)))
    for i, axes in enumerate(spec):
        if axes is not None and shape[i] % _axis_size(axes, mesh_shape):
            spec[i] = None  # uneven: keep the dimension whole
    data = mesh_shape.get(DATA, 1)
    used = {a for axes in spec if axes is not None for a in _as_tuple(axes)}
    if fsdp and data > 1 and DATA not in used:
        free = [i for i, size in enumerate(shape) if spec[i] is None and size % data == 0]
        if free:
            spec[max(free, key=lambda i: (shape[i], -i))] = DATA
    while spec and spec[-1] is None:  # P("data", None) == P("data"): the short form
        spec.pop()
    return P(*spec)


def param_specs(params: Any, axes: LogicalAxes, mesh_shape: Mapping[str, int], fsdp: bool) -> Any:
    """A ``PartitionSpec`` per leaf of ``params`` (arrays or shape structs), by path."""

    def spec(path, leaf):
        names = axes.get(jax.tree_util.keystr(path))
        return param_spec(np.shape(leaf), names, mesh_shape, fsdp)

    return jax.tree_util.tree_map_with_path(spec, params)


def state_specs(state: Any, axes: LogicalAxes, mesh_shape: Mapping[str, int], fsdp: bool) -> Any:
    """A ``PartitionSpec`` per leaf of a train state (anything with ``params`` and
    ``opt_state``): parameters by :func:`param_specs`; an optimizer-state leaf whose path
    ends with a parameter's path and has its shape (Adam's ``mu``/``nu``, momentum) like that
    parameter; every other leaf replicated (``P()``). A tree without ``params`` is replicated
    whole."""
    if not (hasattr(state, "params") and hasattr(state, "opt_state")):
        return jax.tree.map(lambda _: P(), state)
    specs = param_specs(state.params, axes, mesh_shape, fsdp)
    by_path = {
        _key(path): (np.shape(leaf), spec)
        for (path, leaf), spec in zip(
            jax.tree_util.tree_leaves_with_path(state.params), jax.tree.leaves(specs), strict=True
        )
    }

    def mirrored(path, leaf):
        key, leaf_shape = _key(path), np.shape(leaf)
        for start in range(len(key)):
            found = by_path.get(key[start:])
            if found is not None and found[0] == leaf_shape:
                return found[1]
        return P()

    opt_specs = jax.tree_util.tree_map_with_path(mirrored, state.opt_state)
    replicated = jax.tree.map(lambda _: P(), state)
    return replicated.replace(params=specs, opt_state=opt_specs)


def shardings(specs: Any, mesh: Mesh) -> Any:
    """``NamedSharding(mesh, spec)`` for every ``PartitionSpec`` of ``specs``."""
    return jax.tree.map(
        lambda spec: NamedSharding(mesh, spec), specs, is_leaf=lambda x: isinstance(x, P)
    )


def bytes_per_device(tree: Any) -> dict[Any, int]:
    """``{device: bytes}`` that the arrays of ``tree`` hold on each device, read from their
    shardings (each addressable shard's size; a replicated array counts in full on every
    device)."""
    held: dict[Any, int] = {}
    for leaf in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        for shard in leaf.addressable_shards:
            size = math.prod(shard.data.shape) * leaf.dtype.itemsize
            held[shard.device] = held.get(shard.device, 0) + size
    return held


def _key(path: tuple) -> tuple[str, ...]:
    return tuple(str(entry) for entry in path)


def _as_tuple(axes: Any) -> tuple[str, ...]:
    return tuple(axes) if isinstance(axes, tuple | list) else (axes,)


def _axis_size(axes: Any, mesh_shape: Mapping[str, int]) -> int:
    return math.prod(mesh_shape.get(a, 1) for a in _as_tuple(axes))
