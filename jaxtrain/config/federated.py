"""Federated training (``jaxtrain federated``): see jaxtrain/federated.

The ``model``, ``optimizer`` (the *client* optimizer) and ``data`` sections of the config
are used as for ``train``; this section says how the training split is spread over clients,
how each round runs and how updates are aggregated.
"""

from __future__ import annotations

import warnings
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from jaxtrain.config.base import (
    STRICT,
    BatchSize,
    Epochs,
    FiniteFloat,
    Fraction,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Seed,
    capped,
)
from jaxtrain.config.privacy import one_noise_setting

_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """A UserWarning on stderr, once per process for each message (configs load repeatedly)."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, UserWarning, stacklevel=2)


Clients = capped(1_000_000, "a sanity cap: every client holds its own part of the training split")


@dataclass(config=STRICT)
class ServerSGDConfig:
    """The server applies ``learning_rate * mean update`` (with momentum: FedAvgM).

    ``learning_rate: 1.0`` and ``momentum: 0.0`` is plain FedAvg: the new global model is the
    weighted mean of the clients' models.
    """

    name: Literal["sgd"] = "sgd"
    learning_rate: PositiveFloat = 1.0
    momentum: Fraction = 0.0


@dataclass(config=STRICT)
class ServerAdamConfig:
    """FedAdam (Reddi et al., 2021): Adam on the negative mean update; ``eps`` is their tau."""

    name: Literal["adam"] = "adam"
    learning_rate: PositiveFloat = 0.01
    b1: Fraction = 0.9
    b2: Fraction = 0.99
    eps: PositiveFloat = 1e-3


@dataclass(config=STRICT)
class ServerYogiConfig(ServerAdamConfig):
    """FedYogi: Yogi on the negative mean update (the same keys as adam)."""

    name: Literal["yogi"] = "yogi"


ServerOptimizerConfig = Annotated[
    ServerSGDConfig | ServerAdamConfig | ServerYogiConfig, Field(discriminator="name")
]


@dataclass(config=STRICT)
class DPConfig:
    """Client-level differential privacy (DP-FedAvg, McMahan et al., 2018); docs/privacy.md.

    Each client's update is clipped to L2 norm ``clip_norm``; the server adds Gaussian noise of
    standard deviation ``noise_multiplier * clip_norm`` to the sum of the clipped updates (of
    ``noise_multiplier * clip_norm / clients_per_round`` to their mean). Set
    ``noise_multiplier`` or ``target_epsilon`` (the noise multiplier is then calibrated so
    that epsilon after ``federated.rounds`` rounds is at most this), not both; neither means
    ``noise_multiplier: 1.0``.

    ``sampling``: ``poisson`` (each client joins a round independently with probability
    ``clients_per_round / num_clients``; the mean divides by ``clients_per_round`` whatever
    the cohort's size; adjacency: add or remove one client) or ``fixed`` (exactly
    ``clients_per_round`` clients without replacement; adjacency: replace one client, which
    costs about twice the noise for the same epsilon). Under poisson every round trains
    ``max_clients_per_round`` client slots (default: all ``num_clients``; the unsampled ones
    are masked out); a smaller cap makes rounds cheaper and keeps a random subset when more
    clients are drawn, which the ``pld`` accountant accounts exactly.

    ``accountant``: ``pld`` (privacy loss distributions: tight) or ``rdp`` (Renyi DP: a
    faster, looser bound), both from ``dp_accounting``. ``delta`` must lie in (0, 1); a
    warning says when it is not below ``1 / num_clients``. ``log``: ``all`` logs every
    round metric (the report lists those outside the guarantee); ``private`` logs only
    privatised ones.
    """

    clip_norm: PositiveFloat = 1.0
    noise_multiplier: NonNegativeFloat | None = None
    target_epsilon: PositiveFloat | None = None
    delta: Annotated[FiniteFloat, Field(gt=0, lt=1)] = 1e-5
    sampling: Literal["poisson", "fixed"] = "poisson"
    max_clients_per_round: Clients | None = None
    accountant: Literal["pld", "rdp"] = "pld"
    log: Literal["all", "private"] = "all"

    @model_validator(mode="after")
    def _one_noise_setting(self) -> DPConfig:
        one_noise_setting(self)
        if self.max_clients_per_round is not None and self.sampling != "poisson":
            raise ValueError(
                "max_clients_per_round: caps a poisson cohort; fixed sampling trains exactly "
                "clients_per_round clients"
            )
        return self


@dataclass(config=STRICT)
class FederatedConfig:
    """Clients, rounds and aggregation.

    ``partition`` spreads the training split over ``num_clients``: ``iid`` (equal random
    parts), ``dirichlet`` (label skew: each class split by Dirichlet(``alpha``) proportions)
    or ``shards`` (the split sorted by label, cut into ``num_clients * shards_per_client``
    shards, ``shards_per_client`` per client). Each round samples ``clients_per_round``
    clients without replacement; each trains ``local_epochs`` passes over its own data, or
    exactly ``local_steps`` steps (set at most one; neither means one epoch) with batches of
    ``batch_size`` (default ``data.batch_size``). ``algorithm``: ``fedavg``; ``fedprox``
    (proximal term ``mu / 2 * ||w - w_global||^2``, ``mu`` read only by fedprox);
    ``fedopt`` (FedAvg clients, an adaptive or momentum ``server_optimizer``); ``scaffold``
    (control variates, option II of Karimireddy et al., 2020). The global model is evaluated
    on the validation split every ``eval_every`` rounds and after the last one; the server
    state is checkpointed every ``checkpoint_every`` rounds and after the last one.
    ``seed`` drives the partition, client sampling, local shuffles and noise; the top-level
    ``seed`` the model's initialisation.
    """

    num_clients: Clients = 100
    partition: Literal["iid", "dirichlet", "shards"] = "iid"
    alpha: PositiveFloat = 0.5
    shards_per_client: PositiveInt = 2
    clients_per_round: PositiveInt = 10
    local_epochs: Epochs | None = None
    local_steps: PositiveInt | None = None
    batch_size: BatchSize | None = None
    algorithm: Literal["fedavg", "fedprox", "fedopt", "scaffold"] = "fedavg"
    mu: NonNegativeFloat = 0.01
    server_optimizer: ServerOptimizerConfig = Field(default_factory=ServerSGDConfig)
    rounds: Epochs = 100
    eval_every: PositiveInt = 10
    checkpoint_every: PositiveInt = 1
    dp: DPConfig | None = None
    secure_aggregation: bool = False
    seed: Seed = 0

    @model_validator(mode="after")
    def _consistent(self) -> FederatedConfig:
        if self.clients_per_round > self.num_clients:
            raise ValueError(
                f"clients_per_round: {self.clients_per_round} is more than num_clients="
                f"{self.num_clients}"
            )
        if self.local_epochs is not None and self.local_steps is not None:
            raise ValueError(
                "local_steps: set local_epochs or local_steps, not both (clients either pass "
                "over their data local_epochs times or take exactly local_steps steps)"
            )
        if self.dp is not None:
            self._check_dp(self.dp)
        server = self.server_optimizer
        if self.algorithm == "fedopt" and server.name == "sgd" and server.momentum == 0:
            raise ValueError(
                "server_optimizer: fedopt needs an adaptive or momentum server optimizer; set "
                "server_optimizer.name to adam or yogi, or server_optimizer.momentum > 0 "
                "(plain sgd is fedavg)"
            )
        return self

    def _check_dp(self, dp: DPConfig) -> None:
        if self.algorithm == "scaffold":
            raise ValueError(
                "algorithm: scaffold cannot be combined with dp: its control variates are "
                "built from unclipped updates and the server's control variate reaches every "
                "client without noise, so one client's data moves later rounds outside the "
                "guarantee; use fedavg, fedprox or fedopt with dp"
            )
        cap = dp.max_clients_per_round
        if cap is not None and not self.clients_per_round <= cap <= self.num_clients:
            raise ValueError(
                f"dp.max_clients_per_round: {cap} should lie between clients_per_round="
                f"{self.clients_per_round} (the expected cohort) and num_clients="
                f"{self.num_clients}"
            )
        if cap is not None and cap < self.num_clients and dp.accountant != "pld":
            raise ValueError(
                "dp.accountant: a capped poisson cohort (max_clients_per_round below "
                "num_clients) is accounted by the pld accountant only; set dp.accountant: pld "
                "or drop the cap"
            )
        if dp.delta >= 1.0 / self.num_clients:
            _warn_once(
                f"federated.dp.delta={dp.delta:g} is not below 1/num_clients="
                f"{1.0 / self.num_clients:.3g}: a mechanism that publishes one client's data "
                "outright meets such a delta; choose delta well below 1/num_clients"
            )


def dp_model_problem(federated: FederatedConfig | None, model: object) -> str | None:
    """Why ``model`` cannot be trained under ``federated.dp``, or None.

    BatchNorm keeps running statistics that every client computes from its own data and the
    server averages without clipping or noise; they are published with the model, outside
    the guarantee. The message names the keys to change.
    """
    if federated is None or federated.dp is None:
        return None
    name = getattr(model, "name", None)
    if name == "resnet" or (name == "cnn" and getattr(model, "batch_norm", False)):
        setting = (
            "model.name: resnet (always batch-normed)"
            if name == "resnet"
            else ("model.batch_norm: true")
        )
        return (
            f"federated.dp: {setting} cannot be trained with client-level DP: BatchNorm's "
            "running statistics are averaged across clients without clipping or noise and "
            "published with the model; use model.name: cnn with model.batch_norm: false (or a "
            "model without BatchNorm), or remove federated.dp"
        )
    return None
