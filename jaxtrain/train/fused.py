"""Fused epochs: a stretch of training steps as one ``lax.scan`` inside one compiled call."""

from __future__ import annotations

from collections.abc import Callable

import jax

from jaxtrain.train.state import TrainState
from jaxtrain.train.step import Batch, Metrics


def make_fused_steps(
    train_step: Callable[[TrainState, Batch], tuple[TrainState, Metrics]],
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]:
    """``fused(state, data, indices) -> (state, metrics)``, pure: ``train_step`` scanned over
    the rows of ``indices: i32[steps, batch]``, step ``t`` training on the examples
    ``data[indices[t]]`` gathered on the device (``data``: the whole training split,
    ``{"inputs": [n, ...], "labels": [n, ...]}``, optionally ``"weights": f32[n]``).

    Given the per-step loop's own index batches it takes exactly the per-step loop's steps,
    so its results are the same (up to XLA fusing differently, i.e. float rounding); the
    host sees one call per stretch instead of one per step. Metrics come back stacked:
    ``metrics[name]: f32[steps]``. Under ``pmap`` each device receives its slice
    ``indices[:, d]`` and the whole ``data``; under a mesh, ``indices`` sharded on its
    second axis.
    """

    def fused(state: TrainState, data: Batch, indices: jax.Array):
        def one(state: TrainState, rows: jax.Array):
            return train_step(state, jax.tree.map(lambda x: x[rows], data))

        return jax.lax.scan(one, state, indices)

    return fused
