"""The model a transfer run trains: the configured one (with adapters, if any) whose frozen
parameters enter every call as constants (``jax.lax.stop_gradient``), so no gradient is
ever computed for them, whichever step (jit, pmap, micro-batches, mixed precision) runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax

from jaxtrain.transfer.plan import path_of


def stop_frozen(params: Any, frozen: frozenset[str]) -> Any:
    """``params`` with the leaves whose path is in ``frozen`` wrapped in ``stop_gradient``."""
    return jax.tree_util.tree_map_with_path(
        lambda kp, p: jax.lax.stop_gradient(p) if path_of(kp) in frozen else p, params
    )


@dataclass(frozen=True)
class FrozenModel:
    """``init``/``apply`` like ``base`` (a Flax module or :class:`LoRAModel`); ``apply``
    stops the gradient of the ``frozen`` parameter paths. Other attributes are the base's."""

    base: Any
    frozen: frozenset[str]

    def init(self, *args, **kwargs) -> dict[str, Any]:
        return self.base.init(*args, **kwargs)

    def apply(self, variables, *args, **kwargs):
        params = stop_frozen(variables["params"], self.frozen)
        return self.base.apply({**variables, "params": params}, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("base", "frozen"):
            raise AttributeError(name)
        return getattr(self.base, name)
