"""Local training of one client: a ``lax.scan`` of the ordinary train step, exact on padding.

``make_local_train`` returns a pure ``local_train`` for *one* client; a round runs
``jax.vmap(local_train)`` over the sampled clients. Every client scans the same number of
steps (so the vmap has one shape); steps past a client's own count leave its state untouched,
and each batch's padding rows get weight 0 while the real rows are reweighted to a mean over
themselves, so a client with 7 examples trains exactly as it would alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxtrain.train.state import TrainState
from jaxtrain.train.step import Penalty, make_loss_fn
from jaxtrain.train.tasks import Task

Params = Any
UNROLL = 4  # local steps unrolled per scan iteration: fewer, fused kernels per step


class LocalResult(NamedTuple):
    """One client's round: its final ``params`` and ``model_state``, the mean training
    ``loss`` f32[] over its real steps and ``steps`` i32[] (0 for an empty client)."""

    params: Params
    model_state: Any
    loss: jax.Array
    steps: jax.Array


class Client(NamedTuple):
    """One client's padded data: ``inputs`` [L, ...], ``labels`` [L, ...], ``size`` i32[]."""

    inputs: jax.Array
    labels: jax.Array
    size: jax.Array


def num_local_steps(
    padded_size: int, batch_size: int, local_epochs: int | None, local_steps: int | None
) -> int:
    """Steps every client scans: ``local_steps``, else epochs x batches of the largest client."""
    if local_steps is not None:
        return local_steps
    return (local_epochs or 1) * math.ceil(padded_size / batch_size)


def squared_distance(a: Params, b: Params) -> jax.Array:
    """``||a - b||^2`` over all leaves of two parameter trees."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return sum(jnp.sum((x - y) ** 2) for x, y in pairs)


def make_local_train(
    model: nn.Module,
    tx: optax.GradientTransformation,
    task: Task,
    *,
    padded_size: int,
    batch_size: int,
    local_epochs: int | None = None,
    local_steps: int | None = None,
    mu: float = 0.0,
    penalty: Penalty | None = None,
) -> Callable[..., LocalResult]:
    """``local_train(params, model_state, client, key, correction=None) -> LocalResult``.

    The client starts from the global ``params`` with a fresh ``tx`` state and trains on
    ``client`` (a :class:`Client` of length ``padded_size``, a multiple of ``batch_size``):
    ``local_epochs`` shuffled passes (``ceil(size / batch_size)`` batches each, the last one
    partial) or exactly ``local_steps`` steps cycling through such passes. The objective is
    ``make_loss_fn``'s (the one ``make_train_step`` differentiates) plus, when ``mu > 0``,
    FedProx's ``mu / 2 * ||w - params||^2``; ``correction`` (a params-shaped tree, SCAFFOLD's
    ``c - c_i``) is added to every gradient. ``key`` seeds the shuffles and dropout.
    """
    if padded_size % batch_size:
        raise ValueError(f"padded_size {padded_size} is not a multiple of batch {batch_size}")
    loss_fn = make_loss_fn(model, task, penalty)
    slots = padded_size // batch_size  # batch slots of one pass over the largest client
    total = num_local_steps(padded_size, batch_size, local_epochs, local_steps)

    def objective(params, anchor, state, batch, rng):
        loss, aux = loss_fn(params, state, batch, rng)
        if mu:
            loss = loss + 0.5 * mu * squared_distance(params, anchor)
        return loss, aux

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def local_train(
        params: Params, model_state: Any, client: Client, key: jax.Array, correction=None
    ) -> LocalResult:
        shuffle_key, step_key = jax.random.split(key)
        size = client.size
        batches = jnp.maximum((size + batch_size - 1) // batch_size, 1)
        positions = jnp.arange(padded_size)
        # Every pass's order, drawn up front (at most one pass per step with local_steps).
        passes = local_steps if local_steps is not None else (local_epochs or 1)
        orders = jax.vmap(lambda e: _shuffled(jax.random.fold_in(shuffle_key, e), positions, size))(
            jnp.arange(passes)
        )
        state = TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            model_state=model_state,
            rng=step_key,
        )

        def step(state: TrainState, s: jax.Array):
            if local_steps is None:  # pass e, slot b; slots past this client's batches idle
                epoch, slot = s // slots, s % slots
                active = (slot < batches) & (size > 0)
            else:
                epoch, slot = s // batches, s % batches
                active = size > 0
            rows = jax.lax.dynamic_slice(orders[epoch], (slot * batch_size,), (batch_size,))
            real = slot * batch_size + jnp.arange(batch_size) < size
            count = jnp.maximum(jnp.sum(real), 1)
            batch = {
                "inputs": client.inputs[rows],
                "labels": client.labels[rows],
                "weights": real.astype(jnp.float32) * (batch_size / count),
            }
            rng = jax.random.fold_in(state.rng, state.step)
            (loss, (_, model_state)), grads = grad_fn(state.params, params, state, batch, rng)
            if correction is not None:
                grads = jax.tree.map(jnp.add, grads, correction)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            trained = state.replace(
                step=state.step + 1,
                params=optax.apply_updates(state.params, updates),
                opt_state=opt_state,
                model_state=model_state,
            )
            state = jax.tree.map(lambda new, old: jnp.where(active, new, old), trained, state)
            return state, (jnp.where(active, loss, 0.0), active)

        state, (losses, active) = jax.lax.scan(
            step, state, jnp.arange(total), unroll=min(total, UNROLL)
        )
        steps = jnp.sum(active.astype(jnp.int32))
        loss = jnp.sum(losses) / jnp.maximum(steps, 1)
        return LocalResult(state.params, state.model_state, loss, steps)

    return local_train


def _shuffled(key: jax.Array, positions: jax.Array, size: jax.Array) -> jax.Array:
    """A random order of ``positions`` with the ``size`` real rows first. With JAX's
    partitionable threefry (the default) row ``i``'s sort key depends only on ``(key, i)``,
    not on the length drawn, so a client's order does not depend on how far it is padded."""
    noise = jax.random.uniform(key, positions.shape)
    return jnp.argsort(jnp.where(positions < size, noise, 2.0))
