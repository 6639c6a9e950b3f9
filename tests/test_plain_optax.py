"""Plain Optax: any ``optax.GradientTransformation`` in the step, the loop and the sweep.

The reference is a hand-written loop (``jax.grad`` of the mean cross-entropy, ``tx.update``,
``optax.apply_updates``): the step with ``optax.adamw(3e-3)`` equals it exactly (same ops).
jaxtrain's own wrapped ``adamw`` keeps its settings in the optimizer state as float32 arrays;
with settings that float32 represents exactly (b1 0.5, b2 0.75) it is bitwise the plain
optimizer. With the defaults b1 0.9, b2 0.999 optax computes ``1 - b`` from the rounded
float32 ``b`` instead of Python's float: after 50 steps on the digits MLP (32 hidden) the
parameters differ by 9.8e-7 (measured; 1.4e-6 on a 5-feature toy, 1.2e-5 for 256x256 hidden),
the float32 rounding of the betas and nothing else.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtrain.config import AdamWConfig, DataConfig, load_config
from jaxtrain.data import prepare_data, train_batches
from jaxtrain.models import MLP
from jaxtrain.runner import train
from jaxtrain.sweep import run_sweep, with_hyperparams
from jaxtrain.sweep.space import expand, state_entries, vmappable
from jaxtrain.train.optim import build_optimizer, find_hyperparams, scale_learning_rate
from jaxtrain.train.state import TrainState, create_train_state
from jaxtrain.train.step import make_train_step
from tests.support import xla_defaults

MODEL = MLP(hidden=(16,), num_classes=3)


def _batches(steps: int = 50, size: int = 16):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2, (3, 5))
    for _ in range(steps):
        labels = rng.integers(0, 3, size)
        inputs = centres[labels] + rng.normal(0, 1, (size, 5))
        yield {"inputs": jnp.asarray(inputs, jnp.float32), "labels": jnp.asarray(labels)}


def _train_with_step(tx) -> TrainState:
    state = create_train_state(MODEL, tx, (5,), seed=0)
    step = jax.jit(make_train_step(MODEL, tx))
    for batch in _batches():
        state, metrics = step(state, batch)
    return state, metrics


def _hand_loop(tx):
    """The reference: no jaxtrain step, the same initial parameters."""
    params = create_train_state(MODEL, tx, (5,), seed=0).params
    opt_state = tx.init(params)

    def loss(params, batch):
        logits = MODEL.apply({"params": params}, batch["inputs"], train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

    @jax.jit
    def update(params, opt_state, batch):
        grads = jax.grad(loss)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for batch in _batches():
        params, opt_state = update(params, opt_state, batch)
    return params


def _max_difference(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.mark.default_xla
def test_a_plain_adamw_in_make_train_step_equals_the_hand_loop() -> None:
    plain, metrics = _train_with_step(optax.adamw(3e-3))
    assert "learning_rate" not in metrics  # a plain optax state keeps it to itself
    # Bitwise under XLA's defaults; a few float32 ulps of |params| < 1 under the fast flags.
    tolerance = 0.0 if xla_defaults() else 2e-7
    assert _max_difference(plain.params, _hand_loop(optax.adamw(3e-3))) <= tolerance
    moved = _max_difference(plain.params, create_train_state(MODEL, optax.sgd(0), (5,), 0).params)
    assert moved > 1e-2  # 50 steps moved the parameters: the comparison could fail


def test_a_plain_adamw_equals_the_wrapped_adamw_after_50_steps() -> None:
    data = prepare_data(DataConfig(name="digits"))
    model = MLP(hidden=(32,), num_classes=10)

    def run(tx):
        state = create_train_state(model, tx, data.input_shape, seed=0)
        step = jax.jit(make_train_step(model, tx))
        for batch in itertools.islice(train_batches(data.splits["train"], 32, 2, 0), 50):
            state, metrics = step(state, batch)
        return state.params, metrics

    plain, metrics = run(optax.adamw(3e-3))
    wrapped, wrapped_metrics = run(build_optimizer(AdamWConfig(learning_rate=3e-3), 50))
    assert "learning_rate" not in metrics
    assert float(wrapped_metrics["learning_rate"]) == pytest.approx(3e-3)
    assert _max_difference(plain, wrapped) <= 1e-6
    exact = AdamWConfig(learning_rate=3e-3, b1=0.5, b2=0.75)  # float32 holds these exactly
    plain, _ = run(optax.adamw(3e-3, b1=0.5, b2=0.75))
    wrapped, _ = run(build_optimizer(exact, 50))
    assert _max_difference(plain, wrapped) == 0.0


def test_the_rate_of_an_injected_optimizer_is_logged_even_inside_a_chain() -> None:
    tx = optax.chain(
        optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.sgd)(learning_rate=0.02)
    )
    _, metrics = _train_with_step(tx)
    assert float(metrics["learning_rate"]) == pytest.approx(0.02)


def test_hyperparameters_are_found_set_and_scaled_by_optaxs_names() -> None:
    params = {"w": jnp.ones(3)}
    chained = optax.chain(
        optax.clip(1.0), optax.inject_hyperparams(optax.adam)(learning_rate=0.1, b1=0.9)
    )
    state = TrainState(jnp.zeros((), jnp.int32), params, chained.init(params), {},
                       jax.random.key(0))  # fmt: skip
    assert set(find_hyperparams(state.opt_state)) >= {"learning_rate", "b1"}
    changed = with_hyperparams(state, {"b1": 0.5})
    assert float(find_hyperparams(changed.opt_state)["b1"]) == 0.5
    halved = scale_learning_rate(changed.opt_state, 0.5)
    assert float(find_hyperparams(halved)["learning_rate"]) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="no hyperparameter 'momentum'.*b1"):
        with_hyperparams(state, {"momentum": 0.5})
    plain = optax.adamw(1e-3).init(params)
    with pytest.raises(ValueError, match="keeps its learning rate to itself"):
        scale_learning_rate(plain, 0.5)
    with pytest.raises(ValueError, match="optax.inject_hyperparams"):
        with_hyperparams(state.replace(opt_state=plain), {"learning_rate": 0.1})
    scheduled = optax.inject_hyperparams(optax.sgd)(learning_rate=optax.linear_schedule(1, 0, 9))
    with pytest.raises(ValueError, match="follows a schedule"):
        scale_learning_rate(scheduled.init(params), 0.5)


def test_jaxtrains_own_optimizer_takes_learning_rate_as_its_peak() -> None:
    tx = build_optimizer(AdamWConfig(learning_rate=1e-2), total_steps=10)
    state = create_train_state(MODEL, tx, (5,), seed=0)
    changed = with_hyperparams(state, {"learning_rate": 0.5})
    assert float(find_hyperparams(changed.opt_state)["peak_learning_rate"]) == 0.5


SWEEP = """
name: optax_sweep
data: {name: iris, batch_size: 16}
model: {name: mlp, hidden: [8]}
optimizer: {name: "optax:adam", learning_rate: 0.01, b1: 0.9}
train: {epochs: 2, log_every: 5, checkpoint: {async_save: false}}
sweep:
  axes:
    optimizer.b1: [0.5, 0.9]
    optimizer.learning_rate: [0.01, 0.05]
"""


def test_an_optax_factorys_float_settings_are_swept_inside_one_program(tmp_path: Path) -> None:
    """``optimizer.name: optax:adam``: its float settings live in the optimizer state under
    optax's names (the learning rate as the schedule's peak), so sweeping them is one group."""
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    config = load_config(path)
    assert state_entries(config) == {
        "optimizer.learning_rate": "peak_learning_rate",
        "optimizer.b1": "b1",
        "optimizer.b2": "b2",
        "optimizer.eps": "eps",
        "optimizer.eps_root": "eps_root",
    }
    assert vmappable("optimizer.b1", config) and not vmappable("optimizer.nesterov", config)
    (group,) = expand(config)  # every member in one program
    assert [m.config.optimizer.b1 for m in group.members] == [0.5, 0.5, 0.9, 0.9]


@pytest.mark.slow
def test_a_member_of_an_optax_factory_sweep_equals_its_standalone_run(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    config = load_config(path)
    run_dir = tmp_path / "sweep_run"
    run_dir.mkdir()
    result = run_sweep(config, run_dir, progress=False)
    population = result["populations"][0]
    member = 3
    settings = result["members"][member]["settings"]
    assert settings == {"optimizer.b1": 0.9, "optimizer.learning_rate": 0.05}
    alone = train(path, [f"{k}={v}" for k, v in settings.items()] + ["sweep=null"],
                  runs_dir=tmp_path / "runs", progress=False, report=False)  # fmt: skip
    position = population["members"].index(member)
    ours = jax.tree.map(lambda x: np.asarray(x[position]), population["state"].params)
    assert _max_difference(alone.state.params, ours) <= 1e-6
    other = jax.tree.map(lambda x: np.asarray(x[0]), population["state"].params)
    assert _max_difference(ours, other) > 1e-3
