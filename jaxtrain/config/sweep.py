"""A vmapped hyperparameter sweep (``jaxtrain sweep``): see jaxtrain/sweep."""

from __future__ import annotations

from pydantic.dataclasses import dataclass

from jaxtrain.config.base import STRICT


@dataclass(config=STRICT)
class SweepConfig:
    """Being designed; no keys yet."""
