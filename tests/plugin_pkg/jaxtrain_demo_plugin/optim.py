"""An optimizer of the demo plugin: SGD with momentum as an optax factory."""

from __future__ import annotations

import optax


def momentum(learning_rate: float, momentum: float = 0.9, nesterov: bool = False):
    return optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)
