"""Client-level differential privacy: per-client clipping, server noise, RDP accounting.

DP-FedAvg (McMahan et al., 2018): with every client's update clipped to L2 norm ``C`` and
equal weights ``1 / M``, one client changes the mean by at most ``C / M``; Gaussian noise of
standard deviation ``noise_multiplier * C / M`` on the mean makes each round a sampled
Gaussian mechanism, and the accountant composes the rounds.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from jaxtrain.federated.aggregate import (
    Aggregator,
    Cohort,
    Metrics,
    Tree,
    per_client,
    unchanged,
)


def clip_updates(clip_norm: float) -> Aggregator:
    """Scale each client's update to L2 norm at most ``clip_norm`` (over all its leaves).

    Metrics: ``update_norm`` (mean norm before clipping) and ``clipped_fraction``.
    """

    def encode(updates: Tree, cohort: Cohort, _key: jax.Array) -> tuple[Tree, Metrics]:
        norms = jax.vmap(optax.global_norm)(updates)
        scale = jnp.minimum(1.0, clip_norm / jnp.maximum(norms, 1e-12))
        clipped = jax.tree.map(lambda x: x * per_client(scale, x), updates)
        metrics = {
            "update_norm": jnp.mean(norms),
            "clipped_fraction": jnp.mean((norms > clip_norm).astype(jnp.float32)),
        }
        return clipped, metrics

    return Aggregator(encode, unchanged)


def gaussian_noise(stddev: float) -> Aggregator:
    """The server adds N(0, stddev^2) to every coordinate of the aggregate."""

    def decode(total: Tree, _cohort: Cohort, key: jax.Array) -> tuple[Tree, Metrics]:
        leaves, treedef = jax.tree.flatten(total)
        keys = jax.random.split(key, len(leaves))
        noisy = [
            x + stddev * jax.random.normal(k, x.shape, x.dtype)
            for x, k in zip(leaves, keys, strict=True)
        ]
        return jax.tree.unflatten(treedef, noisy), {}

    return Aggregator(unchanged, decode)


def dp_event(noise_multiplier: float, sampling_rate: float, rounds: int):
    """The ``dp_accounting`` event of ``rounds`` rounds: Poisson-sampled Gaussian, composed.

    Rounds here sample a fixed number of clients without replacement; accounting them as
    Poisson sampling at rate ``M / N`` is the usual approximation (as in DP-FedAvg)."""
    import dp_accounting  # optional dependency, only needed when dp is configured

    event = dp_accounting.PoissonSampledDpEvent(
        sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    return dp_accounting.SelfComposedDpEvent(event, rounds)


def dp_epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> float:
    """Epsilon at ``delta`` after ``rounds`` rounds (RDP accountant); 0 before the first round,
    infinity without noise."""
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant()
    accountant.compose(dp_event(noise_multiplier, sampling_rate, rounds))
    return float(accountant.get_epsilon(delta))
