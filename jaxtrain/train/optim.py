"""Optax optimizers and schedules from config, every hyperparameter a number in the state.

The optimizer state holds each setting as an array in ``opt_state.hyperparams``: the peak
learning rate (``peak_learning_rate``), ``weight_decay``, ``b1``/``b2``/``eps`` or
``momentum``, ``grad_clip_norm``. The schedule is a fixed shape applied to the peak each
step, and ``hyperparams["learning_rate"]`` reports the value the last update used. A state
with a leading population axis therefore trains a different setting per member (sweeps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxtrain.config import AdamConfig, AdamWConfig, ScheduleConfig, SGDConfig
from jaxtrain.train.extend import Extension, extend_schedule

PEAK = "peak_learning_rate"
ScheduleShape = Callable[[jax.Array, jax.Array], jax.Array]  # (peak, count) -> learning rate


def build_schedule(peak: float, config: ScheduleConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup 0 -> ``peak`` over ``warmup_steps``, then constant or cosine decay to
    ``final_fraction * peak`` at ``total_steps``. ``peak`` may be a traced array."""
    decay_steps = max(total_steps - config.warmup_steps, 1)
    if config.name == "constant":
        main = optax.constant_schedule(peak)
    else:
        main = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.final_fraction)
    if config.warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, peak, config.warmup_steps)
    return optax.join_schedules([warmup, main], [config.warmup_steps])


class HyperparamsState(NamedTuple):
    """count: i32[] updates done; hyperparams: {name: f32[]} (``learning_rate`` is the one the
    last update used); inner_state: the wrapped optimizer's state."""

    count: jax.Array
    hyperparams: dict[str, jax.Array]
    inner_state: Any


def inject_hyperparams(
    factory: Callable[..., optax.GradientTransformation],
    shape: ScheduleShape,
    static: dict[str, Any] | None = None,
) -> Callable[..., optax.GradientTransformation]:
    """Like ``optax.inject_hyperparams``, but the learning rate is ``shape(peak, count)`` with
    the peak itself a state entry (``peak_learning_rate``), so it can differ per member.

    ``factory(learning_rate=..., **numeric, **static)`` builds the inner optimizer; the
    returned function takes ``peak_learning_rate`` and the other numeric hyperparameters.
    """
    static = static or {}

    def current(hyperparams: dict[str, jax.Array], count: jax.Array) -> dict[str, jax.Array]:
        learning_rate = shape(hyperparams[PEAK], count).astype(jnp.float32)
        return {**hyperparams, "learning_rate": learning_rate}

    def inner(hyperparams: dict[str, jax.Array]) -> optax.GradientTransformation:
        numeric = {k: v for k, v in hyperparams.items() if k != PEAK}
        return factory(**numeric, **static)

    def build(**numeric: float) -> optax.GradientTransformation:
        def init(params) -> HyperparamsState:
            count = jnp.zeros((), jnp.int32)
            values = {k: jnp.asarray(v, jnp.float32) for k, v in numeric.items()}
            hyperparams = current(values, count)
            return HyperparamsState(count, hyperparams, inner(hyperparams).init(params))

        def update(updates, state: HyperparamsState, params=None):
            hyperparams = current(state.hyperparams, state.count)
            updates, inner_state = inner(hyperparams).update(updates, state.inner_state, params)
            count = optax.safe_increment(state.count)
            return updates, HyperparamsState(count, hyperparams, inner_state)

        return optax.GradientTransformation(init, update)

    return build


def _adam(learning_rate, b1, b2, eps, weight_decay, grad_clip_norm=None):
    return optax.chain(
        _clip(grad_clip_norm),
        optax.add_decayed_weights(weight_decay),
        optax.adam(learning_rate, b1=b1, b2=b2, eps=eps),
    )


def _adamw(learning_rate, b1, b2, eps, weight_decay, grad_clip_norm=None):
    return optax.chain(
        _clip(grad_clip_norm),
        optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay),
    )


def _sgd(learning_rate, momentum, weight_decay, nesterov, grad_clip_norm=None):
    return optax.chain(
        _clip(grad_clip_norm),
        optax.add_decayed_weights(weight_decay),
        optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
    )


def _clip(max_norm):
    return optax.identity() if max_norm is None else optax.clip_by_global_norm(max_norm)


def build_optimizer(
    config: AdamConfig | AdamWConfig | SGDConfig,
    total_steps: int,
    wrap: Callable[[optax.GradientTransformation], optax.GradientTransformation] | None = None,
    extensions: Sequence[Extension] = (),
) -> optax.GradientTransformation:
    """The configured optimizer with its settings in the state (see :func:`inject_hyperparams`):
    ``hyperparams`` holds ``peak_learning_rate`` (= ``config.learning_rate``), the current
    ``learning_rate`` (the schedule's value), ``weight_decay`` and the rest.

    ``wrap`` transforms the inner optimizer (inside the hyperparameter state, so
    ``hyperparams`` stays on top): transfer learning uses it to keep no state for frozen
    parameters, scale learning rates per layer and gate gradual unfreezing. ``extensions``
    are the later stages of an extended run (:mod:`jaxtrain.train.extend`); the schedule
    then spans ``total_steps`` (stage 1) and continues or restarts over each.
    """

    def shape(peak: jax.Array, count: jax.Array) -> jax.Array:
        schedule = build_schedule(peak, config.schedule, total_steps)
        if extensions:
            fresh = lambda steps: build_schedule(peak, config.schedule, steps)  # noqa: E731
            schedule = extend_schedule(schedule, extensions, fresh)
        return schedule(count)

    def wrapped(factory):
        return factory if wrap is None else (lambda **kwargs: wrap(factory(**kwargs)))

    numeric = {PEAK: config.learning_rate, "weight_decay": config.weight_decay}
    if config.grad_clip_norm is not None:
        numeric["grad_clip_norm"] = config.grad_clip_norm
    if config.name == "sgd":
        numeric["momentum"] = config.momentum
        static = {"nesterov": config.nesterov}
        return inject_hyperparams(wrapped(_sgd), shape, static)(**numeric)
    numeric.update(b1=config.b1, b2=config.b2, eps=config.eps)
    factory = _adam if config.name == "adam" else _adamw
    return inject_hyperparams(wrapped(factory), shape)(**numeric)


def scale_learning_rate(opt_state: HyperparamsState, factor: float) -> HyperparamsState:
    """The same optimizer state with its peak learning rate multiplied by ``factor`` (the
    schedule's shape is kept, so every later step's rate scales too)."""
    hyperparams = dict(opt_state.hyperparams)
    hyperparams[PEAK] = (hyperparams[PEAK] * factor).astype(hyperparams[PEAK].dtype)
    return opt_state._replace(hyperparams=hyperparams)
