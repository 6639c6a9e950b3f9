"""Federated training (``jaxtrain federated``): see jaxtrain/federated."""

from __future__ import annotations

from pydantic.dataclasses import dataclass

from jaxtrain.config.base import STRICT


@dataclass(config=STRICT)
class FederatedConfig:
    """Being designed; no keys yet."""
