"""Loss functions: pure, per-example."""

from __future__ import annotations

import jax
import optax


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """logits: f32[batch, classes], labels: i32[batch] -> f32[batch] (nats)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
