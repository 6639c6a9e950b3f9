"""The server: its state, its optimizer, and one round as one pure (jittable) function.

A round samples clients (a fixed number without replacement, or each client independently
with probability ``q`` into a fixed number of masked slots: ``sampling="poisson"``, for
differential privacy), runs ``jax.vmap(local_train)`` over them from the global model,
aggregates their updates ``Delta_k = w_k - w`` and applies the mean as a pseudo-gradient
``-Delta`` through an optax server optimizer (sgd with learning rate 1 is FedAvg; adam and
yogi are FedOpt). Everything a round needs is in :class:`ServerState` and its arguments, so
``jax.jit(run_round)`` is the whole round, and resuming from a saved state is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxtrain.config.federated import (
    FederatedConfig,
    ServerAdamConfig,
    ServerSGDConfig,
    ServerYogiConfig,
)
from jaxtrain.federated.aggregate import Aggregator, Cohort, aggregate, chain, weighted
from jaxtrain.federated.client import LocalResult
from jaxtrain.federated.partition import ClientData
from jaxtrain.federated.privacy import (
    clip_updates,
    gaussian_noise,
    noise_stddev,
    resolved_noise_multiplier,
)
from jaxtrain.federated.secure import secure_aggregation
from jaxtrain.privacy.sampling import poisson_sample

Metrics = dict[str, jax.Array]


@struct.dataclass
class ServerState:
    """round: i32[] rounds done; params / model_state: the global model (so the state works
    with ``make_eval_step`` as is); opt_state: the server optimizer's; controls: SCAFFOLD's
    ``{"server": c, "clients": c_k [N, ...]}`` (else ``{}``); rng: a typed key, round ``r``
    draws ``fold_in(rng, r)``."""

    round: jax.Array
    params: Any
    model_state: Any
    opt_state: Any
    controls: Any
    rng: jax.Array


def build_server_optimizer(
    config: ServerSGDConfig | ServerAdamConfig | ServerYogiConfig,
) -> optax.GradientTransformation:
    """The optax transformation the server applies to the pseudo-gradient ``-mean update``."""
    if config.name == "sgd":
        return optax.sgd(config.learning_rate, momentum=config.momentum or None)
    factory = optax.adam if config.name == "adam" else optax.yogi
    return factory(config.learning_rate, b1=config.b1, b2=config.b2, eps=config.eps)


def build_aggregator(config: FederatedConfig) -> Aggregator:
    """The configured chain: [clip] -> weight -> [noise] -> [secure aggregation].

    The noise on the mean is ``noise_multiplier * clip_norm / clients_per_round`` (the noise
    multiplier calibrated first when ``dp.target_epsilon`` is set): the ratio of the noise to
    one client's largest effect on the mean that the accountant assumes for either sampling.
    """
    stages = []
    if config.dp is not None:
        stages.append(clip_updates(config.dp.clip_norm))
    stages.append(weighted())
    if config.dp is not None:
        sigma = resolved_noise_multiplier(config)
        if sigma > 0:
            stddev = noise_stddev(config.dp.clip_norm, sigma, config.clients_per_round)
            stages.append(gaussian_noise(stddev))
    if config.secure_aggregation:
        stages.append(secure_aggregation())
    return chain(*stages)


def round_options(config: FederatedConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`make_round` that ``config`` decides (all but
    ``scaffold_learning_rate``): sampling, weighting, the cap on Poisson slots, privacy
    guards and which metrics a round returns."""
    dp = config.dp
    return {
        "clients_per_round": config.clients_per_round,
        "size_weighted": dp is None,
        "sampling": "fixed" if dp is None else dp.sampling,
        "sampling_rate": config.clients_per_round / config.num_clients,
        "max_clients": None if dp is None else dp.max_clients_per_round,
        "private": dp is not None,
        "log": "all" if dp is None else dp.log,
    }


def init_server_state(
    params: Any,
    model_state: Any,
    server_tx: optax.GradientTransformation,
    num_clients: int,
    seed: int,
    scaffold: bool = False,
) -> ServerState:
    """The state before round 1 (controls zero for SCAFFOLD)."""
    controls = {}
    if scaffold:
        zeros = jax.tree.map(jnp.zeros_like, params)
        clients = jax.tree.map(lambda x: jnp.zeros((num_clients, *x.shape), x.dtype), params)
        controls = {"server": zeros, "clients": clients}
    return ServerState(
        round=jnp.zeros((), jnp.int32),
        params=params,
        model_state=model_state,
        opt_state=server_tx.init(params),
        controls=controls,
        rng=jax.random.key(seed),
    )


def make_round(
    local_train: Callable[..., LocalResult],
    aggregator: Aggregator,
    server_tx: optax.GradientTransformation,
    *,
    clients_per_round: int,
    size_weighted: bool = True,
    scaffold_learning_rate: float | None = None,
    sampling: Literal["fixed", "poisson"] = "fixed",
    sampling_rate: float | None = None,
    max_clients: int | None = None,
    private: bool = False,
    log: Literal["all", "private"] = "all",
) -> Callable[[ServerState, ClientData], tuple[ServerState, Metrics]]:
    """``run_round(server, clients) -> (server, metrics)``, pure and unjitted.

    ``sampling="fixed"`` draws ``clients_per_round`` (M) of ``clients`` (a
    :class:`ClientData`) without replacement and weighs them ``n_k / sum n``
    (``size_weighted``) or ``1 / M``. ``sampling="poisson"`` lets every client join
    independently with probability ``sampling_rate`` (default ``M / N``) and weighs each
    sampled client ``1 / M`` whatever the cohort's size (a fixed denominator, so one client
    moves the mean by at most ``C / M`` after clipping); to keep one compiled shape it trains
    ``max_clients`` slots (default all N clients; the unsampled ones are masked out, so a
    round costs ``N / M`` times the fixed-size one; with fewer slots than sampled clients a
    uniformly random subset is kept). The clients train with one vmap of ``local_train``,
    ``Delta_k`` are aggregated, and the server steps.

    With ``scaffold_learning_rate`` (the client learning rate), SCAFFOLD: clients correct
    their gradients by ``c - c_k`` and update ``c_k <- c_k - c - Delta_k / (K_k * lr)``; the
    server sets ``c <- c + sum_k (c_k' - c_k) / N``. ``private`` (the aggregator clips and
    noises) refuses what the noise does not cover: SCAFFOLD's control variates and a model
    state (BatchNorm statistics) averaged in the clear.

    Metrics (f32 scalars): ``noisy_update_norm`` (the norm of the released mean update) and,
    with ``log="all"``, the raw ones (outside any privacy guarantee): ``loss`` and
    ``loss_std`` (the sampled clients' mean local training losses), ``update_norm``,
    ``local_steps``, ``examples``, ``clients`` (the cohort's size) and the aggregator's.
    """
    scaffold = scaffold_learning_rate is not None
    if sampling not in ("fixed", "poisson"):
        raise ValueError(f"sampling: expected fixed or poisson, got {sampling!r}")
    if sampling == "poisson" and size_weighted:
        raise ValueError(
            "size_weighted: Poisson sampling needs equal weights over the fixed denominator "
            "clients_per_round (pass size_weighted=False)"
        )
    if scaffold and (private or sampling == "poisson"):
        raise ValueError(
            "algorithm: scaffold cannot be combined with dp: its control variates are built "
            "from unclipped updates and shared without noise"
        )
    trained = jax.vmap(local_train, in_axes=(None, None, 0, 0, 0 if scaffold else None))

    def run_round(server: ServerState, clients: ClientData) -> tuple[ServerState, Metrics]:
        if private and jax.tree.leaves(server.model_state):
            raise ValueError(
                "federated.dp: the model has state (BatchNorm statistics) that clients would "
                "average without clipping or noise; use a model without BatchNorm "
                "(model.batch_norm: false) or remove federated.dp"
            )
        num_clients = clients.sizes.shape[0]
        key = jax.random.fold_in(server.rng, server.round)
        sample_key, train_key, aggregate_key = jax.random.split(key, 3)
        if sampling == "poisson":
            rate = clients_per_round / num_clients if sampling_rate is None else sampling_rate
            ids, mask = poisson_sample(sample_key, num_clients, rate, max_clients)
            active = mask.astype(jnp.float32)
        else:
            ids = jax.random.choice(sample_key, num_clients, (clients_per_round,), replace=False)
            active = None
        if sampling == "poisson" and ids.shape[0] == num_clients:  # every client, in order
            cohort_data = clients.cohort(slice(None))
        else:
            cohort_data = clients.cohort(ids)
        keys = jax.vmap(lambda i: jax.random.fold_in(train_key, i))(ids)
        correction = None
        if scaffold:
            own = jax.tree.map(lambda c: c[ids], server.controls["clients"])
            correction = jax.tree.map(lambda c, ck: c - ck, server.controls["server"], own)

        result = trained(server.params, server.model_state, cohort_data, keys, correction)
        deltas = jax.tree.map(lambda w, g: w - g, result.params, server.params)
        sizes = cohort_data.size.astype(jnp.float32)
        if active is not None:
            sizes = sizes * active
        by_size = sizes / jnp.maximum(jnp.sum(sizes), 1.0)
        if active is not None:
            weights = active / clients_per_round
        elif size_weighted:
            weights = by_size
        else:
            weights = jnp.full_like(sizes, 1.0 / clients_per_round)
        mean_delta, aggregated = aggregate(aggregator, deltas, Cohort(ids, weights), aggregate_key)

        pseudo_gradient = jax.tree.map(jnp.negative, mean_delta)
        updates, opt_state = server_tx.update(pseudo_gradient, server.opt_state, server.params)
        model_state = jax.tree.map(
            lambda x: jnp.tensordot(by_size, x, axes=1).astype(x.dtype), result.model_state
        )
        controls = server.controls
        if scaffold:
            controls = _scaffold_controls(
                controls, ids, deltas, result.steps, scaffold_learning_rate, num_clients
            )
        new_server = server.replace(
            round=server.round + 1,
            params=optax.apply_updates(server.params, updates),
            model_state=model_state,
            opt_state=opt_state,
            controls=controls,
        )
        metrics = {"noisy_update_norm": optax.global_norm(mean_delta)}
        if log == "all":
            metrics |= _raw_metrics(result, deltas, sizes, active) | aggregated
        return new_server, metrics

    return run_round


def _raw_metrics(result: LocalResult, deltas, sizes, active) -> Metrics:
    """The cohort's loss, loss spread, update norm, local steps, examples and size, computed
    from raw client data (outside any privacy guarantee); ``active`` f32[K] masks Poisson
    slots (None: every row is a sampled client)."""
    norms = jax.vmap(optax.global_norm)(deltas)
    steps = result.steps.astype(jnp.float32)
    if active is None:
        return {
            "loss": jnp.mean(result.loss),
            "loss_std": jnp.std(result.loss),
            "update_norm": jnp.mean(norms),
            "local_steps": jnp.mean(steps),
            "examples": jnp.sum(sizes),
            "clients": jnp.asarray(result.loss.shape[0], jnp.float32),
        }
    count = jnp.sum(active)
    mean = lambda x: jnp.sum(x * active) / jnp.maximum(count, 1.0)  # noqa: E731
    loss = mean(result.loss)
    return {
        "loss": loss,
        "loss_std": jnp.sqrt(mean((result.loss - loss) ** 2)),
        "update_norm": mean(norms),
        "local_steps": mean(steps),
        "examples": jnp.sum(sizes),
        "clients": count,
    }


def _scaffold_controls(controls, ids, deltas, steps, learning_rate, num_clients):
    """SCAFFOLD option II: ``c_k' = c_k - c - Delta_k / (K_k lr)``; ``c += sum (c_k' - c_k) / N``.
    Clients that took no step keep their control variate."""
    scale = jnp.where(steps > 0, 1.0 / (jnp.maximum(steps, 1) * learning_rate), 0.0)
    trained = (steps > 0).astype(jnp.float32)

    def per_leaf(c, all_ck, delta):
        shape = (-1,) + (1,) * (delta.ndim - 1)
        ck = all_ck[ids]
        new_ck = ck - trained.reshape(shape) * c - scale.reshape(shape) * delta
        return new_ck, all_ck.at[ids].set(new_ck), c + jnp.sum(new_ck - ck, axis=0) / num_clients

    out = jax.tree.map(per_leaf, controls["server"], controls["clients"], deltas)
    is_triple = lambda x: isinstance(x, tuple)  # noqa: E731
    clients = jax.tree.map(lambda t: t[1], out, is_leaf=is_triple)
    server = jax.tree.map(lambda t: t[2], out, is_leaf=is_triple)
    return {"server": server, "clients": clients}
