"""Local training of one client: a scan of the one train step, exact on padding.

``make_local_train`` returns a pure ``local_train`` for *one* client; a round runs
``jax.vmap(local_train)`` over the sampled clients. A client's training is
:func:`jaxtrain.train.scan.scan_steps` of the run's own ``train_step`` (so label smoothing,
augmentation, precision, micro-batches and penalties act exactly as in ``jaxtrain train``)
over a plan of its padded data: every client scans the same number of steps (one shape for
the vmap), steps past a client's own count are inactive (state untouched), and each batch's
padding rows get weight 0 while the real rows are reweighted to a mean over themselves, so a
client with 7 examples trains exactly as it would alone. FedProx and SCAFFOLD change the
objective through the step's ``loss_hook``, not through a second update rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxtrain.train.scan import scan_steps
from jaxtrain.train.state import TrainState

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
    """One client's padded data: ``inputs`` [L, ...], ``labels`` [L, ...], ``size`` i32[],
    and optionally per-example loss ``weights`` f32[L] (class weights, reweighing)."""

    inputs: jax.Array
    labels: jax.Array
    size: jax.Array
    weights: jax.Array | None = None


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


def correction_term(correction: Params, params: Params) -> jax.Array:
    """A term whose value is 0 and whose gradient in ``params`` is ``correction``:
    ``<correction, params - stop_gradient(params)>`` (SCAFFOLD's ``c - c_i`` added to every
    gradient, as a change of the objective)."""
    pairs = zip(jax.tree.leaves(correction), jax.tree.leaves(params), strict=True)
    return sum(jnp.vdot(c, p - jax.lax.stop_gradient(p)) for c, p in pairs)


def make_local_train(
    make_step: Callable[..., Callable],
    tx: optax.GradientTransformation,
    *,
    padded_size: int,
    batch_size: int,
    local_epochs: int | None = None,
    local_steps: int | None = None,
    mu: float = 0.0,
) -> Callable[..., LocalResult]:
    """``local_train(params, model_state, client, key, correction=None) -> LocalResult``.

    ``make_step(loss_hook=None) -> train_step`` builds the run's one step (see
    :func:`jaxtrain.train.pieces.build_step`); ``tx`` is the optimizer it was built with.
    The client starts from the global ``params`` with a fresh ``tx`` state and trains on
    ``client`` (a :class:`Client` of length ``padded_size``, a multiple of ``batch_size``):
    ``local_epochs`` shuffled passes (``ceil(size / batch_size)`` batches each, the last one
    partial) or exactly ``local_steps`` steps cycling through such passes. With ``mu > 0``
    the objective gains FedProx's ``mu / 2 * ||w - params||^2``; ``correction`` (a
    params-shaped tree, SCAFFOLD's ``c - c_i``) is added to every gradient. ``key`` seeds the
    shuffles, dropout and augmentation. The reported loss is the step's (hook terms left out).
    """
    if padded_size % batch_size:
        raise ValueError(f"padded_size {padded_size} is not a multiple of batch {batch_size}")
    slots = padded_size // batch_size  # batch slots of one pass over the largest client
    total = num_local_steps(padded_size, batch_size, local_epochs, local_steps)

    def local_train(
        params: Params, model_state: Any, client: Client, key: jax.Array, correction=None
    ) -> LocalResult:
        shuffle_key, step_key = jax.random.split(key)

        def hook(trained: Params) -> jax.Array:
            term = jnp.zeros((), jnp.float32)
            if mu:
                term = term + 0.5 * mu * squared_distance(trained, params)
            if correction is not None:
                term = term + correction_term(correction, trained)
            return term

        step = make_step(loss_hook=hook if (mu or correction is not None) else None)
        state = TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            model_state=model_state,
            rng=step_key,
        )
        data = {"inputs": client.inputs, "labels": client.labels}
        if client.weights is not None:
            data["weights"] = client.weights
        plan = _plan(shuffle_key, client.size, padded_size, batch_size, slots, total,
                     local_epochs, local_steps)  # fmt: skip
        state, metrics = scan_steps(step, state, data, plan, unroll=min(total, UNROLL))
        steps = jnp.sum(plan["active"].astype(jnp.int32))
        loss = jnp.sum(jnp.where(plan["active"], metrics["loss"], 0.0)) / jnp.maximum(steps, 1)
        return LocalResult(state.params, state.model_state, loss, steps)

    return local_train


def _plan(key, size, padded_size, batch_size, slots, total, local_epochs, local_steps):
    """The client's scan plan: ``rows`` i32[total, batch], ``weights`` f32[total, batch]
    (0 on padding, ``batch / real rows`` on real ones) and ``active`` bool[total]."""
    batches = jnp.maximum((size + batch_size - 1) // batch_size, 1)
    positions = jnp.arange(padded_size)
    # Every pass's order, drawn up front (at most one pass per step with local_steps).
    passes = local_steps if local_steps is not None else (local_epochs or 1)
    orders = jax.vmap(lambda e: _shuffled(jax.random.fold_in(key, e), positions, size))(
        jnp.arange(passes)
    )

    def one(s):
        if local_steps is None:  # pass e, slot b; slots past this client's batches idle
            epoch, slot = s // slots, s % slots
            active = (slot < batches) & (size > 0)
        else:
            epoch, slot = s // batches, s % batches
            active = size > 0
        rows = jax.lax.dynamic_slice(orders[epoch], (slot * batch_size,), (batch_size,))
        real = slot * batch_size + jnp.arange(batch_size) < size
        count = jnp.maximum(jnp.sum(real), 1)
        return {
            "rows": rows,
            "weights": real.astype(jnp.float32) * (batch_size / count),
            "active": active,
        }

    return jax.vmap(one)(jnp.arange(total))


def _shuffled(key: jax.Array, positions: jax.Array, size: jax.Array) -> jax.Array:
    """A random order of ``positions`` with the ``size`` real rows first. With JAX's
    partitionable threefry (the default) row ``i``'s sort key depends only on ``(key, i)``,
    not on the length drawn, so a client's order does not depend on how far it is padded."""
    noise = jax.random.uniform(key, positions.shape)
    return jnp.argsort(jnp.where(positions < size, noise, 2.0))
