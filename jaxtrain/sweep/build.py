"""A sweep group's program inputs: its members' data on the device, the one step, the plan.

Every member trains with the run's one step (:func:`jaxtrain.train.pieces.build_step`), so
label smoothing, augmentation, precision, micro-batches, penalties and example weights act on
member *i* exactly as on the standalone run of member *i*'s config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxtrain.config import Config
from jaxtrain.data import PreparedData, prepare_data
from jaxtrain.sweep import population as pop
from jaxtrain.sweep.space import Group, hyperparams_of
from jaxtrain.train.fairness_audit import sensitive_groups, training_weights
from jaxtrain.train.pieces import Pieces, build_pieces
from jaxtrain.train.tasks import resolve_monitor, task_for


@dataclass
class BuiltGroup:
    """One group's program inputs, built from its configs (deterministic in their seeds)."""

    group: Group
    data: dict[int, PreparedData]  # by data.seed, example weights applied
    pieces: Pieces | None
    data_index: np.ndarray  # i32[K]: each member's dataset
    train_data: dict[str, np.ndarray]  # inputs/labels [D, n, ...], weights [D, n], orders
    validation: dict[str, np.ndarray]  # padded evaluation batches [D, batches, size, ...]
    every: int  # steps between evaluations

    @property
    def total_steps(self) -> int:
        return self.pieces.total_steps

    @property
    def steps_per_epoch(self) -> float:
        first = self.group.members[0].config
        return len(self.data[first.data.seed].splits["train"]) / first.data.batch_size


def prepare_group_data(group: Group, cache: dict | None = None) -> dict[int, PreparedData]:
    """Each distinct ``data.seed`` of the group's members, prepared (with example weights:
    class weights, fairness reweighing) as its standalone run would. ``cache`` keeps them
    by seed across calls (groups of one program shape: the same data settings)."""
    config = group.config
    cache = {} if cache is None else cache
    data = {}
    for seed in sorted({m.config.data.seed for m in group.members}):
        if seed not in cache:
            member = next(m.config for m in group.members if m.config.data.seed == seed)
            prepared = prepare_data(member.data)
            groups = sensitive_groups(config, prepared) if config.fairness else None
            cache[seed] = training_weights(config, prepared, groups)
        data[seed] = cache[seed]
    return data


def build_group(group: Group, cache: dict | None = None) -> BuiltGroup:
    """Data on the device, the pieces of the group's config and each member's dataset.

    ``cache`` (a dict kept across calls for groups with the same static settings, as a
    search's rounds have) keeps the prepared data and the pieces: the model, optimizer and
    task are fixed by the static settings; the members' own numbers enter through
    :func:`initial_population`."""
    config = group.config
    cache = {} if cache is None else cache
    data = prepare_group_data(group, cache.setdefault("data", {}))
    seeds = sorted(data)
    if "pieces" not in cache:
        cache["pieces"] = build_pieces(config, data[seeds[0]])
    pieces = cache["pieces"]
    splits = [data[s].splits for s in seeds]
    n, batch = len(splits[0]["train"]), config.data.batch_size
    arrays = cache.setdefault("arrays", {})
    if tuple(seeds) not in arrays:
        train_data = {
            "inputs": np.stack([s["train"].inputs for s in splits]),
            "labels": np.stack([s["train"].labels for s in splits]),
            "orders": pop.train_orders(n, batch, config.train.epochs, seeds),
        }
        if splits[0]["train"].weights is not None:
            train_data["weights"] = np.stack([s["train"].weights for s in splits])
        validation = pop.eval_arrays([s["validation"] for s in splits], config.data.eval_batch_size)
        arrays[tuple(seeds)] = (train_data, validation)
    train_data, validation = arrays[tuple(seeds)]
    data_index = np.asarray([seeds.index(m.config.data.seed) for m in group.members], np.int32)
    every = config.train.eval_every or max(1, int(n / batch))
    return BuiltGroup(group, data, pieces, data_index, train_data, validation, every)


def monitor_of(config: Config, data: PreparedData) -> tuple[str, str]:
    """The ranking metric and "min"/"max" (``sweep.metric``, else the checkpoint monitor)."""
    return resolve_monitor(task_for(data), config.sweep.metric or config.train.checkpoint.monitor)


def group_monitor(config: Config, group: Group) -> tuple[str, str]:
    """:func:`monitor_of` for a group, from its first member's data."""
    return monitor_of(config, prepare_data(group.members[0].config.data))


def initial_population(built: BuiltGroup, indices: list[int], cache: dict | None = None) -> Any:
    """The members ``indices`` at step 0: each one's ``seed`` and optimizer settings.
    ``cache`` keeps the compiled initialisation across calls (see :func:`build_group`)."""
    members = tuple(m for m in built.group.members if m.index in indices)
    pieces = built.pieces
    cache = {} if cache is None else cache
    if "init" not in cache:
        inputs = pieces.data.splits["train"].inputs
        cache["init"] = pop.population_init(
            pieces.model, pieces.tx, pieces.data.input_shape, inputs.dtype
        )
    state = cache["init"](np.asarray([m.config.seed for m in members]))
    return pop.with_hyperparams(state, hyperparams_of(members))
