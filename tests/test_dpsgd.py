"""DP-SGD (``train.dp``): the step against a hand-written per-example loop, the sampling the
stream implements, and the epsilon against dp-accounting's own account of that sampling."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtrain.config import ConfigError, load_config
from jaxtrain.config.verbs import check_verb
from jaxtrain.data.poisson import default_slots, poisson_batches
from jaxtrain.data.sources import ArraySplit
from jaxtrain.models import MLP
from jaxtrain.runner import train
from jaxtrain.train import create_train_state, make_train_step, stop_at_step, train_and_evaluate
from jaxtrain.train.step import PrivateGradient

YAML = """
name: dp_small
seed: 0
data: {name: digits, batch_size: 64}
model: {name: mlp, hidden: [16]}
optimizer: {name: sgd, learning_rate: 0.5, momentum: 0.9}
train: {epochs: 1, eval_every: 6, log_every: 3, checkpoint: {async_save: false},
        dp: {clip_norm: 1.0, noise_multiplier: 1.2}}
"""


def _config_path(tmp: Path) -> Path:
    path = tmp / "dp.yaml"
    path.write_text(YAML)
    return path


def test_the_dp_step_equals_a_hand_written_per_example_loop() -> None:
    model = MLP(hidden=(5,), num_classes=3)
    tx = optax.sgd(1.0)
    state = create_train_state(model, tx, (4,), seed=3)
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(6, 4)).astype(np.float32)
    labels = np.array([0, 2, 1, 1, 0, 2])
    mask = np.array([True, True, True, False, True, False])
    spec = PrivateGradient(clip_norm=0.5, noise_multiplier=0.7, expected_batch_size=4.0)
    step = jax.jit(make_train_step(model, tx, dp=spec))
    new, metrics = step(state, {"inputs": inputs, "labels": labels, "mask": mask})

    # The reference: one example at a time, clipped in numpy, summed, the step's noise added.
    def loss(params, x, y):
        logits = model.apply({"params": params}, x[None], train=False)
        return -jax.nn.log_softmax(logits)[0, y]

    flat, treedef = jax.tree.flatten(state.params)
    total = [np.zeros(leaf.shape, np.float64) for leaf in flat]
    for i in np.flatnonzero(mask):
        grads = [np.asarray(g, np.float64) for g in jax.tree.leaves(
            jax.grad(loss)(state.params, inputs[i], labels[i]))]  # fmt: skip
        norm = np.sqrt(sum(np.sum(g**2) for g in grads))
        scale = min(1.0, 0.5 / norm)
        total = [t + scale * g for t, g in zip(total, grads, strict=True)]
    step_key = jax.random.fold_in(state.rng, 0)
    noise_key = jax.random.fold_in(step_key, 6)
    _, *keys = jax.random.split(noise_key, len(flat) + 1)
    noisy = [
        (t + 0.7 * 0.5 * np.asarray(jax.random.normal(k, t.shape, jnp.float32), np.float64)) / 4.0
        for t, k in zip(total, keys, strict=True)
    ]
    expected = jax.tree.unflatten(treedef, [p - g for p, g in zip(flat, noisy, strict=True)])
    for got, want in zip(jax.tree.leaves(new.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    real_losses = [float(loss(state.params, inputs[i], labels[i])) for i in np.flatnonzero(mask)]
    assert float(metrics["loss"]) == pytest.approx(np.mean(real_losses), rel=1e-5)


def test_poisson_batches_sample_each_example_independently_and_replay() -> None:
    n, rate = 2000, 0.05
    split = ArraySplit(np.arange(n, dtype=np.float32)[:, None], np.zeros(n, np.int32))
    slots = default_slots(n, rate)
    stream = poisson_batches(split, rate, 200, slots, seed=4)
    sizes = np.array([int(b["mask"].sum()) for b in stream])
    # Binomial(n, q) per step: mean n q = 100, standard deviation sqrt(n q (1 - q)) ~ 9.7.
    assert abs(sizes.mean() - n * rate) < 3 * np.sqrt(n * rate * (1 - rate) / 200)
    assert sizes.std() == pytest.approx(np.sqrt(n * rate * (1 - rate)), rel=0.2)
    counts = np.zeros(n)
    for batch in stream:
        rows = batch["inputs"][batch["mask"], 0].astype(int)
        assert len(set(rows.tolist())) == len(rows)  # no example twice in a batch
        counts[rows] += 1
    assert abs(counts.mean() - 200 * rate) < 0.1  # every example ~ q per step
    iterator = iter(stream)
    for _ in range(7):
        next(iterator)
    again = iter(poisson_batches(split, rate, 200, slots, seed=4))
    again.set_state(iterator.get_state())
    np.testing.assert_array_equal(next(again)["inputs"], next(iterator)["inputs"])


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dp")
    path = _config_path(tmp)
    return path, train(path, runs_dir=tmp / "runs", progress=False, report=False)


def test_the_reported_epsilon_is_dp_accountings_for_the_sampling_used(dp_run) -> None:
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    _, result = dp_run
    privacy = json.loads((result.run_dir / "metrics.json").read_text())["privacy"]
    n = 1168  # digits' training split
    rate, slots, steps = 64 / n, default_slots(n, 64 / n), privacy["steps"]
    assert steps == n // 64
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.TruncatedSubsampledGaussianDpEvent(n, rate, slots, 1.2), steps
    )
    accountant = PLDAccountant(dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    accountant.compose(event)
    assert privacy["epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=0.01)
    assert privacy["adjacency"].startswith("add or remove one")
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().split("\n")
               if x]  # fmt: skip
    logged = [r["epsilon"] for r in records if r["split"] == "validation"]
    assert logged == sorted(logged) and logged[-1] == pytest.approx(privacy["epsilon"], rel=0.01)


def test_a_stopped_dp_run_resumes_bitwise(dp_run, tmp_path) -> None:
    path, straight = dp_run
    config = load_config(path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(path.read_text())
    stopped = train_and_evaluate(config, run_dir, callbacks=(stop_at_step(8),), progress=False,
                                 report=False)  # fmt: skip
    assert stopped.status == "stopped"
    resumed = train(None, resume=run_dir, progress=False, report=False)
    for a, b in zip(jax.tree.leaves(resumed.state.params), jax.tree.leaves(straight.state.params),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_target_epsilon_is_met(tmp_path) -> None:
    from jaxtrain.data import prepare_data
    from jaxtrain.train import build_pieces

    config = load_config(_config_path(tmp_path), ["train.dp={target_epsilon: 2.0}"])
    plan = build_pieces(config, prepare_data(config.data)).privacy
    spent = plan.epsilon(plan.steps)
    assert 1.95 <= spent <= 2.0 and plan.noise_multiplier > 0


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model={name: cnn, features: [4], dense: 8, batch_norm: true}", "BatchNorm"),
        ("train.fused_epochs=true", "train.fused_epochs"),
        ("train.micro_batches=2", "train.micro_batches"),
        ("train.parallel=pmap", "train.parallel"),
        ("train.dp={accountant: rdp, max_batch: 100}", "max_batch"),
    ],
)
def test_what_dp_sgd_cannot_keep_private_is_refused(tmp_path, override, key) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(_config_path(tmp_path), [override])


def test_a_sweep_refuses_dp_sgd(tmp_path) -> None:
    config = load_config(_config_path(tmp_path), ["sweep={axes: {seed: [0, 1]}}"])
    with pytest.raises(ConfigError, match="train.dp"):
        check_verb(config, "sweep")
