"""Poisson sampling with one compiled shape: a fixed number of slots and a mask.

Privacy accounting for Poisson sampling (``jaxtrain.privacy.accounting``) needs every record
to join a step independently with probability ``q``, so the batch size varies from step to
step; a jitted step needs one shape. :func:`poisson_sample` draws the Bernoulli decisions
for the whole population and lays the chosen records into ``max_size`` slots with a mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def poisson_sample(
    key: jax.Array, population: int, rate: float, max_size: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """``(indices i32[K], mask bool[K])``: record ``i`` is chosen with probability ``rate``,
    independently of the others; ``K = min(max_size, population)`` (default: the population).

    With ``K = population`` the indices are ``0 .. population - 1`` in order and ``mask`` is
    the Bernoulli draw itself (every record gets a slot; nothing is ever dropped). With
    ``K < population`` the chosen records come first in random order, unchosen ones fill the
    remaining slots with ``mask`` False, and if more than ``K`` were chosen a uniformly random
    ``K`` of them are kept (truncated Poisson sampling, which
    ``dp_event(..., max_sample=K)`` accounts). Pure: the same key gives the same sample, and
    record ``i``'s decision depends only on ``(key, i)`` (JAX's partitionable threefry), so
    adding a record to the population leaves the others' decisions unchanged.
    """
    size = population if max_size is None else min(max_size, population)
    choose_key, order_key = jax.random.split(key)
    chosen = jax.random.bernoulli(choose_key, rate, (population,))
    if size == population:
        return jnp.arange(population, dtype=jnp.int32), chosen
    # Chosen records score in [1, 2), the others in [0, 1): the top K are a uniformly random
    # K of the chosen ones (all of them when at most K were chosen).
    score = chosen.astype(jnp.float32) + jax.random.uniform(order_key, (population,))
    _, indices = jax.lax.top_k(score, size)
    return indices.astype(jnp.int32), chosen[indices]
