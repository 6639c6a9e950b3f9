"""Sweep your own training from Python: a population as one vmapped program.

Two doors, both a ``jax.vmap`` over members of the ordinary pieces:

- :func:`vmap_sweep`: your own pure ``train(settings, key) -> result`` (purejaxrl's shape),
  run for every member at once, ``jax.jit(jax.vmap(train))``, members split over devices;
- :func:`train_population` (behind :func:`jaxtrain.sweep_model`): a model, an optax
  transformation and data, member *k* training with its own optimizer settings (any
  hyperparameter ``optax.inject_hyperparams`` exposes, by optax's name) and seed, with the
  same step (:func:`jaxtrain.train.step.make_train_step`), the same scan
  (:func:`jaxtrain.train.scan.scan_steps`) and the same data order as a standalone run.

:func:`grid` makes the settings of a grid search.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.sweep import population as pop
from jaxtrain.train.evaluate import scalars


def grid(axes: Mapping[str, Sequence[Any]] | None = None, **more: Sequence[Any]) -> dict:
    """Every combination of the values of ``axes`` (and keyword axes), as columns:
    ``grid(learning_rate=[1e-3, 1e-2], b1=[0.8, 0.9])`` -> ``{"learning_rate": f32[4],
    "b1": f32[4]}`` (the first axis varies slowest)."""
    axes = {**(axes or {}), **more}
    if not axes or any(len(values) == 0 for values in axes.values()):
        raise ValueError("grid: give every axis at least one value")
    rows = list(itertools.product(*axes.values()))
    return {name: np.asarray([row[i] for row in rows], np.float32) for i, name in enumerate(axes)}


def members_of(settings: Mapping[str, Any]) -> int:
    """The population size K of ``settings`` (columns of equal length K)."""
    sizes = {name: int(np.shape(values)[0]) if np.ndim(values) else -1
             for name, values in settings.items()}  # fmt: skip
    if not sizes or len(set(sizes.values())) != 1 or -1 in sizes.values():
        raise ValueError(f"settings: columns of one value per member expected, got lengths {sizes}")
    return next(iter(sizes.values()))


def _keys(seeds: int | Sequence[int], size: int) -> jax.Array:
    seeds = np.full(size, seeds) if np.ndim(seeds) == 0 else np.asarray(seeds)
    if seeds.shape != (size,):
        raise ValueError(f"seeds: one per member expected ({size}), got {seeds.shape}")
    return jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))


def vmap_sweep(
    train: Callable[[dict[str, jax.Array], jax.Array], Any],
    settings: Mapping[str, Any],
    seeds: int | Sequence[int] = 0,
    *,
    devices: int | None = None,
) -> Any:
    """``train(settings, key)`` for every member at once: ``jax.jit(jax.vmap(train))``.

    ``train`` must be pure and traceable (a ``make_train(config)``-style closure over the
    static parts). ``settings``: ``{name: [K] values}`` (e.g. :func:`grid`); member *k* gets
    ``{name: values[k]}`` (f32[] scalars) and ``jax.random.key(seeds[k])`` (one int: the same
    seed for all). Members are split over up to ``devices`` devices (the most that divide
    K). Returns ``train``'s result with a leading member axis K."""
    size = members_of(settings)
    columns = {name: jnp.asarray(values) for name, values in settings.items()}
    keys = _keys(seeds, size)
    mesh = pop.member_mesh(size, devices)
    columns, keys = pop.shard_members((columns, keys), mesh)
    return jax.jit(jax.vmap(train))(columns, keys)


@dataclass(frozen=True)
class PopulationResult:
    """What :func:`train_population` trained: ``settings`` (columns [K]), ``seeds`` [K], the
    final ``state`` (a TrainState with a leading member axis), each member's ``validation``
    metrics, the ``monitor`` (metric, "min"/"max") that ranks them and the ``best`` member."""

    settings: dict[str, np.ndarray]
    seeds: np.ndarray
    state: Any
    validation: list[dict[str, float]]
    monitor: tuple[str, str]

    @property
    def best(self) -> int:
        metric, mode = self.monitor
        values = [m[metric] for m in self.validation]
        return int(np.argmax(values) if mode == "max" else np.argmin(values))

    def member(self, index: int) -> Any:
        """Member ``index``'s final state (no member axis), on the host."""
        return pop.member(self.state, index)


def train_population(
    train_step: Callable,
    eval_step: Callable,
    init: Callable[[jax.Array], Any],
    train_split: Any,
    validation_split: Any,
    settings: Mapping[str, Any],
    seeds: int | Sequence[int],
    *,
    epochs: int,
    batch_size: int,
    eval_batch_size: int,
    data_seed: int,
    task: Any,
    monitor: tuple[str, str],
    devices: int | None = None,
) -> PopulationResult:
    """Train K members in one program: states from ``init(key)`` (vmapped over the seeds'
    keys), the optimizer settings of member *k* set to ``settings[name][k]`` in its state
    (:func:`jaxtrain.sweep.population.with_hyperparams`), ``epochs`` passes of
    ``train_step`` over ``train_split`` (an ArraySplit) in the batches of a standalone run
    with ``data_seed``, then ``eval_step`` over ``validation_split``."""
    size = members_of(settings)
    columns = {name: np.asarray(values, np.float32) for name, values in settings.items()}
    seed_values = np.full(size, seeds) if np.ndim(seeds) == 0 else np.asarray(seeds)
    states = jax.jit(jax.vmap(init))(_keys(seed_values, size))
    states = pop.with_hyperparams(states, columns)
    orders = pop.train_orders(len(train_split), batch_size, epochs, [data_seed])
    steps = orders.shape[1]
    if steps == 0:
        raise ValueError(
            f"batch_size: {batch_size} is larger than the training split ({len(train_split)})"
        )
    data = {"inputs": train_split.inputs[None], "labels": train_split.labels[None]}
    if train_split.weights is not None:
        data["weights"] = train_split.weights[None]
    data["orders"] = orders
    mesh = pop.member_mesh(size, devices)
    states = pop.shard_members(states, mesh)
    index = pop.shard_members(np.zeros(size, np.int32), mesh)
    run = pop.make_population_train(train_step, steps)
    states, _ = run(states, index, jnp.int32(0), pop.replicate(data, mesh))
    batches = pop.eval_arrays([validation_split], eval_batch_size)
    sums = jax.device_get(pop.make_population_eval(eval_step)(states, index, batches))
    validation = [
        scalars(task.finalize(jax.tree.map(lambda x, k=k: x[k], sums))) for k in range(size)
    ]
    return PopulationResult(columns, seed_values, states, validation, monitor)
