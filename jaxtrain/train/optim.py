"""Optax optimizers and schedules from config, every hyperparameter a number in the state.

The optimizer state holds each setting as an array in ``opt_state.hyperparams``: the peak
learning rate (``peak_learning_rate``), ``weight_decay``, ``b1``/``b2``/``eps`` or
``momentum``, ``grad_clip_norm``. The schedule is a fixed shape applied to the peak each
step, and ``hyperparams["learning_rate"]`` reports the value the last update used. A state
with a leading population axis therefore trains a different setting per member (sweeps).

A registered or import-path optimizer (``optimizer.name: optax:adamw``) is wrapped the same
way: its learning rate becomes the peak of the ``schedule:`` key, its float settings state
entries under their own names. A ready ``optax.GradientTransformation`` (given to
:func:`jaxtrain.fit`) is used as it is: :func:`find_hyperparams` and
:func:`replace_hyperparams` then read and set what ``optax.inject_hyperparams`` exposes, under
optax's names, wherever it sits in the state (inside ``optax.chain`` too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxtrain import registry
from jaxtrain.config import ScheduleConfig
from jaxtrain.train.extend import Extension, extend_schedule

PEAK = registry.PEAK  # "peak_learning_rate"
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
    config: Any,
    total_steps: int,
    wrap: Callable[[optax.GradientTransformation], optax.GradientTransformation] | None = None,
    extensions: Sequence[Extension] = (),
) -> optax.GradientTransformation:
    """The configured optimizer with its settings in the state (see :func:`inject_hyperparams`):
    ``hyperparams`` holds ``peak_learning_rate`` (= ``config.learning_rate``), the current
    ``learning_rate`` (the schedule's value), ``weight_decay`` and the rest.

    ``config`` is a built-in section (adam, adamw, sgd) or one of a registered / import-path
    optimizer (its float settings in the state under their own names; the ready
    transformation of ``optimizer.name: given`` as it is). ``wrap`` transforms the inner
    optimizer (inside the hyperparameter state, so ``hyperparams`` stays on top): transfer
    learning uses it to keep no state for frozen parameters, scale learning rates per layer
    and gate gradual unfreezing. ``extensions`` are the later stages of an extended run
    (:mod:`jaxtrain.train.extend`); the schedule then spans ``total_steps`` (stage 1) and
    continues or restarts over each.
    """

    def shape(peak: jax.Array, count: jax.Array) -> jax.Array:
        schedule = build_schedule(peak, config.schedule, total_steps)
        if extensions:
            fresh = lambda steps: build_schedule(peak, config.schedule, steps)  # noqa: E731
            schedule = extend_schedule(schedule, extensions, fresh)
        return schedule(count)

    def wrapped(factory):
        return factory if wrap is None else (lambda **kwargs: wrap(factory(**kwargs)))

    if config.name not in registry.BUILTIN_OPTIMIZERS:
        return _build_registered(config, total_steps, wrap, extensions)
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


def _build_registered(
    config: Any, total_steps: int, wrap, extensions: Sequence[Extension] = ()
) -> optax.GradientTransformation:
    """A registered / import-path optimizer: ``factory(learning_rate=..., **settings)`` with its
    float settings in the state and the learning rate shaped by ``config.schedule`` (constant
    without one), extended over ``extensions`` as the built-ins are."""
    family = registry.resolve("optimizer", config.name)
    if family.spec.transformation is not None:
        if extensions:  # its schedule is inside the transformation, out of jaxtrain's reach
            raise ValueError(
                f"train.extend_schedule: optimizer {config.name!r} is a ready optax "
                "transformation with its own schedule, which jaxtrain cannot extend; "
                "give a transformation laid out for the whole run instead"
            )
        return family.spec.transformation if wrap is None else wrap(family.spec.transformation)
    settings = family.settings(config)
    schedule = settings.pop("schedule", None) or ScheduleConfig()
    numeric = {PEAK: settings.pop("learning_rate")}
    numeric.update({k: settings.pop(k) for k in family.floats if k in settings})

    def shape(peak: jax.Array, count: jax.Array) -> jax.Array:
        shaped = build_schedule(peak, schedule, total_steps)
        if extensions:
            fresh = lambda steps: build_schedule(peak, schedule, steps)  # noqa: E731
            shaped = extend_schedule(shaped, extensions, fresh)
        return shaped(count)

    factory = family.spec.factory
    if wrap is not None:
        inner = factory

        def factory(**kwargs):
            return wrap(inner(**kwargs))

    return inject_hyperparams(factory, shape, settings)(**numeric)


# --- hyperparameters in any optimizer state --------------------------------------------------


def find_hyperparams(opt_state: Any) -> dict[str, jax.Array] | None:
    """The first ``hyperparams`` dict in ``opt_state`` (jaxtrain's optimizers and
    ``optax.inject_hyperparams`` keep one, possibly inside ``optax.chain``); None without."""
    found = []

    def visit(node):
        if found:
            return node
        hyperparams = getattr(node, "hyperparams", None)
        if isinstance(hyperparams, dict):
            found.append(dict(hyperparams))
        return node

    _rebuild(opt_state, visit)
    return found[0] if found else None


def replace_hyperparams(opt_state: Any, values: dict[str, Any]) -> Any:
    """``opt_state`` with hyperparameters set to ``values`` (arrays broadcast to the stored
    shapes and dtypes): the names as the state has them (``learning_rate`` means
    ``peak_learning_rate`` for jaxtrain's own optimizers, whose ``learning_rate`` is the
    schedule's output). Raises ValueError naming what the state offers."""
    if not values:
        return opt_state
    available = find_hyperparams(opt_state)
    if available is None:
        raise ValueError(
            "the optimizer keeps no hyperparameters in its state; build it with "
            "optax.inject_hyperparams (optax.inject_hyperparams(optax.adamw)(learning_rate=3e-3))"
            " to set or sweep them"
        )
    alias = {"learning_rate": PEAK} if PEAK in available else {}
    names = {alias.get(k, k): v for k, v in values.items()}
    unknown = sorted(set(names) - set(available))
    if unknown:
        offered = sorted(k for k in available if not (k == "learning_rate" and PEAK in available))
        raise ValueError(
            f"the optimizer has no hyperparameter {unknown[0]!r} in its state (it has: "
            f"{', '.join(offered)})"
        )
    done = []

    def visit(node):
        hyperparams = getattr(node, "hyperparams", None)
        if done or not isinstance(hyperparams, dict):
            return node
        done.append(True)
        scheduled = set(getattr(node, "hyperparams_states", None) or ())
        merged = dict(hyperparams)
        for name, value in names.items():
            if name in scheduled:
                raise ValueError(
                    f"the optimizer's {name} follows a schedule inside "
                    "optax.inject_hyperparams; it cannot be set from outside"
                )
            old = merged[name]
            merged[name] = jnp.asarray(value, old.dtype).reshape(jnp.shape(old))
        return node._replace(hyperparams=merged)

    return _rebuild(opt_state, visit)


def _rebuild(node: Any, visit: Callable[[Any], Any]) -> Any:
    """``node`` with ``visit`` applied to every state that has ``hyperparams`` (depth first,
    in order); tuples, named tuples and lists are rebuilt around the results."""
    if isinstance(getattr(node, "hyperparams", None), dict):
        return visit(node)
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return type(node)(*(_rebuild(child, visit) for child in node))
    if isinstance(node, tuple | list):
        return type(node)(_rebuild(child, visit) for child in node)
    if isinstance(node, dict):  # optax.multi_transform keeps its inner states by label
        return {key: _rebuild(child, visit) for key, child in node.items()}
    return node


def scale_learning_rate(opt_state: Any, factor: float) -> Any:
    """The same optimizer state with its learning rate multiplied by ``factor``: jaxtrain's
    peak (the schedule's shape is kept, so every later step's rate scales too), or the
    ``learning_rate`` of an ``optax.inject_hyperparams`` state. Raises ValueError when the
    state keeps no learning rate that can be scaled (a plain optax transformation)."""
    hyperparams = find_hyperparams(opt_state)
    name = PEAK if hyperparams and PEAK in hyperparams else "learning_rate"
    if hyperparams is None or name not in hyperparams:
        raise ValueError(
            "the optimizer keeps its learning rate to itself, so it cannot be scaled; build it "
            "with optax.inject_hyperparams or name it in the config"
        )
    value = hyperparams[name]
    return replace_hyperparams(opt_state, {name: (value * factor).astype(value.dtype)})
