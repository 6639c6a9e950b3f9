"""The one scan over device data: many training steps of the one pure step in one program.

Fused epochs, sweep populations and federated clients all train the same way: the examples
sit on the device, a *plan* says which rows each step takes, and ``lax.scan`` runs
``train_step`` over the plan. Sweeps ``vmap`` it over members, federated rounds over clients.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxtrain.train.state import TrainState
from jaxtrain.train.step import Batch, Metrics

TrainStep = Callable[[TrainState, Batch], tuple[TrainState, Metrics]]


def scan_steps(
    train_step: TrainStep,
    state: TrainState,
    data: Batch,
    plan: dict[str, jax.Array],
    *,
    unroll: int = 1,
) -> tuple[TrainState, Metrics]:
    """Run ``train_step`` once per row of ``plan``, pure and traceable.

    data: the examples, ``{"inputs": [n, ...], "labels": [n, ...]}`` and optionally
    ``"weights": f32[n]``. plan: ``rows`` i32[steps, batch] (step ``t`` trains on
    ``data[rows[t]]``), optionally ``weights`` f32[steps, batch] (multiplied into the
    examples' own weights: 0 masks a padding row) and ``active`` bool[steps] (a step that is
    not active leaves the state exactly as it was). Returns the final state and the metrics
    stacked over steps (``{name: f32[steps]}``).
    """

    def one(state: TrainState, step_plan: dict[str, jax.Array]):
        batch = jax.tree.map(lambda x: x[step_plan["rows"]], data)
        if "weights" in step_plan:
            own = batch.get("weights")
            batch["weights"] = step_plan["weights"] if own is None else own * step_plan["weights"]
        new_state, metrics = train_step(state, batch)
        if "active" in step_plan:
            keep = step_plan["active"]
            new_state = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_state, state)
        return new_state, metrics

    return jax.lax.scan(one, state, plan, unroll=unroll)


def make_fused_steps(
    train_step: TrainStep,
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]:
    """``fused(state, data, indices) -> (state, metrics)``: :func:`scan_steps` over the index
    batches ``indices: i32[steps, batch]`` (the per-step loop's own batches, so the result is
    the per-step loop's up to XLA fusing differently). Under ``pmap`` each device receives
    its slice ``indices[:, d]`` and the whole ``data``; under a mesh, ``indices`` sharded on
    its second axis."""

    def fused(state: TrainState, data: Batch, indices: jax.Array):
        return scan_steps(train_step, state, data, {"rows": indices})

    return fused
