"""Optax optimizers and schedules from config, hyperparameters injected into the state."""

from __future__ import annotations

import optax

from jaxtrain.config import AdamConfig, AdamWConfig, ScheduleConfig, SGDConfig


def build_schedule(peak: float, config: ScheduleConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup 0 -> ``peak`` over ``warmup_steps``, then constant or cosine decay to
    ``final_fraction * peak`` at ``total_steps``."""
    decay_steps = max(total_steps - config.warmup_steps, 1)
    if config.name == "constant":
        main = optax.constant_schedule(peak)
    else:
        main = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.final_fraction)
    if config.warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, peak, config.warmup_steps)
    return optax.join_schedules([warmup, main], [config.warmup_steps])


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
    config: AdamConfig | AdamWConfig | SGDConfig, total_steps: int
) -> optax.GradientTransformation:
    """The configured optimizer as ``optax.inject_hyperparams``: its state carries
    ``hyperparams["learning_rate"]`` (the schedule's current value), ``weight_decay`` and the
    rest, so a population of settings is a state with a leading axis."""
    kwargs = {
        "learning_rate": build_schedule(config.learning_rate, config.schedule, total_steps),
        "weight_decay": config.weight_decay,
    }
    if config.grad_clip_norm is not None:
        kwargs["grad_clip_norm"] = config.grad_clip_norm
    if config.name == "sgd":
        kwargs.update(momentum=config.momentum, nesterov=config.nesterov)
        return optax.inject_hyperparams(_sgd, static_args=("nesterov",))(**kwargs)
    kwargs.update(b1=config.b1, b2=config.b2, eps=config.eps)
    factory = _adam if config.name == "adam" else _adamw
    return optax.inject_hyperparams(factory)(**kwargs)
