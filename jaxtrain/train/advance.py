"""How a train run moves forward: ``advance(state, count) -> (state, metrics)``.

Per-step: one batch from the grain stream through the placement's compiled step. Fused
(``train.fused_epochs``): ``count`` index batches from the same stream through one compiled
:func:`jaxtrain.train.scan.scan_steps` over the training split held on the devices, so the
iterator position (and with it checkpoints and resume) is the same either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from jaxtrain.config import Config
from jaxtrain.data import train_batches, train_index_batches
from jaxtrain.data.poisson import poisson_batches
from jaxtrain.train.parallel import Placement
from jaxtrain.train.pieces import Pieces, build_step
from jaxtrain.train.scan import make_fused_steps

Advance = Callable[[Any, int], tuple[Any, Any]]


def training_stream(config: Config, pieces: Pieces, placement: Placement):
    """The run's training stream (a grain ``MapDataset``): index batches for fused epochs
    (gathered on the device), example batches laid out for the placement otherwise."""
    split = pieces.data.splits["train"]
    batch, epochs, seed = config.data.batch_size, config.train.epochs, config.data.seed
    plan = pieces.privacy
    if plan is not None:  # DP-SGD: Poisson-sampled, padded, masked batches
        return poisson_batches(split, plan.rate, plan.steps, plan.slots, seed)
    if config.train.fused_epochs:
        return train_index_batches(len(split), batch, epochs, seed)
    return train_batches(
        split,
        batch,
        epochs,
        seed,
        shard=placement.process_shard,
        devices=placement.pmap_devices,
    )


def make_advance(
    config: Config, pieces: Pieces, placement: Placement, iterator: Iterator
) -> tuple[Advance, Callable]:
    """``(advance, train_step)``: ``advance(state, count)`` runs the next ``count`` steps
    (``count`` is 1 unless fused) and returns the metrics of each (fused: stacked,
    ``{name: f32[count]}``); ``train_step`` is the pure step both forms run."""
    step_fn = build_step(config, pieces, axis_name=placement.axis_name)
    if not config.train.fused_epochs:
        compiled = placement.compile(step_fn)

        def advance(state, count):
            return compiled(state, placement.put_batch(next(iterator)))

        return advance, step_fn
    fused = placement.compile(make_fused_steps(step_fn))
    on_device = placement.put_replicated(pieces.data.splits["train"].batch())
    index, processes = placement.process_shard

    def advance_fused(state, count):
        indices = np.stack([next(iterator) for _ in range(count)])
        rows = indices.shape[1] // processes  # this process's columns of every batch
        local = indices[:, index * rows : (index + 1) * rows]
        return fused(state, on_device, placement.put_indices(local))

    return advance_fused, step_fn
