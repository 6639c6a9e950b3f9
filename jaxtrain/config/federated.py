"""Federated training (``jaxtrain federated``): see jaxtrain/federated.

The ``model``, ``optimizer`` (the *client* optimizer) and ``data`` sections of the config
are used as for ``train``; this section says how the training split is spread over clients,
how each round runs and how updates are aggregated.
"""

from __future__ import annotations

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
    """Client-level differential privacy (DP-FedAvg, McMahan et al., 2018).

    Each client's update is clipped to L2 norm ``clip_norm``; the server adds Gaussian noise of
    standard deviation ``noise_multiplier * clip_norm`` to the sum of the (equally weighted)
    clipped updates. The RDP accountant reports epsilon at ``delta`` after every round.
    """

    clip_norm: PositiveFloat = 1.0
    noise_multiplier: NonNegativeFloat = 1.0
    delta: Annotated[FiniteFloat, Field(gt=0, lt=1)] = 1e-5


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
        server = self.server_optimizer
        if self.algorithm == "fedopt" and server.name == "sgd" and server.momentum == 0:
            raise ValueError(
                "server_optimizer: fedopt needs an adaptive or momentum server optimizer; set "
                "server_optimizer.name to adam or yogi, or server_optimizer.momentum > 0 "
                "(plain sgd is fedavg)"
            )
        return self
