"""Model families of the demo plugin: a linen MLP with its own config class (a ModelSpec) and
an NNX MLP named by its class (its config derived from ``__init__``)."""

from __future__ import annotations

import flax.linen as nn
import jax
from flax import nnx
from pydantic.dataclasses import dataclass

from jaxtrain.registry import ModelSpec


@dataclass(frozen=True)
class WideMLPConfig:
    """The keys of ``demo_wide_mlp``."""

    width: int = 64
    depth: int = 1


class WideMLP(nn.Module):
    """``depth`` ReLU layers of ``width`` units, then ``num_outputs`` logits (the built-in
    ``mlp`` with ``hidden: [width] * depth``, layer for layer)."""

    width: int = 64
    num_outputs: int = 2
    depth: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for _ in range(self.depth):
            x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(self.num_outputs)(x)


def build_wide_mlp(config: WideMLPConfig, num_outputs: int, input_shape: tuple[int, ...]):
    return WideMLP(width=config.width, num_outputs=num_outputs, depth=config.depth)


WIDE_MLP = ModelSpec(build_wide_mlp, WideMLPConfig, tasks=("classification", "regression"))


class NNXMLP(nnx.Module):
    """One hidden ReLU layer in Flax NNX."""

    def __init__(self, in_features: int, num_outputs: int, width: int = 32, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(in_features, width, rngs=rngs)
        self.out = nnx.Linear(width, num_outputs, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden(x.reshape((x.shape[0], -1)))))
