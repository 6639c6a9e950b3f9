"""Models: shapes, parameter counts (closed forms), dropout, batch norm and the registry.

References are written independently in float64 NumPy (forward passes, a SAME convolution,
batch statistics) or are closed forms (parameter counts). Tolerance for float comparisons:
rtol=1e-5, atol=1e-6 (the model runs in float32; the difference is rounding only). Shapes,
counts and dispatch are compared exactly. Everything model-side is jitted or only traced
(``jax.eval_shape``) so that the file stays fast on a small CPU.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrain.config import CNNConfig, MLPConfig, SGDConfig
from jaxtrain.models import CNN, MLP, build_model
from jaxtrain.train.optim import build_optimizer
from jaxtrain.train.state import count_params, create_train_state
from jaxtrain.train.step import make_train_step

RTOL, ATOL = 1e-5, 1e-6


def _init(model, input_shape, seed=0):
    """Variables for inputs ``[1, *input_shape]`` (jitted: one compile instead of one per op)."""
    x = np.zeros((1, *input_shape), np.float32)
    return jax.jit(lambda x: model.init({"params": jax.random.key(seed)}, x, train=False))(x)


def _abstract_init(model, input_shape):
    """Variable shapes only (traced, never compiled): enough for shapes and counts."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x, train=False), x)


def _eval_fn(model):
    return jax.jit(lambda variables, x: model.apply(variables, x, train=False))


def _train_fn(model):
    return jax.jit(
        lambda variables, x, key: model.apply(variables, x, train=True, rngs={"dropout": key})
    )


def _normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _conv_same(x, kernel):
    """NumPy SAME convolution (stride 1, odd kernel): x f64[b,h,w,c], kernel f64[k,k,c,o]."""
    k = kernel.shape[0]
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h, w = x.shape[1:3]
    out = np.zeros((*x.shape[:3], kernel.shape[3]))
    for i in range(k):
        for j in range(k):
            out += xp[:, i : i + h, j : j + w, :] @ kernel[i, j]
    return out


def _max_pool_2x2(x):
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


# ---------------------------------------------------------------------------------------------
# MLP


@pytest.mark.parametrize("input_shape", [(), (5,), (2, 3), (2, 3, 4)])
def test_mlp_flattens_any_input_rank_to_class_logits(input_shape):
    model = MLP(hidden=(7,), num_classes=4)
    variables = _abstract_init(model, input_shape)
    x = jax.ShapeDtypeStruct((3, *input_shape), jnp.float32)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert out.shape == (3, 4)
    # the first layer sees the flattened features
    assert variables["params"]["Dense_0"]["kernel"].shape == (math.prod(input_shape), 7)


def _mlp_forward(params, x, activation):
    """NumPy MLP forward pass without dropout: the reference for ``train=False``."""
    p = _np(params)
    h = x.reshape(len(x), -1).astype(np.float64)
    layers = sorted(p, key=lambda name: int(name.split("_")[1]))
    for name in layers[:-1]:
        h = activation(h @ p[name]["kernel"] + p[name]["bias"])
    return h @ p[layers[-1]]["kernel"] + p[layers[-1]]["bias"]


def test_mlp_matches_hand_written_forward_pass():
    model = MLP(hidden=(6, 5), num_classes=3, activation="tanh")
    variables = _init(model, (2, 4))
    x = _normal(2, (3, 2, 4))
    assert set(variables["params"]) == {"Dense_0", "Dense_1", "Dense_2"}
    expected = _mlp_forward(variables["params"], x, np.tanh)
    np.testing.assert_allclose(_eval_fn(model)(variables, x), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("input_shape", "hidden", "num_classes"),
    [((12,), (), 3), ((12,), (8,), 3), ((2, 3, 4), (16, 8), 10), ((64,), (32, 32, 32), 2)],
)
def test_mlp_param_count_equals_closed_form(input_shape, hidden, num_classes):
    model = MLP(hidden=hidden, num_classes=num_classes)
    params = _abstract_init(model, input_shape)["params"]
    widths = [math.prod(input_shape), *hidden, num_classes]
    expected = sum((n_in + 1) * n_out for n_in, n_out in zip(widths, widths[1:], strict=False))
    assert count_params(params) == expected


def test_mlp_dropout_is_random_in_train_and_deterministic_in_eval():
    model = MLP(hidden=(32,), num_classes=3, dropout=0.5)
    variables = _init(model, (5,))
    x = _normal(3, (4, 5))
    train, evaluate = _train_fn(model), _eval_fn(model)

    out_1, out_2 = train(variables, x, jax.random.key(1)), train(variables, x, jax.random.key(2))
    np.testing.assert_array_equal(out_1, train(variables, x, jax.random.key(1)))  # same key
    assert not np.allclose(out_1, out_2)  # another key, another mask

    eval_out = evaluate(variables, x)
    np.testing.assert_array_equal(eval_out, evaluate(variables, x))
    no_dropout = _mlp_forward(variables["params"], x, lambda h: np.maximum(h, 0.0))
    np.testing.assert_allclose(eval_out, no_dropout, rtol=RTOL, atol=ATOL)
    assert not np.allclose(out_1, eval_out)


# ---------------------------------------------------------------------------------------------
# CNN


@pytest.mark.parametrize("input_shape", [(8, 8, 1), (28, 28, 1)])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_cnn_maps_images_to_class_logits(input_shape, batch_norm):
    model = CNN(features=(4, 8), num_classes=10, dense=16, batch_norm=batch_norm)
    variables = _abstract_init(model, input_shape)
    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert out.shape == (2, 10)
    assert set(variables) == ({"params", "batch_stats"} if batch_norm else {"params"})


@pytest.mark.parametrize("bad_shape", [(2,), (2, 1, 8, 8, 1)])  # [b, L(, C)]: sequences
def test_cnn_rejects_non_image_input_with_clear_error(bad_shape):
    model = CNN(features=(4,), num_classes=3, dense=8)
    x = jax.ShapeDtypeStruct(bad_shape, jnp.float32)
    with pytest.raises(ValueError, match=r"images \[batch, height, width, channels\]"):
        jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x, train=False), x)


def test_cnn_param_count_equals_closed_form():
    # 8x8x1 -> conv 4 -> pool 4x4 -> conv 8 -> pool 2x2 -> flatten 32 -> dense 16 -> 10
    k, cin, f1, f2, dense, classes = 3, 1, 4, 8, 16, 10
    flat = 2 * 2 * f2
    expected = (
        (k * k * cin + 1) * f1 + (k * k * f1 + 1) * f2 + (flat + 1) * dense + (dense + 1) * classes
    )
    model = CNN(features=(f1, f2), num_classes=classes, kernel_size=k, dense=dense)
    assert count_params(_abstract_init(model, (8, 8, cin))["params"]) == expected

    # batch norm: convs lose their bias, each BN adds a scale and a bias per channel
    expected_bn = expected - f1 - f2 + 2 * f1 + 2 * f2
    model_bn = CNN(
        features=(f1, f2), num_classes=classes, kernel_size=k, dense=dense, batch_norm=True
    )
    assert count_params(_abstract_init(model_bn, (8, 8, cin))["params"]) == expected_bn


@pytest.mark.parametrize(
    ("size", "depth"),
    [
        (8, 4),  # 8 -> 4 -> 2 -> 1 (a 2x2 map is still pooled) -> 1 (no pool below 2x2)
        (28, 6),  # 28 -> 14 -> 7 -> 3 -> 1 -> 1 -> 1
    ],
)
def test_cnn_pools_2x2_maps_and_skips_pooling_below_2x2(size, depth):
    model = CNN(features=(2,) * depth, num_classes=3, dense=5)
    params = _abstract_init(model, (size, size, 1))["params"]
    assert params["Dense_0"]["kernel"].shape == (1 * 1 * 2, 5)


def test_cnn_matches_hand_written_forward_pass_and_dropout_only_acts_in_train():
    model = CNN(features=(4,), num_classes=3, dense=32, dropout=0.5)
    variables = _init(model, (6, 6, 1))
    x = _normal(6, (3, 6, 6, 1))
    train, evaluate = _train_fn(model), _eval_fn(model)

    p = _np(variables["params"])
    h = _conv_same(x.astype(np.float64), p["Conv_0"]["kernel"]) + p["Conv_0"]["bias"]
    h = _max_pool_2x2(np.maximum(h, 0.0)).reshape(3, -1)
    h = np.maximum(h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0.0)
    expected = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]  # no dropout in eval

    eval_out = evaluate(variables, x)
    np.testing.assert_allclose(eval_out, expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(eval_out, evaluate(variables, x))
    out_1 = train(variables, x, jax.random.key(1))
    assert not np.allclose(out_1, train(variables, x, jax.random.key(2)))
    assert not np.allclose(out_1, expected)


def test_cnn_without_batch_norm_has_no_model_state():
    model = build_model(CNNConfig(features=(3,), dense=8), 2)
    tx = build_optimizer(SGDConfig(), 10)
    state = jax.eval_shape(lambda: create_train_state(model, tx, (6, 6, 1), seed=0))
    assert state.model_state == {}


@pytest.fixture(scope="module")
def bn_cnn():
    """A batch-normed CNN for 6x6x1 images, plain SGD and its initial train state."""
    model = build_model(CNNConfig(features=(3,), dense=8, batch_norm=True), 2)
    tx = build_optimizer(SGDConfig(learning_rate=0.1, momentum=0.0), 10)
    return model, tx, jax.jit(lambda: create_train_state(model, tx, (6, 6, 1), seed=0))()


def test_cnn_batch_norm_running_stats_follow_momentum_0_9_after_one_train_step(bn_cnn):
    model, tx, state = bn_cnn

    assert set(state.model_state) == {"batch_stats"}
    assert "batch_stats" not in state.params
    stats = state.model_state["batch_stats"]["BatchNorm_0"]
    np.testing.assert_array_equal(stats["mean"], np.zeros(3))
    np.testing.assert_array_equal(stats["var"], np.ones(3))

    x = _normal(7, (4, 6, 6, 1)) * 2.0 + 0.5
    batch = {"inputs": x, "labels": np.array([0, 1, 1, 0], np.int32)}
    new_state, _ = jax.jit(make_train_step(model, tx))(state, batch)

    # pre-BN activations by hand: a SAME conv without bias (batch norm replaces it)
    assert "bias" not in state.params["Conv_0"]
    pre = _conv_same(x.astype(np.float64), _np(state.params["Conv_0"]["kernel"]))
    batch_mean = pre.mean(axis=(0, 1, 2))
    batch_var = pre.var(axis=(0, 1, 2))  # biased, as batch norm uses
    new_stats = new_state.model_state["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(
        new_stats["mean"], 0.9 * 0.0 + 0.1 * batch_mean, rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(new_stats["var"], 0.9 * 1.0 + 0.1 * batch_var, rtol=1e-4, atol=1e-6)


def test_cnn_batch_norm_eval_uses_running_stats_and_leaves_them_unchanged(bn_cnn):
    model, _, state = bn_cnn
    # non-trivial running statistics, so eval and train normalisation differ
    stats = jax.tree.map(lambda v: v + 0.3, state.model_state["batch_stats"])
    variables = {"params": state.params, "batch_stats": stats}
    x = _normal(8, (4, 6, 6, 1)) * 3.0 + 1.0

    out, updated = jax.jit(
        lambda variables, x: model.apply(variables, x, train=False, mutable=["batch_stats"])
    )(variables, x)
    jax.tree.map(np.testing.assert_array_equal, updated["batch_stats"], variables["batch_stats"])

    # hand forward: conv -> (x - mean)/sqrt(var + eps)*scale + bias -> relu -> pool -> dense
    p = _np(variables["params"])

    def forward(mean, var):
        h = (conv - mean) / np.sqrt(var + 1e-5)
        h = h * p["BatchNorm_0"]["scale"] + p["BatchNorm_0"]["bias"]
        h = _max_pool_2x2(np.maximum(h, 0.0)).reshape(4, -1)
        h = np.maximum(h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0.0)
        return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]

    conv = _conv_same(x.astype(np.float64), p["Conv_0"]["kernel"])
    running = _np(stats["BatchNorm_0"])
    expected = forward(running["mean"], running["var"])
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # normalising with the batch's own statistics (train mode) would give another output
    assert not np.allclose(out, forward(conv.mean((0, 1, 2)), conv.var((0, 1, 2))), atol=1e-3)


# ---------------------------------------------------------------------------------------------
# registry


def test_build_model_dispatches_mlp_config_to_mlp():
    model = build_model(MLPConfig(hidden=(5, 4), activation="gelu", dropout=0.25), 7)
    assert isinstance(model, MLP)
    assert (tuple(model.hidden), model.num_classes) == ((5, 4), 7)
    assert (model.activation, model.dropout) == ("gelu", 0.25)


def test_build_model_dispatches_cnn_config_to_cnn():
    config = CNNConfig(features=(3, 6), kernel_size=5, dense=9, dropout=0.1, batch_norm=True)
    model = build_model(config, 4)
    assert isinstance(model, CNN)
    assert tuple(model.features) == (3, 6)
    assert (model.num_classes, model.kernel_size, model.dense) == (4, 5, 9)
    assert (model.dropout, model.batch_norm) == (0.1, True)
