"""ResNet (shapes, batch statistics, learning, parameter count) and linear models vs scikit-learn.

Tolerances: the closed form is compared with ``LinearRegression``/``Ridge`` at rtol=1e-4 in
float32 and rtol=1e-9 in float64 (``jax.enable_x64``). Gradient-based fits (``optax.lbfgs``,
full batch, float64) are compared with scikit-learn's tightly converged estimators at
rtol=1e-5/atol=1e-6: both solve the same strictly convex problem, so only the solvers'
stopping points differ. Shapes and parameter counts are compared exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris, load_wine
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from jaxtrain.models.linear import Linear, fit_least_squares, l2_penalty
from jaxtrain.models.resnet import ResNet

# ---------------------------------------------------------------------------------------------
# ResNet


def _digits(n: int = 256):
    data = load_digits()
    x = (data.images[:n] / 16.0).astype(np.float32)[..., None]  # [n, 8, 8, 1]
    return x, data.target[:n].astype(np.int32)


def _resnet_param_count(stage_sizes, features, channels, num_classes, preact):
    """Closed form: 3x3 convs and 1x1 projections without bias, 2 parameters per BN channel."""
    count = 9 * channels * features[0] + (0 if preact else 2 * features[0])  # stem
    width = features[0]
    for stage, (blocks, out) in enumerate(zip(stage_sizes, features, strict=True)):
        for block in range(blocks):
            count += 9 * width * out + 9 * out * out  # two convs
            count += 2 * (width if preact else out) + 2 * out  # two norms
            if (stage > 0 and block == 0) or width != out:  # projection (+ norm if standard)
                count += width * out + (0 if preact else 2 * out)
            width = out
    if preact:
        count += 2 * width  # final norm
    return count + width * num_classes + num_classes  # head


@pytest.mark.parametrize("preact", [False, True])
def test_resnet_output_shape_and_param_count(preact):
    model = ResNet((2, 2), (16, 32), num_classes=10, preact=preact)
    x = jax.ShapeDtypeStruct((3, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert out.shape == (3, 10) and out.dtype == jnp.float32
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables["params"]))
    assert count == _resnet_param_count((2, 2), (16, 32), 3, 10, preact)
    assert 10_000 < count < 200_000  # sane for a small-image ResNet


def test_resnet_bfloat16_compute_returns_float32_logits():
    model = ResNet((1,), (8,), num_classes=4, dtype=jnp.bfloat16)
    x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
    assert out.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables["params"]))


def test_resnet_rejects_mismatched_stages():
    with pytest.raises(ValueError, match="one entry per stage"):
        ResNet((2, 2), (16,), num_classes=3).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))


def test_resnet_batch_stats_update_in_train_mode_only_and_are_used_in_eval():
    model = ResNet((1, 1), (8, 16), num_classes=10, dropout=0.5)
    x, _ = _digits(64)
    variables = jax.jit(model.init)(jax.random.key(0), x[:1])
    stats = variables["batch_stats"]

    @jax.jit
    def train(variables, x):
        return model.apply(
            variables, x, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"]
        )

    @jax.jit
    def evaluate(variables, x):
        return model.apply(variables, x, train=False, mutable=["batch_stats"])

    _, updated = train(variables, x)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, updated["batch_stats"])
    assert all(jax.tree.leaves(changed))

    logits, unchanged = evaluate(variables, x)
    same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), stats, unchanged["batch_stats"])
    assert all(jax.tree.leaves(same))
    # Eval uses the running statistics: each example's logits ignore the rest of the batch,
    # and change when the statistics do.
    alone, _ = evaluate(variables, x[:5])
    np.testing.assert_allclose(alone, logits[:5], rtol=1e-5, atol=1e-6)
    with_new_stats, _ = evaluate({**variables, "batch_stats": updated["batch_stats"]}, x)
    assert not np.allclose(with_new_stats, logits)


def test_resnet_loss_falls_on_digits():
    model = ResNet((1, 1), (8, 16), num_classes=10)
    x, y = _digits(128)
    variables = jax.jit(model.init)(jax.random.key(0), x[:1])
    optimizer = optax.adam(1e-2)

    def loss_fn(params, batch_stats, xb, yb):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            xb,
            train=True,
            rngs={"dropout": jax.random.key(0)},
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
        return loss, updates["batch_stats"]

    def step(carry, batch):
        params, batch_stats, opt_state = carry
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, *batch
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

    params, batch_stats = variables["params"], variables["batch_stats"]
    batches = (x.reshape(4, 32, 8, 8, 1), y.reshape(4, 32))
    epochs = jax.tree.map(lambda a: np.concatenate([a] * 8), batches)  # 32 steps
    carry = (params, batch_stats, optimizer.init(params))
    _, losses = jax.jit(lambda c, b: jax.lax.scan(step, c, b))(carry, epochs)
    losses = np.asarray(losses)
    assert np.all(np.isfinite(losses))
    assert losses[-4:].mean() < 0.5 * losses[:4].mean()


# ---------------------------------------------------------------------------------------------
# Linear models: closed form


def _diabetes():
    x, y = load_diabetes(return_X_y=True)
    return x, y


@pytest.mark.parametrize("alpha", [0.0, 0.1, 1.0])
def test_closed_form_equals_sklearn_float32(alpha):
    x, y = _diabetes()
    ref = LinearRegression().fit(x, y) if alpha == 0 else Ridge(alpha=alpha).fit(x, y)
    fit = jax.jit(fit_least_squares)(x.astype(np.float32), y.astype(np.float32), alpha)
    assert fit["kernel"].shape == (10, 1) and fit["bias"].shape == (1,)
    np.testing.assert_allclose(fit["kernel"][:, 0], ref.coef_, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(fit["bias"][0], ref.intercept_, rtol=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_closed_form_equals_sklearn_float64_multi_target_no_intercept(alpha):
    x, y = _diabetes()
    targets = np.stack([y, x @ np.arange(10.0) + 3.0], axis=1)  # [n, 2]
    for fit_intercept in (True, False):
        estimator = LinearRegression if alpha == 0 else Ridge
        kwargs = {} if alpha == 0 else {"alpha": alpha}
        ref = estimator(fit_intercept=fit_intercept, **kwargs).fit(x, targets)
        with jax.enable_x64(True):
            fit = fit_least_squares(x, targets, alpha, fit_intercept=fit_intercept)
            assert fit["kernel"].dtype == jnp.float64
            np.testing.assert_allclose(fit["kernel"], ref.coef_.T, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(
                fit["bias"], np.broadcast_to(ref.intercept_, (2,)), atol=1e-9
            )
            # Same tree layout as Linear: predictions through the module.
            pred = Linear(2).apply({"params": {"dense": fit}}, x)
            np.testing.assert_allclose(pred, ref.predict(x), rtol=1e-9, atol=1e-9)


def test_closed_form_rank_deficient_is_min_norm_like_lstsq():
    x, y = _diabetes()
    x = np.concatenate([x, x[:, :1]], axis=1)  # duplicated column
    ref = LinearRegression().fit(x, y)
    with jax.enable_x64(True):
        fit = fit_least_squares(x, y)
        np.testing.assert_allclose(fit["kernel"][:, 0], ref.coef_, rtol=1e-7, atol=1e-6)


def test_l2_penalty_is_half_squared_kernels_without_bias():
    params = {"dense": {"kernel": jnp.array([[1.0, 2.0], [3.0, -1.0]]), "bias": jnp.ones(2) * 9}}
    assert float(l2_penalty(params)) == 0.5 * (1 + 4 + 9 + 1)
    assert float(l2_penalty({"params": params})) == 7.5


# ---------------------------------------------------------------------------------------------
# Linear models: gradient descent reaches scikit-learn's optimum (float64, full batch L-BFGS)


def _minimise(loss_fn, params, steps=500):
    """Full-batch optax L-BFGS for a fixed number of steps, as one jitted scan."""
    optimizer = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss_fn)

    def step(carry, _):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = optimizer.update(
            grad, state, params, value=value, grad=grad, value_fn=loss_fn
        )
        return (optax.apply_updates(params, updates), state), value

    (params, _), values = jax.jit(
        lambda p: jax.lax.scan(step, (p, optimizer.init(p)), length=steps)
    )(params)
    return params, values


def _zero_params(d, k):
    return {"dense": {"kernel": jnp.zeros((d, k)), "bias": jnp.zeros(k)}}


def test_gradient_descent_reaches_ridge():
    x, y = _diabetes()
    alpha = 0.3
    ref = Ridge(alpha=alpha, tol=1e-12).fit(x, y)
    model = Linear(1)
    with jax.enable_x64(True):
        l2 = alpha / x.shape[0]  # Ridge(alpha) <-> 0.5 * mse + (alpha / n) * l2_penalty

        def loss(params):
            pred = model.apply({"params": params}, x)[:, 0]
            return 0.5 * jnp.mean((pred - y) ** 2) + l2 * l2_penalty(params)

        params, _ = _minimise(loss, _zero_params(10, 1), steps=300)
        np.testing.assert_allclose(params["dense"]["kernel"][:, 0], ref.coef_, rtol=1e-5)
        np.testing.assert_allclose(params["dense"]["bias"][0], ref.intercept_, rtol=1e-7)


def _standardised(loader):
    x, y = loader(return_X_y=True)
    return StandardScaler().fit_transform(x), y


def _logistic_reference(x, y, C):
    return LogisticRegression(C=C, tol=1e-12, max_iter=100_000).fit(x, y)


@pytest.mark.parametrize("C", [0.1, 1.0])
def test_binary_logistic_sigmoid_and_two_softmax_logits_reach_sklearn(C):
    x, y = _standardised(load_breast_cancer)
    n, d = x.shape
    ref = _logistic_reference(x, y, C)
    with jax.enable_x64(True):

        def sigmoid_loss(params):  # one logit: l2 = 1 / (C n)
            logits = Linear(1).apply({"params": params}, x)[:, 0]
            return optax.sigmoid_binary_cross_entropy(logits, y).mean() + l2_penalty(params) / (
                C * n
            )

        def softmax_loss(params):  # two logits: l2 = 2 / (C n)
            logits = Linear(2).apply({"params": params}, x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss + 2 * l2_penalty(params) / (C * n)

        one, _ = _minimise(sigmoid_loss, _zero_params(d, 1))
        two, _ = _minimise(softmax_loss, _zero_params(d, 2))
        kernel, bias = one["dense"]["kernel"][:, 0], one["dense"]["bias"][0]
        np.testing.assert_allclose(kernel, ref.coef_[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bias, ref.intercept_[0], rtol=1e-5, atol=1e-6)
        k2, b2 = two["dense"]["kernel"], two["dense"]["bias"]
        np.testing.assert_allclose(k2[:, 1] - k2[:, 0], ref.coef_[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b2[1] - b2[0], ref.intercept_[0], rtol=1e-5, atol=1e-6)
        accuracy = np.mean(np.asarray(x @ kernel + bias > 0) == y)
    assert accuracy == ref.score(x, y)


@pytest.mark.parametrize("loader", [load_iris, load_wine])
def test_multinomial_logistic_reaches_sklearn(loader):
    x, y = _standardised(loader)
    n, d = x.shape
    k = int(y.max()) + 1
    C = 0.5
    ref = _logistic_reference(x, y, C)
    with jax.enable_x64(True):
        l2 = 1 / (C * n)  # LogisticRegression(C) <-> mean cross-entropy + l2 * l2_penalty

        def loss(params):
            logits = Linear(k).apply({"params": params}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean() + (
                l2 * l2_penalty(params)
            )

        params, _ = _minimise(loss, _zero_params(d, k))
        np.testing.assert_allclose(params["dense"]["kernel"], ref.coef_.T, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(params["dense"]["bias"], ref.intercept_, rtol=1e-5, atol=1e-6)
        logits = np.asarray(Linear(k).apply({"params": params}, x))
        accuracy = np.mean(np.argmax(logits, axis=1) == y)
    assert accuracy == ref.score(x, y)
