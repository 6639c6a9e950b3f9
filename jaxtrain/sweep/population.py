"""A population: a ``TrainState`` with a leading member axis, and the pure programs over it.

Every function here is a transformation of the ordinary steps (``make_train_step``,
``make_eval_step``): ``jax.vmap`` over members around a ``lax.scan`` over steps. Each member
draws its batches from its own data order (``orders[data_index[m]]``), so members that differ
in ``data.seed`` see exactly the batches their standalone runs would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxtrain.data import ArraySplit, eval_batches, train_batches
from jaxtrain.train.optim import find_hyperparams, replace_hyperparams
from jaxtrain.train.scan import scan_steps
from jaxtrain.train.state import TrainState, make_init

AXIS = "members"


def init_population(
    model: Any,
    tx: optax.GradientTransformation,
    input_shape: Sequence[int],
    seeds: np.ndarray,
    input_dtype: Any = jnp.float32,
) -> TrainState:
    """K initial states (leading axis K) from ``seeds`` i64[K]: member k equals
    ``create_train_state(model, tx, input_shape, seeds[k], input_dtype)``."""
    return population_init(model, tx, input_shape, input_dtype)(seeds)


def population_init(
    model: Any,
    tx: optax.GradientTransformation,
    input_shape: Sequence[int],
    input_dtype: Any = jnp.float32,
) -> Callable[[np.ndarray], TrainState]:
    """``init(seeds) -> population``: :func:`init_population` compiled once, for any K."""
    init = make_init(model, tx, input_shape, input_dtype)
    compiled = jax.jit(jax.vmap(lambda seed: init(jax.random.key(seed))))
    return lambda seeds: compiled(jnp.asarray(seeds))


def hyperparams(state: TrainState) -> dict[str, jax.Array]:
    """The optimizer-state settings ``{name: f32[K]}`` (see ``jaxtrain.train.optim``; a plain
    optax optimizer's are those ``optax.inject_hyperparams`` exposes, else none)."""
    return find_hyperparams(state.opt_state) or {}


def with_hyperparams(state: TrainState, values: dict[str, Any]) -> TrainState:
    """``state`` with optimizer-state entries replaced by per-member ``values`` f32[K], named
    as the state names them (``learning_rate`` is the peak of jaxtrain's own optimizers; an
    ``optax.inject_hyperparams`` state's own names otherwise). ValueError for a name the state
    does not have."""
    return state.replace(opt_state=replace_hyperparams(state.opt_state, values))


def take(tree: Any, indices: Sequence[int] | np.ndarray) -> Any:
    """Members ``indices`` of every leaf (compacts a population or copies members)."""
    indices = jnp.asarray(np.asarray(indices, np.int32))
    return jax.tree.map(lambda x: x[indices], tree)


def member(tree: Any, index: int) -> Any:
    """One member's slice (no leading axis), fetched to the host."""
    if jax.process_count() > 1:  # gathered whole: a slice of a global array may sit elsewhere
        return jax.tree.map(lambda x: x[index], fetch(tree))
    return jax.device_get(jax.tree.map(lambda x: x[index], tree))


# ---------------------------------------------------------------------------------------------
# data on the device


def train_orders(n: int, batch_size: int, epochs: int, seeds: Sequence[int]) -> np.ndarray:
    """i32[len(seeds), steps, batch_size]: the example indices of every training batch, for
    each data seed, taken from the same grain pipeline as ``train_batches``."""
    indices = ArraySplit(np.arange(n), np.arange(n))
    return np.stack(
        [
            np.stack([b["inputs"] for b in train_batches(indices, batch_size, epochs, seed)])
            for seed in seeds
        ]
    ).astype(np.int32)


def eval_arrays(splits: Sequence[ArraySplit], batch_size: int) -> dict[str, np.ndarray]:
    """Padded evaluation batches of each split stacked: ``[D, batches, batch_size, ...]``."""
    per_split = [list(eval_batches(split, batch_size)) for split in splits]
    return {
        key: np.stack([np.stack([b[key] for b in batches]) for batches in per_split])
        for key in per_split[0][0]
    }


# ---------------------------------------------------------------------------------------------
# programs


def make_population_train(
    train_step: Callable[[TrainState, dict], tuple[TrainState, dict]], length: int
) -> Callable:
    """``run(states, data_index, first, data) -> (states, metrics)``: ``length`` steps of every
    member in one program: a ``vmap`` over members of :func:`jaxtrain.train.scan.scan_steps`,
    batches gathered on the device.

    states: a population [K]; data_index: i32[K] (which dataset each member trains on);
    first: i32[] the step the chunk starts at; data: ``inputs`` [D, n, ...], ``labels``
    [D, n, ...], optionally ``weights`` f32[D, n], and ``orders`` i32[D, steps, batch].
    metrics: {name: f32[K, length]}.
    """

    def member_run(state, data_index, first, data):
        examples = {k: v.reshape(-1, *v.shape[2:]) for k, v in data.items() if k != "orders"}
        n = data["labels"].shape[1]
        # Rows of the member's own dataset, as rows of all datasets laid end to end: one
        # gather per step, no per-member copy of the data.
        own = jax.lax.dynamic_slice_in_dim(data["orders"][data_index], first, length, axis=0)
        return scan_steps(train_step, state, examples, {"rows": own + data_index * n})

    return jax.jit(jax.vmap(member_run, in_axes=(0, 0, None, None)), donate_argnums=0)


def make_population_eval(eval_step: Callable[[TrainState, dict], dict]) -> Callable:
    """``run(states, data_index, batches) -> sums {name: [K, ...]}`` over a whole split, per
    member; batches: ``eval_arrays`` output (each member reads its own dataset's split)."""

    def member_eval(state, data_index, batches):
        own = jax.tree.map(lambda x: x[data_index], batches)

        def body(totals, batch):
            sums = eval_step(state, batch)
            return jax.tree.map(jnp.add, totals, sums), None

        first = eval_step(state, jax.tree.map(lambda x: x[0], own))
        rest = jax.tree.map(lambda x: x[1:], own)
        totals, _ = jax.lax.scan(body, first, rest)
        return totals

    return jax.jit(jax.vmap(member_eval, in_axes=(0, 0, None)))


# ---------------------------------------------------------------------------------------------
# devices


def member_mesh(population: int, devices: int | None = None, available=None) -> Mesh:
    """A 1-D mesh over the most devices (at most ``devices``, from ``available``, default
    all) that divide ``population``.

    In a multi-process job (``distributed:``) the mesh spans every process's devices and the
    population is padded to a multiple of their count (:func:`padded`), so every process
    trains its share of the members."""
    available = list(available) if available is not None else jax.devices()
    if jax.process_count() > 1:
        return Mesh(np.asarray(available), (AXIS,))
    limit = min(len(available), devices or len(available), population)
    count = max(d for d in range(1, limit + 1) if population % d == 0)
    return Mesh(np.asarray(available[:count]), (AXIS,))


def padded(population: int, mesh: Mesh) -> int:
    """Rows of a population of ``population`` members laid out over ``mesh``: the next
    multiple of its size (the extra rows repeat the last member and are never read)."""
    return -(-population // mesh.size) * mesh.size


def shard_members(tree: Any, mesh: Mesh) -> Any:
    """Every leaf split along its leading (member) axis over the mesh (every leaf's leading
    axis a multiple of the mesh size)."""
    return _put(tree, NamedSharding(mesh, PartitionSpec(AXIS)))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every leaf copied to each device of the mesh (data shared by all members)."""
    return _put(tree, NamedSharding(mesh, PartitionSpec()))


def fetch(tree: Any) -> Any:
    """A host copy of ``tree`` readable on every process (typed PRNG keys stay key arrays
    on this process's device); in a multi-process job sharded leaves are gathered first."""
    if jax.process_count() == 1:
        return jax.device_get(tree)

    def get(leaf):
        if _is_key(leaf):
            data = jnp.asarray(get(jax.random.key_data(leaf)))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        return _host(leaf)

    return jax.tree.map(get, tree)


def _is_key(leaf: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


def _host(leaf: Any) -> np.ndarray:
    """One leaf as a numpy array, gathered over processes when it is sharded across them."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(jax.device_get(leaf))


def _put(tree: Any, sharding: NamedSharding) -> Any:
    """``tree`` laid out by ``sharding``; across processes from a host copy (the same values
    on every process), as ``jax.make_array_from_callback`` builds global arrays."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(leaf):
        if _is_key(leaf):
            data = put(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        host = _host(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)
