"""Multi-layer perceptron."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "tanh": nn.tanh}


class MLP(nn.Module):
    """Dense layers with an activation (and dropout when training), then class logits.

    Input ``x: f32[batch, ...]`` is flattened; output ``f32[batch, num_classes]``.
    """

    hidden: Sequence[int]
    num_classes: int
    activation: str = "relu"
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = ACTIVATIONS[self.activation](nn.Dense(width)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)
