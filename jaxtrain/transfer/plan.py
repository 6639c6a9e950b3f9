"""What trains: frozen subtrees, head-only training, gradual unfreezing and layer-wise
learning-rate decay, as an optax wrapper around the configured optimizer.

Parameters labelled ``frozen`` (``transfer.freeze``, everything outside the head with
``train: head``, the base weights with ``train: adapters``) go through
``optax.multi_transform`` to ``set_to_zero``: the optimizer keeps no state for them (its
moments are ``MaskedNode``s) and the train step stops their gradients, so they end bitwise
equal to the loaded values. Depth counts top-level modules from the top: the head (or, with
no head, the last module) is depth 0, the module created before it depth 1, and so on.
Layer-wise decay scales depth ``d``'s updates by ``layer_decay ** d``; gradual unfreezing
lets depth ``d`` train from epoch ``d * epochs_per_stage`` (its gradients and updates are
zero before that).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxtrain.config.transfer import TransferConfig
from jaxtrain.transfer.errors import TransferError
from jaxtrain.transfer.load import TransferReport
from jaxtrain.transfer.lora import is_adapter
from jaxtrain.transfer.paths import SEP, flatten, matches, unmatched

TRAIN, FROZEN = "train", "frozen"


def path_of(keypath) -> str:
    """A ``jax.tree_util`` key path of a dict tree as ``a/b/kernel``."""
    return SEP.join(str(getattr(k, "key", getattr(k, "name", k))) for k in keypath)


@dataclass(frozen=True)
class TransferPlan:
    """The per-parameter decisions for one model. ``order``: the parameter paths in the
    order the model created them; ``steps_per_epoch`` converts unfreezing epochs to steps."""

    config: TransferConfig
    order: tuple[str, ...]
    steps_per_epoch: float = 1.0

    def __post_init__(self) -> None:
        for key, patterns in (("freeze", self.config.freeze),):
            missing = unmatched(self.order, patterns)
            if missing:
                raise TransferError(
                    f"transfer.{key}: {missing[0]!r} matches no parameter of the model"
                )

    @property
    def modules(self) -> list[str]:
        seen: dict[str, None] = {}
        for path in self.order:
            seen.setdefault(path.split(SEP, 1)[0], None)
        return list(seen)

    def is_head(self, path: str) -> bool:
        return matches(path, self.config.head)

    def depth(self, path: str) -> int:
        """0 for the head (or the last module when there is no head), then 1, 2, ... for the
        top-level modules below it, going down."""
        head = [m for m in self.modules if any(self.is_head(p) for p in self._under(m))]
        below = [m for m in self.modules if m not in head]
        if not head:
            head, below = below[-1:], below[:-1]
        module = path.split(SEP, 1)[0]
        return 0 if module in head else len(below) - below.index(module)

    def _under(self, module: str) -> list[str]:
        return [p for p in self.order if p.split(SEP, 1)[0] == module]

    def label(self, path: str) -> str:
        """``train`` or ``frozen`` (no gradient, no optimizer state, for the whole run)."""
        config = self.config
        if matches(path, config.freeze):
            return FROZEN
        if config.train == "all":
            return TRAIN
        if config.train == "adapters":
            return TRAIN if is_adapter(path) or self.is_head(path) else FROZEN
        if self.is_head(path) or config.unfreeze is not None:
            return TRAIN
        return FROZEN

    def start_step(self, path: str) -> int:
        """The first step at which ``path`` trains (gradual unfreezing), else 0."""
        unfreeze = self.config.unfreeze
        if unfreeze is None or self.is_head(path):
            return 0
        return int(round(self.depth(path) * unfreeze.epochs_per_stage * self.steps_per_epoch))

    def factor(self, path: str) -> float:
        """The learning-rate multiplier of ``path`` (layer-wise decay), else 1."""
        decay = self.config.layer_decay
        return 1.0 if decay is None else float(decay ** self.depth(path))

    def labels(self, params: Any) -> Any:
        return jax.tree_util.tree_map_with_path(lambda kp, _: self.label(path_of(kp)), params)

    def wrap(self, inner: optax.GradientTransformation) -> optax.GradientTransformation:
        """``inner`` for the trainable parameters only (with decay and unfreezing gates);
        frozen ones get zero updates and no state."""
        parts = [inner]
        if self.config.layer_decay is not None:
            parts.append(scale_by_path(self.factor))
        if self.config.unfreeze is not None:
            parts = [gate_by_path(self.start_step), *parts, gate_by_path(self.start_step)]
        chain = parts[0] if len(parts) == 1 else optax.chain(*parts)
        return optax.multi_transform({TRAIN: chain, FROZEN: optax.set_to_zero()}, self.labels)

    def describe(self, report: TransferReport, params: Any) -> TransferReport:
        """``report`` with the ``trains`` and ``frozen`` parameter paths filled in."""
        paths = list(flatten(params))
        trains = [p for p in paths if self.label(p) == TRAIN]
        if self.config.unfreeze is not None:
            trains = [f"{p} (from step {self.start_step(p)})" for p in trains]
        frozen = [p for p in paths if self.label(p) == FROZEN]
        return dataclasses.replace(report, trains=trains, frozen=frozen)


def scale_by_path(factor) -> optax.GradientTransformation:
    """Multiply each leaf's update by ``factor(path)`` (a Python float per path)."""

    def update(updates, state, params=None):
        del params
        scaled = jax.tree_util.tree_map_with_path(
            lambda kp, u: u * jnp.asarray(factor(path_of(kp)), u.dtype), updates
        )
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


class GateState(NamedTuple):
    count: jax.Array  # i32[]: updates seen


def gate_by_path(start_step) -> optax.GradientTransformation:
    """Zero each leaf's update until update number ``start_step(path)`` (gradual
    unfreezing). Used before and after the optimizer, so moments and weight decay wait too."""

    def init(params) -> GateState:
        return GateState(jnp.zeros((), jnp.int32))

    def update(updates, state: GateState, params=None):
        del params
        gated = jax.tree_util.tree_map_with_path(
            lambda kp, u: jnp.where(state.count >= start_step(path_of(kp)), u, jnp.zeros_like(u)),
            updates,
        )
        return gated, GateState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def creation_order(model: Any, input_shape, input_dtype) -> tuple[str, ...]:
    """Parameter paths in the order ``model`` creates them (jit and pytrees sort dict keys,
    so the order is read from an abstract, unjitted init)."""
    order: list[str] = []
    integer = jnp.issubdtype(jnp.dtype(input_dtype), jnp.integer)

    def init(key):
        dummy = jnp.zeros((1, *input_shape), jnp.int32 if integer else jnp.float32)
        params = model.init({"params": key}, dummy, train=False)["params"]
        order.extend(flatten(params))
        return 0

    jax.eval_shape(init, jax.random.key(0))
    return tuple(order)


__all__ = ["TransferPlan", "creation_order", "gate_by_path", "scale_by_path"]
