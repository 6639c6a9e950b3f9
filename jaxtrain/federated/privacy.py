"""Client-level differential privacy for federated rounds (DP-FedAvg, McMahan et al., 2018).

Clipping bounds what one client can contribute; Gaussian noise on the mean makes each round a
sampled Gaussian mechanism, and ``jaxtrain.privacy.accounting`` composes the rounds. The
aggregator stages live here; so do the functions that read a config's ``dp`` section: the
noise multiplier (as set, or calibrated to ``target_epsilon``), epsilon for the sampling
actually run, the round metrics outside the guarantee, and :func:`privacy_report` for
report.md. See docs/privacy.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxtrain.config.federated import FederatedConfig
from jaxtrain.federated.aggregate import (
    Aggregator,
    Cohort,
    Metrics,
    Tree,
    per_client,
    unchanged,
)
from jaxtrain.privacy import accounting
from jaxtrain.privacy.accounting import ADJACENCY

# Round metrics computed from the clients' raw data or updates (outside the guarantee), and
# those computed from the released (noisy) update only. ``make_round`` logs the first kind
# only with ``log="all"``; a test keeps these lists equal to what a round returns.
RAW_ROUND_METRICS = (
    "loss",
    "loss_std",
    "update_norm",
    "clipped_fraction",
    "local_steps",
    "examples",
    "clients",
)
PRIVATE_ROUND_METRICS = ("noisy_update_norm",)


def clip_updates(clip_norm: float) -> Aggregator:
    """Scale each client's update to L2 norm at most ``clip_norm`` (over all its leaves).

    Metrics over the participating clients (weight > 0), both outside the privacy guarantee:
    ``update_norm`` (mean norm before clipping) and ``clipped_fraction``.
    """

    def encode(updates: Tree, cohort: Cohort, _key: jax.Array) -> tuple[Tree, Metrics]:
        norms = jax.vmap(optax.global_norm)(updates)
        scale = jnp.minimum(1.0, clip_norm / jnp.maximum(norms, 1e-12))
        clipped = jax.tree.map(lambda x: x * per_client(scale, x), updates)
        active = (cohort.weights > 0).astype(jnp.float32)
        count = jnp.maximum(jnp.sum(active), 1.0)
        metrics = {
            "update_norm": jnp.sum(norms * active) / count,
            "clipped_fraction": jnp.sum((norms > clip_norm) * active) / count,
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


def noise_stddev(clip_norm: float, noise_multiplier: float, clients_per_round: int) -> float:
    """The noise on the *mean* update: ``noise_multiplier * clip_norm / clients_per_round``.

    The mean divides the sum of clipped updates by ``clients_per_round`` (M) under either
    sampling, so one client moves it by at most ``C / M`` (add or remove, Poisson) or
    ``2 C / M`` (replace, fixed-size); the accountant's events assume exactly these ratios.
    """
    return noise_multiplier * clip_norm / clients_per_round


def dp_epsilon(
    noise_multiplier: float,
    sampling_rate: float,
    rounds: int,
    delta: float,
    *,
    sampling: accounting.Sampling = "fixed",
    accountant: accounting.AccountantName = "rdp",
    population: int | None = None,
    max_sample: int | None = None,
) -> float:
    """Epsilon at ``delta`` after ``rounds`` rounds (0 before the first, infinity without
    noise). The defaults account ``make_round``'s default sampling (a fixed number of clients
    without replacement, replace-one adjacency) with the RDP accountant; pass the config's
    ``sampling`` and ``accountant`` (or use :func:`federated_epsilon`)."""
    return accounting.epsilon(
        float(noise_multiplier),
        float(sampling_rate),
        int(rounds),
        float(delta),
        sampling=sampling,
        accountant=accountant,
        population=population,
        max_sample=max_sample,
    )


def _dp(federated: FederatedConfig):
    if federated.dp is None:
        raise ValueError("federated.dp: not set, so there is no privacy to account")
    return federated.dp


def _account_kwargs(federated: FederatedConfig, num_clients: int | None = None) -> dict:
    dp = _dp(federated)
    population = num_clients or federated.num_clients
    cap = dp.max_clients_per_round
    return {
        "sampling": dp.sampling,
        "accountant": dp.accountant,
        "population": population,
        "max_sample": cap
        if dp.sampling == "poisson" and cap is not None and cap < population
        else None,
    }


def sampling_rate(federated: FederatedConfig, num_clients: int | None = None) -> float:
    """``q = clients_per_round / num_clients``: each client's chance to join a round."""
    return federated.clients_per_round / (num_clients or federated.num_clients)


def resolved_noise_multiplier(federated: FederatedConfig, num_clients: int | None = None) -> float:
    """``dp.noise_multiplier``, or the one calibrated so that epsilon after
    ``federated.rounds`` rounds is at most ``dp.target_epsilon`` (cached)."""
    dp = _dp(federated)
    if dp.target_epsilon is None:
        return float(dp.noise_multiplier)
    return accounting.calibrate_noise(
        dp.target_epsilon,
        sampling_rate(federated, num_clients),
        federated.rounds,
        dp.delta,
        **_account_kwargs(federated, num_clients),
    )


def federated_epsilon(
    federated: FederatedConfig, rounds: int, num_clients: int | None = None
) -> float:
    """Epsilon at ``dp.delta`` after ``rounds`` rounds of the configured mechanism: its
    sampling, its accountant, its (resolved) noise multiplier."""
    return accounting.epsilon(
        resolved_noise_multiplier(federated, num_clients),
        sampling_rate(federated, num_clients),
        int(rounds),
        _dp(federated).delta,
        **_account_kwargs(federated, num_clients),
    )


def federated_epsilons(
    federated: FederatedConfig, rounds: Sequence[int], num_clients: int | None = None
) -> list[float]:
    """:func:`federated_epsilon` at each of ``rounds``, composed incrementally (a PLD curve
    over every round of 200 costs about 40 s, over every 10th about 2 s; RDP milliseconds)."""
    return accounting.epsilons(
        resolved_noise_multiplier(federated, num_clients),
        sampling_rate(federated, num_clients),
        [int(r) for r in rounds],
        _dp(federated).delta,
        **_account_kwargs(federated, num_clients),
    )


def excluded_metrics(federated: FederatedConfig) -> list[str]:
    """The per-round metrics a run logs that the privacy guarantee does not cover: computed
    from the clients' raw data or updates, published without noise (empty with
    ``dp.log: private``)."""
    if _dp(federated).log == "private":
        return []
    return list(RAW_ROUND_METRICS)


def _sampling_text(federated: FederatedConfig, population: int) -> str:
    dp = _dp(federated)
    m, q = federated.clients_per_round, sampling_rate(federated, population)
    if dp.sampling == "fixed":
        return (
            f"fixed size: exactly {m} of {population} clients per round, without replacement; "
            f"the mean divides by {m}"
        )
    cap = dp.max_clients_per_round
    slots = (
        f"truncated to {cap} clients when more are drawn (a uniformly random {cap} kept)"
        if cap is not None and cap < population
        else f"all {population} clients trained every round, the unsampled masked out"
    )
    return (
        f"Poisson: each of {population} clients joins a round independently with probability "
        f"q = {q:g}; the mean divides by the expected cohort {m} whatever the cohort's size; "
        f"{slots}"
    )


def privacy_report(
    config: Any, rounds: int | None = None, num_clients: int | None = None
) -> dict[str, Any]:
    """What the run's privacy claim is, for metrics.json and report.md.

    ``config``: a ``Config`` or its ``federated`` section (with ``dp`` set); ``rounds``: the
    rounds done (default ``federated.rounds``); ``num_clients``: the clients actually
    partitioned (default ``federated.num_clients``). Returns ``mechanism``, ``adjacency``,
    ``sampling``, ``accountant``, ``noise_multiplier`` (and ``noise_source``), ``clip_norm``,
    ``sampling_rate``, ``rounds``, ``delta``, ``epsilon`` (the configured accountant's),
    ``epsilons`` (both accountants'), ``excluded_metrics``, ``warnings`` and ``lines`` (a
    markdown table for a report section).
    """
    federated = getattr(config, "federated", config)
    if not isinstance(federated, FederatedConfig):
        raise ValueError("privacy_report: expected a Config or its federated section")
    dp = _dp(federated)
    population = num_clients or federated.num_clients
    rounds = federated.rounds if rounds is None else int(rounds)
    sigma = resolved_noise_multiplier(federated, population)
    kwargs = _account_kwargs(federated, population)
    q = sampling_rate(federated, population)
    both = {}
    for name in accounting.ACCOUNTANTS:
        if kwargs["max_sample"] is not None and name == "rdp":
            continue  # a capped Poisson cohort has no RDP event
        both[name] = accounting.epsilon(
            sigma, q, rounds, dp.delta, **{**kwargs, "accountant": name}
        )
    eps = both[dp.accountant]
    unit = "client (all of one client's data)"
    adjacency = f"{ADJACENCY[dp.sampling].replace('record', 'client')}; the unit is one {unit}"
    mechanism = (
        f"Gaussian mechanism on the mean of clipped client updates (DP-FedAvg): each update "
        f"clipped to L2 norm {dp.clip_norm:g}, noise of standard deviation "
        f"{sigma:.4g} x {dp.clip_norm:g} / {federated.clients_per_round} added to the mean "
        f"every round"
    )
    noise_source = (
        "set"
        if dp.target_epsilon is None
        else f"calibrated to target epsilon {dp.target_epsilon:g} after {federated.rounds} rounds"
    )
    accountant_text = (
        f"{dp.accountant.upper()} accountant of dp-accounting {accounting.library_version()}"
    )
    excluded = excluded_metrics(federated)
    warnings = []
    delta_problem = accounting.delta_warning(dp.delta, population)
    if delta_problem:
        warnings.append(delta_problem)
    if federated.secure_aggregation:
        warnings.append(
            "secure aggregation is simulated: the masks derive from a key the server holds, "
            "no client dropout is recovered, and a cohort of one client is not masked"
        )
    outside = ", ".join(excluded) if excluded else "none (dp.log: private)"
    epsilon_cell = "infinity (no noise)" if math.isinf(eps) else f"{eps:.4g}"
    lines = [
        "| privacy | |",
        "|---|---|",
        f"| mechanism | {mechanism} |",
        f"| adjacency | {adjacency} |",
        f"| sampling | {_sampling_text(federated, population)} |",
        f"| noise multiplier | {sigma:.4g} ({noise_source}) |",
        f"| accountant | {accountant_text} |",
        f"| (epsilon, delta) after {rounds} rounds | ({epsilon_cell}, {dp.delta:g}) |",
        *[
            f"| epsilon by {name.upper()} (for comparison) | {value:.4g} |"
            for name, value in both.items()
            if name != dp.accountant
        ],
        f"| logged outside the guarantee | {outside} |",
        *[f"| warning | {w} |" for w in warnings],
    ]
    return {
        "mechanism": mechanism,
        "adjacency": adjacency,
        "sampling": dp.sampling,
        "sampling_description": _sampling_text(federated, population),
        "accountant": dp.accountant,
        "accountant_description": accountant_text,
        "noise_multiplier": sigma,
        "noise_source": noise_source,
        "clip_norm": dp.clip_norm,
        "sampling_rate": q,
        "clients": population,
        "rounds": rounds,
        "delta": dp.delta,
        "epsilon": eps,
        "epsilons": both,
        "excluded_metrics": excluded,
        "warnings": warnings,
        "lines": lines,
    }
