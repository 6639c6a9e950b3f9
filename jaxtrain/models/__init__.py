"""Pure Flax modules, built from config by name."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

from jaxtrain.config import CNNConfig, MLPConfig
from jaxtrain.models.cnn import CNN
from jaxtrain.models.mlp import MLP


def _mlp(config: MLPConfig, num_classes: int) -> nn.Module:
    return MLP(tuple(config.hidden), num_classes, config.activation, config.dropout)


def _cnn(config: CNNConfig, num_classes: int) -> nn.Module:
    return CNN(
        tuple(config.features),
        num_classes,
        config.kernel_size,
        config.dense,
        config.dropout,
        config.batch_norm,
    )


# name in the config -> constructor(config section, num_classes). The one model registry.
MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": _mlp, "cnn": _cnn}


def build_model(config: MLPConfig | CNNConfig, num_classes: int) -> nn.Module:
    """The module named by ``config.name``; called as ``model.apply(vars, x, train=...)``."""
    return MODELS[config.name](config, num_classes)


__all__ = ["CNN", "MLP", "MODELS", "build_model"]
