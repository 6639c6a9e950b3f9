"""Train and eval steps equal hand computations; they are pure, jittable and reproducible.

References: for a linear model (an MLP with no hidden layer: one Dense to the logits) the loss
is written out by hand as ``-mean(log_softmax(x @ W + b)[i, y_i])`` and differentiated with
``jax.grad``; the SGD update ``p - lr * grad``, accuracy, gradient norm and the eval sums
(loss sum, count, confusion matrix over the real rows only) are computed in NumPy.
Tolerance: rtol=1e-5, atol=1e-6 for floats (float32 arithmetic in a different order); counts,
confusion matrices, steps and repeated runs are compared exactly (bitwise).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrain.config import MLPConfig, ScheduleConfig, SGDConfig
from jaxtrain.models import build_model
from jaxtrain.train.optim import build_optimizer
from jaxtrain.train.state import create_train_state
from jaxtrain.train.step import make_eval_step, make_train_step

RTOL, ATOL = 1e-5, 1e-6
NUM_CLASSES, FEATURES = 3, 4


def _sgd(lr, schedule=None):
    config = SGDConfig(learning_rate=lr, momentum=0.0, weight_decay=0.0)
    if schedule is not None:
        config = SGDConfig(learning_rate=lr, momentum=0.0, weight_decay=0.0, schedule=schedule)
    return build_optimizer(config, total_steps=100)


def _state(model, tx, input_shape=(FEATURES,), seed=0):
    return jax.jit(lambda: create_train_state(model, tx, input_shape, seed))()


def _batch(n=6, seed=0, num_classes=NUM_CLASSES, features=FEATURES):
    rng = np.random.default_rng(seed)
    return {
        "inputs": rng.standard_normal((n, features)).astype(np.float32),
        "labels": rng.integers(0, num_classes, n).astype(np.int32),
    }


def _hand_loss(w, b, x, y):
    logp = jax.nn.log_softmax(x @ w + b)
    return -jnp.mean(logp[jnp.arange(len(y)), y])


_hand_grad = jax.jit(jax.grad(_hand_loss, argnums=(0, 1)))


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def linear():
    """A linear classifier, plain SGD (lr 0.5), its initial state and a jitted train step."""
    model = build_model(MLPConfig(hidden=()), NUM_CLASSES)
    tx = _sgd(0.5)
    return model, tx, _state(model, tx), jax.jit(make_train_step(model, tx))


# ---------------------------------------------------------------------------------------------
# train step


def test_sgd_train_step_on_linear_model_equals_hand_gradient_update(linear):
    model, tx, state, step = linear
    batch = _batch()
    lr = 0.5
    w, b = state.params["Dense_0"]["kernel"], state.params["Dense_0"]["bias"]
    assert set(state.params) == {"Dense_0"}  # really just one linear layer

    grad_w, grad_b = _hand_grad(w, b, batch["inputs"], batch["labels"])
    new_state, _ = step(state, batch)

    new = new_state.params["Dense_0"]
    np.testing.assert_allclose(new["kernel"], w - lr * grad_w, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(new["bias"], b - lr * grad_b, rtol=RTOL, atol=ATOL)
    assert not np.allclose(new["kernel"], w)  # the step did move the parameters


def test_train_step_metrics_equal_hand_values(linear):
    model, tx, state, step = linear
    batch = _batch(n=8, seed=3)
    x = batch["inputs"].astype(np.float64)
    w = np.asarray(state.params["Dense_0"]["kernel"], np.float64)
    b = np.asarray(state.params["Dense_0"]["bias"], np.float64)

    logits = x @ w + b
    # labels chosen so that exactly 5 of the 8 predictions are right: accuracy 5/8
    y = logits.argmax(1)
    y[::3] = (y[::3] + 1) % NUM_CLASSES
    batch["labels"] = y.astype(np.int32)
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    loss = -logp[np.arange(len(y)), y].mean()
    accuracy = np.mean(logits.argmax(1) == y)
    assert accuracy == 5 / 8
    # d loss / d logits = (softmax - onehot) / n; then W gets x^T of it, b its column sums
    d_logits = (np.exp(logp) - np.eye(NUM_CLASSES)[y]) / len(y)
    grad_norm = np.sqrt(np.sum((x.T @ d_logits) ** 2) + np.sum(d_logits.sum(0) ** 2))

    _, metrics = step(state, batch)
    assert set(metrics) == {"loss", "accuracy", "grad_norm", "learning_rate", "nonfinite"}
    assert float(metrics["nonfinite"]) == 0.0
    assert float(metrics["loss"]) == pytest.approx(loss, rel=RTOL)
    assert float(metrics["accuracy"]) == pytest.approx(accuracy, abs=1e-7)
    assert float(metrics["grad_norm"]) == pytest.approx(grad_norm, rel=RTOL)
    assert float(metrics["learning_rate"]) == pytest.approx(0.5, rel=1e-7)
    for value in metrics.values():
        assert value.shape == () and value.dtype == jnp.float32


def test_train_step_increments_step_and_keeps_rng(linear):
    model, tx, state, step = linear
    assert int(state.step) == 0
    state_1, _ = step(state, _batch())
    state_2, _ = step(state_1, _batch(seed=1))
    assert (int(state_1.step), int(state_2.step)) == (1, 2)
    assert state_2.step.dtype == jnp.int32
    np.testing.assert_array_equal(jax.random.key_data(state_2.rng), jax.random.key_data(state.rng))


def test_train_step_is_jittable_and_bitwise_deterministic(linear):
    model, tx, state, step = linear
    batch = _batch(seed=5)
    first = step(state, batch)
    again = step(state, batch)
    recompiled = jax.jit(make_train_step(model, tx))(state, batch)
    _assert_trees_equal(first, again)
    _assert_trees_equal(first, recompiled)


def test_reported_learning_rate_is_the_scheduled_one_the_step_used():
    # linear warmup over 2 steps to 0.4: the steps use 0, 0.2, 0.4
    model = build_model(MLPConfig(hidden=()), NUM_CLASSES)
    tx = _sgd(0.4, ScheduleConfig(name="constant", warmup_steps=2))
    state = _state(model, tx)
    step = jax.jit(make_train_step(model, tx))
    batch = _batch(seed=7)
    x, y = batch["inputs"], batch["labels"]
    for lr in (0.0, 0.2, 0.4):
        w, b = state.params["Dense_0"]["kernel"], state.params["Dense_0"]["bias"]
        grad_w, _ = _hand_grad(w, b, x, y)
        state, metrics = step(state, batch)
        assert float(metrics["learning_rate"]) == pytest.approx(lr, abs=1e-7)
        np.testing.assert_allclose(
            state.params["Dense_0"]["kernel"], w - lr * grad_w, rtol=RTOL, atol=ATOL
        )


def test_dropout_mask_changes_with_step_but_is_reproducible_from_the_state():
    model = build_model(MLPConfig(hidden=(32,), dropout=0.5), NUM_CLASSES)
    tx = _sgd(0.1)
    state = _state(model, tx)
    step = jax.jit(make_train_step(model, tx))
    batch = _batch(n=8, seed=2)

    state_1, metrics_0 = step(state, batch)
    _, metrics_0_again = step(state, batch)
    assert float(metrics_0["loss"]) == float(metrics_0_again["loss"])  # same state, same mask

    # same parameters, next step: only the dropout key differs, so the loss does too
    rewound = state_1.replace(params=state.params, opt_state=state.opt_state)
    _, metrics_1 = step(rewound, batch)
    assert float(metrics_1["loss"]) != pytest.approx(float(metrics_0["loss"]), rel=1e-3)

    # step s draws its dropout key as fold_in(rng, s) (TrainState's documented contract)
    def hand_loss(s):
        logits = model.apply(
            {"params": state.params},
            batch["inputs"],
            train=True,
            rngs={"dropout": jax.random.fold_in(state.rng, s)},
        )
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(logp[jnp.arange(8), batch["labels"]])

    hand = jax.jit(hand_loss)
    assert float(metrics_0["loss"]) == pytest.approx(float(hand(0)), rel=RTOL)
    assert float(metrics_1["loss"]) == pytest.approx(float(hand(1)), rel=RTOL)


def test_loss_decreases_on_separable_problem_over_50_steps():
    rng = np.random.default_rng(0)
    n = 32
    labels = np.arange(n) % 2
    centers = np.array([[-2.0, -2.0], [2.0, 2.0]])
    inputs = centers[labels] + 0.5 * rng.standard_normal((n, 2))
    batch = {"inputs": inputs.astype(np.float32), "labels": labels.astype(np.int32)}

    model = build_model(MLPConfig(hidden=()), 2)
    tx = _sgd(0.1)
    step = make_train_step(model, tx)

    @jax.jit
    def fit(state):
        return jax.lax.scan(lambda s, _: step(s, batch), state, None, length=50)

    final, metrics = fit(_state(model, tx, input_shape=(2,)))
    losses = np.asarray(metrics["loss"])
    assert int(final.step) == 50
    assert losses[-1] < 0.25 * losses[0]
    assert np.all(np.diff(losses) <= 1e-6)  # full-batch GD on a convex loss, small lr
    assert float(metrics["accuracy"][-1]) == 1.0


# ---------------------------------------------------------------------------------------------
# eval step


def test_eval_step_ignores_padded_rows():
    model = build_model(MLPConfig(hidden=(5,)), NUM_CLASSES)
    state = _state(model, _sgd(0.1))
    eval_step = jax.jit(make_eval_step(model, NUM_CLASSES))

    real = _batch(n=5, seed=11)
    # padding rows hold garbage inputs and labels; only the mask says they are not real
    garbage = {
        "inputs": np.full((3, FEATURES), 50.0, np.float32) * np.array([[1], [-1], [2]]),
        "labels": np.array([2, 0, 1], np.int32),
    }
    padded = {k: np.concatenate([real[k], garbage[k]]) for k in real}
    padded["mask"] = np.array([True] * 5 + [False] * 3)

    # hand reference on the real rows only
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), state.params)
    x, y = real["inputs"].astype(np.float64), real["labels"]
    h = np.maximum(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0.0)
    logits = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    shifted = logits - logits.max(1, keepdims=True)
    losses = np.log(np.exp(shifted).sum(1)) - shifted[np.arange(5), y]
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(confusion, (y, logits.argmax(1)), 1)

    sums = eval_step(state, padded)
    assert float(sums["loss_sum"]) == pytest.approx(losses.sum(), rel=RTOL)
    assert int(sums["count"]) == 5
    np.testing.assert_array_equal(np.asarray(sums["confusion"]), confusion)
    assert sums["confusion"].shape == (NUM_CLASSES, NUM_CLASSES)
