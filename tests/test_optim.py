"""Schedules and optimizers built from config equal closed forms, hand formulas and optax.

References: schedules are checked against their closed forms in float64 NumPy; SGD updates
against the hand formula ``p - lr * (g + w * p)`` (and its momentum / clipping variants) in
float64 NumPy; Adam, AdamW and Nesterov SGD against the optax transformations applied
directly. Tolerances: closed forms and hand formulas rtol=1e-5, atol=1e-7 (the code runs in
float32). Optax-vs-optax rtol=1e-6, atol=1e-8 for SGD; for the Adam family atol=1e-6, because
``inject_hyperparams`` holds b1, b2 as float32 arrays, so ``1 - b2`` is rounded in float32
(0.999 -> relative error ~1.3e-5 in 1 - b2), which moves parameters by ~1e-7 per step. A
semantic error (coupled vs decoupled decay, a missing bias correction) moves them by > 1e-4.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtrain.config import AdamConfig, AdamWConfig, ScheduleConfig, SGDConfig
from jaxtrain.train.optim import build_optimizer, build_schedule

RTOL, ATOL = 1e-5, 1e-7
OPTAX_RTOL, OPTAX_ATOL = 1e-6, 1e-8
ADAM_RTOL, ADAM_ATOL = 1e-6, 1e-6


def _schedule_values(schedule, steps):
    """The schedule at every step in ``steps`` (one jitted, vectorised call)."""
    return np.asarray(jax.jit(schedule)(jnp.asarray(steps, jnp.int32)), np.float64)


def _cosine(peak, t, total, alpha):
    t = np.minimum(t, total)
    return peak * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * t / total)) + alpha)


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((3, 2)).astype(np.float32),
        "b": rng.standard_normal((2,)).astype(np.float32),
    }


def _grads(num, seed=1, scale=1.0):
    return [jax.tree.map(lambda a: a * scale, _params(seed + i)) for i in range(num)]


def _trajectory(tx, params, grads):
    """Apply ``tx`` for ``len(grads)`` steps in one jitted call: (params, state) after each."""

    @jax.jit
    def run(params, grads):
        state, out = tx.init(params), []
        for g in grads:
            updates, state = tx.update(g, state, params)
            params = optax.apply_updates(params, updates)
            out.append((params, state))
        return out

    return run(params, grads)


def _run(tx, params, grads):
    """(params, state) after applying ``tx`` for ``len(grads)`` steps."""
    return _trajectory(tx, params, grads)[-1]


def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _assert_trees_close(actual, expected, rtol, atol):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# schedules


def test_constant_schedule_is_peak_at_every_step():
    schedule = build_schedule(0.3, ScheduleConfig(name="constant"), total_steps=10)
    np.testing.assert_allclose(_schedule_values(schedule, range(15)), 0.3, rtol=RTOL)


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_cosine_schedule_matches_closed_form(alpha):
    peak, total = 0.5, 20
    config = ScheduleConfig(name="cosine", final_fraction=alpha)
    steps = np.array([0, 1, 5, 10, 13, 19, 20, 25])  # past the end it stays at alpha * peak
    values = _schedule_values(build_schedule(peak, config, total), steps)
    np.testing.assert_allclose(values, _cosine(peak, steps, total, alpha), rtol=RTOL, atol=ATOL)
    assert values[0] == pytest.approx(peak)
    assert values[-1] == pytest.approx(alpha * peak, abs=1e-7)


def test_warmup_then_cosine_ramps_linearly_then_decays_shifted_by_warmup():
    peak, warmup, total, alpha = 0.2, 4, 12, 0.05
    config = ScheduleConfig(name="cosine", warmup_steps=warmup, final_fraction=alpha)
    steps = np.arange(0, 16)
    values = _schedule_values(build_schedule(peak, config, total), steps)
    expected = np.where(
        steps < warmup,
        peak * steps / warmup,
        _cosine(peak, steps - warmup, total - warmup, alpha),
    )
    np.testing.assert_allclose(values, expected, rtol=RTOL, atol=ATOL)
    # spot values by hand: 0, peak/2 halfway through warmup, peak at its end, floor at the end
    assert values[0] == 0.0
    assert values[2] == pytest.approx(0.1)
    assert values[4] == pytest.approx(0.2)
    assert values[12] == pytest.approx(alpha * peak)


def test_warmup_then_constant_ramps_linearly_then_holds_peak():
    peak, warmup = 0.1, 5
    config = ScheduleConfig(name="constant", warmup_steps=warmup)
    steps = np.arange(0, 12)
    values = _schedule_values(build_schedule(peak, config, total_steps=10), steps)
    expected = np.minimum(steps / warmup, 1.0) * peak
    np.testing.assert_allclose(values, expected, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# hyperparameters in the state


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            SGDConfig(learning_rate=0.05, momentum=0.8, weight_decay=0.01),
            {"learning_rate": 0.05, "momentum": 0.8, "weight_decay": 0.01},
        ),
        (
            SGDConfig(learning_rate=0.05, grad_clip_norm=2.0),
            {"learning_rate": 0.05, "momentum": 0.9, "weight_decay": 0.0, "grad_clip_norm": 2.0},
        ),
        (
            AdamConfig(learning_rate=0.002, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1),
            {"learning_rate": 0.002, "b1": 0.8, "b2": 0.99, "eps": 1e-6, "weight_decay": 0.1},
        ),
        (
            AdamWConfig(learning_rate=0.003, weight_decay=0.02),
            {"learning_rate": 0.003, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.02},
        ),
    ],
)
def test_optimizer_state_carries_configured_hyperparams(config, expected):
    state = build_optimizer(config, total_steps=10).init(_params())
    hyperparams = state.hyperparams
    # the peak is a state entry too (so it can differ per member of a population); with a
    # constant schedule the current learning rate equals it
    expected = {**expected, "peak_learning_rate": expected["learning_rate"]}
    assert set(hyperparams) == set(expected)
    for name, value in expected.items():
        assert float(hyperparams[name]) == pytest.approx(value, rel=1e-6), name


def test_optimizer_learning_rate_hyperparam_and_updates_follow_the_schedule():
    # SGD without momentum: the update at step t is exactly -schedule(t) * g
    config = SGDConfig(
        learning_rate=0.1,
        momentum=0.0,
        schedule=ScheduleConfig(name="cosine", warmup_steps=2, final_fraction=0.0),
    )
    total = 6
    tx = build_optimizer(config, total_steps=total)
    params, grads = _params(), _grads(5)
    lr = [0.0, 0.05] + [_cosine(0.1, t - 2, total - 2, 0.0) for t in range(2, 5)]

    assert float(tx.init(params).hyperparams["learning_rate"]) == 0.0  # schedule(0)
    expected = _f64(params)
    for t, (new_params, state) in enumerate(_trajectory(tx, params, grads)):
        expected = jax.tree.map(lambda p, g, t=t: p - lr[t] * g, expected, _f64(grads[t]))
        # after an update the state holds the learning rate that update used
        assert float(state.hyperparams["learning_rate"]) == pytest.approx(lr[t], abs=1e-7)
        _assert_trees_close(new_params, expected, RTOL, ATOL)


# ---------------------------------------------------------------------------------------------
# one update against hand formulas and optax


def test_sgd_step_with_weight_decay_matches_hand_formula():
    lr, wd = 0.1, 0.05
    tx = build_optimizer(SGDConfig(learning_rate=lr, momentum=0.0, weight_decay=wd), 10)
    params, (g,) = _params(), _grads(1)
    new_params, _ = _run(tx, params, [g])
    expected = jax.tree.map(lambda p, g: p - lr * (g + wd * p), _f64(params), _f64(g))
    _assert_trees_close(new_params, expected, RTOL, ATOL)


def test_sgd_momentum_with_weight_decay_matches_hand_formula_over_two_steps():
    lr, mu, wd = 0.1, 0.9, 0.05
    tx = build_optimizer(SGDConfig(learning_rate=lr, momentum=mu, weight_decay=wd), 10)
    params, grads = _params(), _grads(2)
    p, m = _f64(params), jax.tree.map(np.zeros_like, _f64(params))
    for g in _f64(grads):
        m = jax.tree.map(lambda m, g, p: g + wd * p + mu * m, m, g, p)
        p = jax.tree.map(lambda p, m: p - lr * m, p, m)
    new_params, _ = _run(tx, params, grads)
    _assert_trees_close(new_params, p, RTOL, ATOL)


def test_adamw_matches_optax_adamw_applied_directly():
    kw = {"b1": 0.85, "b2": 0.995, "eps": 1e-7, "weight_decay": 0.03}
    tx = build_optimizer(AdamWConfig(learning_rate=0.01, **kw), 10)
    params, grads = _params(), _grads(3)
    ours, _ = _run(tx, params, grads)
    reference, _ = _run(optax.adamw(0.01, **kw), params, grads)
    _assert_trees_close(ours, reference, ADAM_RTOL, ADAM_ATOL)


def test_adam_weight_decay_is_coupled_l2_added_to_the_gradient():
    lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-8
    tx = build_optimizer(AdamConfig(learning_rate=lr, weight_decay=wd), 10)
    params, grads = _params(), _grads(3)
    trajectory = _trajectory(tx, params, grads)
    (one, _), (ours, _) = trajectory[0], trajectory[-1]
    coupled = optax.chain(optax.add_decayed_weights(wd), optax.adam(lr, b1=b1, b2=b2, eps=eps))
    reference, _ = _run(coupled, params, grads)
    _assert_trees_close(ours, reference, ADAM_RTOL, ADAM_ATOL)

    # first step by hand: bias-corrected moments are g' and g'^2, so p - lr * g'/(|g'| + eps)
    expected = jax.tree.map(
        lambda p, g: p - lr * (g + wd * p) / (np.abs(g + wd * p) + eps),
        _f64(params),
        _f64(grads[0]),
    )
    _assert_trees_close(one, expected, RTOL, ATOL)

    # and it is not AdamW's decoupled decay
    decoupled, _ = _run(optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd), params, grads)
    assert not np.allclose(ours["w"], decoupled["w"], rtol=1e-4)


def test_grad_clip_norm_caps_sgd_update_norm_at_lr_times_clip():
    lr, clip = 0.1, 0.5
    tx = build_optimizer(SGDConfig(learning_rate=lr, momentum=0.0, grad_clip_norm=clip), 10)
    params = _params()
    (big,) = _grads(1, scale=3.0)
    big_norm = np.sqrt(sum(np.sum(np.square(_f64(a))) for a in jax.tree.leaves(big)))
    assert big_norm > clip
    small = jax.tree.map(lambda a: a * (0.5 * clip / big_norm), big)  # norm clip / 2

    # without momentum the optimizer is stateless, so step 2 only sees the small gradient
    (after_big, _), (after_small, _) = _trajectory(tx, params, [big, small])

    update = jax.tree.map(lambda n, p: np.asarray(n, np.float64) - p, after_big, _f64(params))
    update_norm = np.sqrt(sum(np.sum(np.square(u)) for u in jax.tree.leaves(update)))
    assert update_norm == pytest.approx(lr * clip, rel=1e-4)
    # same direction as the gradient: -lr * clip * g / |g|
    expected = jax.tree.map(lambda g: -lr * clip * g / big_norm, _f64(big))
    _assert_trees_close(update, expected, 1e-4, 1e-6)

    # a gradient already inside the ball is left alone: -lr * g
    expected = jax.tree.map(lambda p, g: p - lr * g, _f64(after_big), _f64(small))
    _assert_trees_close(after_small, expected, RTOL, ATOL)


def test_nesterov_sgd_matches_optax_sgd_nesterov():
    lr, mu = 0.05, 0.9
    tx = build_optimizer(SGDConfig(learning_rate=lr, momentum=mu, nesterov=True), 10)
    params, grads = _params(), _grads(3)
    ours, _ = _run(tx, params, grads)
    reference, _ = _run(optax.sgd(lr, momentum=mu, nesterov=True), params, grads)
    _assert_trees_close(ours, reference, OPTAX_RTOL, OPTAX_ATOL)
    heavy_ball, _ = _run(optax.sgd(lr, momentum=mu, nesterov=False), params, grads)
    assert not np.allclose(ours["w"], heavy_ball["w"], rtol=1e-4)
