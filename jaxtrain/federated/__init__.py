"""Federated learning: clients train locally, only updates travel.

A round is one jitted program: ``jax.vmap`` of the ordinary local training (a ``lax.scan``
of steps built from ``make_loss_fn``) over the sampled clients, then an aggregator chain
(clip, weight, noise, secure masks) and an optax server optimizer. See docs/federated.md.
"""

from jaxtrain.federated.aggregate import Aggregator, Cohort, aggregate, chain, weighted
from jaxtrain.federated.client import Client, LocalResult, make_local_train
from jaxtrain.federated.partition import (
    ClientData,
    pack_clients,
    partition,
    partition_by_ids,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)
from jaxtrain.federated.privacy import (
    clip_updates,
    dp_epsilon,
    excluded_metrics,
    federated_epsilon,
    federated_epsilons,
    gaussian_noise,
    privacy_report,
    resolved_noise_multiplier,
)
from jaxtrain.federated.runner import (
    FederatedPieces,
    build_federated,
    check_federated,
    run_federated,
)
from jaxtrain.federated.secure import secure_aggregation
from jaxtrain.federated.server import (
    ServerState,
    build_aggregator,
    build_server_optimizer,
    init_server_state,
    make_round,
    round_options,
)

__all__ = [
    "Aggregator",
    "Client",
    "ClientData",
    "Cohort",
    "FederatedPieces",
    "LocalResult",
    "ServerState",
    "aggregate",
    "build_aggregator",
    "build_federated",
    "build_server_optimizer",
    "chain",
    "check_federated",
    "clip_updates",
    "dp_epsilon",
    "excluded_metrics",
    "federated_epsilon",
    "federated_epsilons",
    "gaussian_noise",
    "init_server_state",
    "make_local_train",
    "make_round",
    "pack_clients",
    "partition",
    "partition_by_ids",
    "partition_dirichlet",
    "partition_iid",
    "partition_shards",
    "privacy_report",
    "resolved_noise_multiplier",
    "round_options",
    "run_federated",
    "secure_aggregation",
    "weighted",
]
