"""Rematerialisation: a block whose activations are recomputed in the backward pass."""

from __future__ import annotations

import functools

import flax.linen as nn


@functools.cache
def rematerialised(block: type[nn.Module]) -> type[nn.Module]:
    """``block`` under ``nn.remat`` (``jax.checkpoint``): same parameters, same outputs and
    gradients, but only the block's inputs are kept for the backward pass, which recomputes
    the rest; peak memory falls with depth at the price of one more forward pass.

    The returned class takes ``train`` as its second positional argument (a static Python
    bool, so dropout and BatchNorm branches are chosen when tracing); other keyword
    arguments must be arrays or None: ``Remat(...)(x, train, positions=p)``.
    """

    class Remat(block):
        def __call__(self, x, train, **arrays):
            return super().__call__(x, train=train, **arrays)

    Remat.__name__ = Remat.__qualname__ = f"Remat{block.__name__}"
    return nn.remat(Remat, static_argnums=(2,))  # argument 0 is the module, 1 is x
