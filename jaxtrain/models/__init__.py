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


# Models that need a particular example rank (CNN: [height, width, channels]).
INPUT_RANKS: dict[str, int] = {"cnn": 3}


def check_input_shape(config: MLPConfig | CNNConfig, input_shape: tuple[int, ...]) -> None:
    """Raise ValueError (naming ``model.name``) if the model cannot take examples of this shape."""
    rank = INPUT_RANKS.get(config.name)
    if rank is not None and len(input_shape) != rank:
        raise ValueError(
            f"model.name: {config.name} needs examples of rank {rank} (height, width, channels),"
            f" but the data's examples have shape {tuple(input_shape)}; use model.name=mlp"
        )


def build_model(config: MLPConfig | CNNConfig, num_classes: int) -> nn.Module:
    """The module named by ``config.name``; called as ``model.apply(vars, x, train=...)``."""
    return MODELS[config.name](config, num_classes)


__all__ = ["CNN", "INPUT_RANKS", "MLP", "MODELS", "build_model", "check_input_shape"]
