"""The train state: one pytree of arrays, nothing static, so jit/vmap/pmap and Orbax see it all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxtrain.models.adapters import as_model


@struct.dataclass
class TrainState:
    """step: i32[]; params and model_state (e.g. ``batch_stats``) are Flax variable trees;
    opt_state is the optax state (hyperparameters inside, via ``inject_hyperparams``);
    rng: a typed PRNG key from which step ``s`` draws ``fold_in(rng, s)``."""

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any
    rng: jax.Array


def make_init(
    model: Any,
    tx: optax.GradientTransformation,
    input_shape: Sequence[int],
    input_dtype: Any = jnp.float32,
):
    """``init(seed_key) -> TrainState``, pure: parameters for inputs
    ``input_dtype[batch, *input_shape]`` (float inputs initialise as float32, integer ones,
    e.g. tokens, as int32). The key for dropout is split off the initialisation key so the
    two never share randomness. Vmap it over keys for a population.

    ``model``: a Flax linen or NNX module, or a :class:`jaxtrain.models.adapters.Model` (an
    NNX module instance keeps its own parameters whatever the key; an NNX module made by a
    factory initialises from the key)."""
    integer = jnp.issubdtype(jnp.dtype(input_dtype), jnp.integer)
    dtype = jnp.int32 if integer else jnp.float32
    adapter = as_model(model)

    def init(seed_key: jax.Array) -> TrainState:
        init_key, step_key = jax.random.split(seed_key)
        dummy = jnp.zeros((1, *input_shape), dtype)
        params, model_state = adapter.init(init_key, dummy)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            model_state=model_state,
            rng=step_key,
        )

    return init


def create_train_state(
    model: Any,
    tx: optax.GradientTransformation,
    input_shape: Sequence[int],
    seed: int,
    input_dtype: Any = jnp.float32,
) -> TrainState:
    """The initial state from ``seed`` (see :func:`make_init`); the same seed always gives
    the same state."""
    # One compiled program instead of op-by-op dispatch: about twice as fast to start.
    return jax.jit(make_init(model, tx, input_shape, input_dtype))(jax.random.key(seed))


def count_params(params: Any) -> int:
    """Number of scalar parameters in a tree."""
    return int(sum(x.size for x in jax.tree.leaves(params)))
