"""DP-SGD's gradient (Abadi et al., 2016): clip per example, sum, add noise, normalise.

A pure function of per-example gradients (``jax.vmap`` of the train step's gradient gives
them, no hooks) and a mask from :func:`jaxtrain.privacy.poisson_sample`. It is optax's
``contrib.differentially_private_aggregate`` generalised in the two ways Poisson sampling
needs: padded rows are masked out, and the sum is divided by the *expected* batch size
``q n`` (a constant, so one example moves the result by at most ``C / (q n)``), not by the
number of rows; it also takes the step's key instead of keeping one in an optimizer state.
The clipping is optax's own ``per_example_global_norm_clip``. With every row real and
``expected_batch_size`` equal to the number of rows it equals optax's transformation given
the same key, bit for bit (tested).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

Tree = Any


def private_gradient(
    per_example_grads: Tree,
    mask: jax.Array,
    key: jax.Array,
    *,
    clip_norm: float,
    noise_multiplier: float,
    expected_batch_size: float,
) -> tuple[Tree, dict[str, jax.Array]]:
    """``(gradient, metrics)`` from per-example gradients (every leaf ``[B, ...]``).

    ``mask`` bool[B] marks the real rows (padding contributes nothing). Each real row is
    scaled to global L2 norm at most ``clip_norm``, the rows are summed, Gaussian noise of
    standard deviation ``noise_multiplier * clip_norm`` is added to every coordinate (leaf
    ``i`` draws from ``split(key, leaves + 1)[i + 1]``, as optax does) and the result is
    divided by ``expected_batch_size``. Metrics (outside the privacy guarantee: they are
    computed from the raw gradients): ``clipped_fraction`` of the real rows, ``examples``.
    """
    real = mask.astype(bool)

    def masked(g: jax.Array) -> jax.Array:
        return jnp.where(real.reshape((-1,) + (1,) * (g.ndim - 1)), g, jnp.zeros_like(g))

    leaves, treedef = jax.tree.flatten(jax.tree.map(masked, per_example_grads))
    clipped_sum, clipped = optax.per_example_global_norm_clip(leaves, clip_norm)
    _, *keys = jax.random.split(key, len(leaves) + 1)
    stddev = noise_multiplier * clip_norm
    noisy = [
        (g + stddev * jax.random.normal(k, g.shape, g.dtype)) / expected_batch_size
        for g, k in zip(clipped_sum, keys, strict=True)
    ]
    count = jnp.sum(real.astype(jnp.int32))
    metrics = {
        "clipped_fraction": clipped / jnp.maximum(count, 1),
        "examples": count.astype(jnp.float32),
    }
    return jax.tree.unflatten(treedef, noisy), metrics
