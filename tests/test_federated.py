"""Federated learning: partitions, exact local training, aggregation, privacy, runner, resume.

Models are tiny (one hidden layer of 16) so each distinct round compiles in seconds.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtrain.config import ConfigError, load_config
from jaxtrain.data import prepare_data
from jaxtrain.federated import (
    Client,
    Cohort,
    aggregate,
    build_federated,
    chain,
    check_federated,
    clip_updates,
    dp_epsilon,
    federated_epsilon,
    make_local_train,
    pack_clients,
    partition,
    partition_by_ids,
    run_federated,
    secure_aggregation,
    weighted,
)
from jaxtrain.federated.secure import client_masks, to_fixed_point
from jaxtrain.models import build_model
from jaxtrain.train import build_optimizer, create_train_state, make_train_step, stop_at_step
from jaxtrain.train.tasks import task_for
from tests.support import CONFIGS, ROOT

SMALL = """
name: fed_small
seed: 0
data: {name: digits, batch_size: 8}
model: {name: mlp, hidden: [16]}
optimizer: {name: sgd, learning_rate: 0.1, momentum: 0.0}
federated: {num_clients: 10, clients_per_round: 4, local_steps: 2, rounds: 4, eval_every: 2}
"""


def _config(tmp_path: Path, overrides=()):
    path = tmp_path / "fed.yaml"
    path.write_text(SMALL)
    return load_config(path, list(overrides))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("cfg"))
    return prepare_data(config.data)


def _numbers(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


def _bitwise_equal(a, b) -> bool:
    return all(
        np.array_equal(_numbers(x), _numbers(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _allclose(a, b, **tolerance) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tolerance)


# --- partitions -------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_partitions_cover_every_example_once_and_are_seeded(scheme, digits) -> None:
    labels = digits.splits["train"].labels
    parts = partition(labels, 20, scheme, alpha=0.1, shards_per_client=2, seed=3)
    assert len(parts) == 20
    everything = np.sort(np.concatenate(parts))
    np.testing.assert_array_equal(everything, np.arange(len(labels)))
    again = partition(labels, 20, scheme, alpha=0.1, shards_per_client=2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    sizes = [len(p) for p in parts]
    classes = [len(np.unique(labels[p])) for p in parts]
    if scheme == "iid":
        assert max(sizes) - min(sizes) <= 1
    elif scheme == "shards":
        assert max(classes) <= 4  # two shards of sorted labels span at most 2 + 2 classes
    else:  # Dirichlet(0.1): strongly skewed labels and sizes
        assert np.mean(classes) < 5 and max(sizes) > 3 * np.median(sizes)


def test_natural_partition_groups_by_id_column() -> None:
    ids = np.array([7, 3, 7, 7, 3, 9])
    parts = partition_by_ids(ids)
    assert [p.tolist() for p in parts] == [[1, 4], [0, 2, 3], [5]]
    with pytest.raises(ValueError, match="integers"):
        partition_by_ids(np.array([0.5, 1.0]))


def test_config_rejects_impossible_federated_settings(tmp_path) -> None:
    for override, key in [
        ("federated.clients_per_round=11", "clients_per_round"),
        ("federated.local_epochs=1", "local_steps"),
        ("federated.algorithm=fedopt", "server_optimizer"),
        ("federated.partition=by_writer", "federated.partition"),
    ]:
        with pytest.raises(ConfigError, match=key):
            _config(tmp_path, [override])
    adam = _config(tmp_path, ["federated.algorithm=fedopt", "federated.server_optimizer.name=adam"])
    assert adam.federated.server_optimizer.eps == 1e-3


def test_runner_checks_name_the_key_before_any_work(tmp_path, digits) -> None:
    for override, key in [
        ("federated.num_clients=5000", "federated.num_clients"),
        ("federated.shards_per_client=200", "federated.shards_per_client"),
        ("model={name: decision_tree}", "model.name"),
    ]:
        config = _config(tmp_path, [override, "federated.partition=shards"])
        with pytest.raises(ValueError, match=key):
            check_federated(config, digits)
    no_section = load_config(CONFIGS / "digits_cnn.yaml")
    with pytest.raises(ValueError, match="federated"):
        check_federated(no_section, digits)


# --- exactness of local training and weighting ------------------------------------------


def _pieces(config, data):
    """Model, task and a constant-schedule client optimizer for hand-made references."""
    model = build_model(config.model, data.num_outputs, data.input_shape)
    return model, task_for(data), build_optimizer(config.optimizer, 1)


def test_fedavg_one_client_one_local_step_equals_centralised_sgd(tmp_path, digits) -> None:
    n = len(digits.splits["train"])
    config = _config(
        tmp_path,
        [
            "federated.num_clients=1",
            "federated.clients_per_round=1",
            "federated.local_steps=1",
            f"federated.batch_size={n}",
        ],
    )
    pieces = build_federated(config, digits)
    server, _ = pieces.run_round(pieces.server, pieces.clients)

    model, task, tx = _pieces(config, digits)
    train = digits.splits["train"]
    state = create_train_state(model, tx, digits.input_shape, config.seed)
    _allclose(state.params, pieces.server.params, rtol=0, atol=0)  # the same initial model
    state, _ = jax.jit(make_train_step(model, tx, task))(
        state, {"inputs": train.inputs, "labels": train.labels}
    )
    _allclose(server.params, state.params, rtol=1e-5, atol=1e-6)


def test_unequal_clients_are_weighted_exactly(tmp_path, digits) -> None:
    """Three clients of 3, 7 and 12 examples, two full-batch local epochs each, padded to 12:
    the round equals the size-weighted mean of each client trained alone on its own rows."""
    train = digits.splits["train"]
    config = _config(tmp_path)
    model, task, tx = _pieces(config, digits)
    init = create_train_state(model, tx, digits.input_shape, 0)
    parts = [np.arange(0, 3), np.arange(3, 10), np.arange(10, 22)]
    clients = pack_clients(train, parts, batch_size=12)
    assert clients.inputs.shape[1] == 12
    local = make_local_train(
        partial(make_train_step, model, tx, task), tx, padded_size=12, batch_size=12, local_epochs=2
    )
    keys = jax.random.split(jax.random.key(0), 3)
    data = Client(jnp.asarray(clients.inputs), jnp.asarray(clients.labels), clients.sizes)
    result = jax.jit(jax.vmap(local, in_axes=(None, None, 0, 0)))(init.params, {}, data, keys)
    np.testing.assert_array_equal(result.steps, [2, 2, 2])

    step = jax.jit(make_train_step(model, tx, task))
    alone = []
    for part in parts:
        state = init
        for _ in range(2):
            state, _ = step(state, {"inputs": train.inputs[part], "labels": train.labels[part]})
        alone.append(state.params)
    sizes = np.array([3.0, 7.0, 12.0])
    mean = lambda *w: sum(s * x for s, x in zip(sizes, w, strict=True)) / 22.0  # noqa: E731
    expected = jax.tree.map(mean, *alone)
    deltas = jax.tree.map(lambda w, g: w - g, result.params, init.params)
    cohort = Cohort(jnp.arange(3), jnp.asarray(sizes / sizes.sum(), jnp.float32))
    mean_delta, _ = aggregate(weighted(), deltas, cohort, jax.random.key(1))
    got = jax.tree.map(jnp.add, init.params, mean_delta)
    _allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_padding_does_not_change_a_clients_training(tmp_path, digits) -> None:
    """A 7-example client with batches of 4 (one full, one partial) trains the same alone,
    padded to 8, as inside a cohort padded to 16 where it idles for the extra slots."""
    train = digits.splits["train"]
    config = _config(tmp_path)
    model, task, tx = _pieces(config, digits)
    params = create_train_state(model, tx, digits.input_shape, 0).params
    key = jax.random.key(5)
    results = []
    for padded in (8, 16):
        packed = pack_clients(train, [np.arange(7), np.arange(7, 23)][: padded // 8], 4)
        client = Client(packed.inputs[0], packed.labels[0], packed.sizes[0])
        local = make_local_train(
            partial(make_train_step, model, tx, task),
            tx,
            padded_size=padded,
            batch_size=4,
            local_epochs=3,
        )
        results.append(jax.jit(local)(params, {}, client, key))
    np.testing.assert_array_equal([r.steps for r in results], [6, 6])
    _allclose(results[0].params, results[1].params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(results[0].loss, results[1].loss, rtol=1e-6)


def test_fedprox_with_mu_zero_equals_fedavg_and_mu_pulls_towards_global(tmp_path, digits):
    train = digits.splits["train"]
    config = _config(tmp_path)
    model, task, tx = _pieces(config, digits)
    params = create_train_state(model, tx, digits.input_shape, 0).params
    packed = pack_clients(train, [np.arange(40)], 8)
    client = Client(packed.inputs[0], packed.labels[0], packed.sizes[0])

    def train_with(mu: float):
        local = make_local_train(
            partial(make_train_step, model, tx, task),
            tx,
            padded_size=40,
            batch_size=8,
            local_steps=5,
            mu=mu,
        )
        return jax.jit(local)(params, {}, client, jax.random.key(2)).params

    fedavg, prox = train_with(0.0), train_with(10.0)
    distance = lambda p: float(optax.global_norm(jax.tree.map(jnp.subtract, p, params)))  # noqa: E731
    assert distance(prox) < distance(fedavg)
    fedprox_cfg = _config(tmp_path, ["federated.algorithm=fedprox", "federated.mu=0.0"])
    fedavg_cfg = _config(tmp_path)
    rounds = []
    for cfg in (fedavg_cfg, fedprox_cfg):
        pieces = build_federated(cfg, digits)
        rounds.append(pieces.run_round(pieces.server, pieces.clients)[0])
    assert _bitwise_equal(rounds[0], rounds[1])


# --- aggregation, privacy ---------------------------------------------------------------


def _updates(m: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.normal(size=(m, 6, 3)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(m, 3)) * 5, jnp.float32),
    }


def test_secure_aggregation_sums_equal_plain_sums() -> None:
    updates = _updates()
    cohort = Cohort(jnp.array([4, 17, 2, 9, 30]), jnp.asarray([0.1, 0.2, 0.3, 0.15, 0.25]))
    key = jax.random.key(11)
    plain, _ = jax.jit(lambda u, c, k: aggregate(weighted(), u, c, k))(updates, cohort, key)
    secure_chain = chain(weighted(), secure_aggregation())
    secure, _ = jax.jit(lambda u, c, k: aggregate(secure_chain, u, c, k))(updates, cohort, key)
    _allclose(secure, plain, rtol=0, atol=5 * 2.0**-20)
    masks = jax.jit(client_masks)(jax.tree.map(lambda x: x[0], updates), cohort.ids, key)
    assert all(np.all(np.sum(m, axis=0, dtype=np.uint32) == 0) for m in jax.tree.leaves(masks))
    messages, _ = jax.jit(secure_chain.encode)(updates, cohort, key)
    fixed = to_fixed_point(jax.tree.map(lambda x: x * cohort.weights[:, None, None], updates))
    assert not np.array_equal(messages["w"], fixed["w"])  # what a client sends is masked
    assert np.array_equal(  # and the masked sum is the fixed-point sum, bit for bit
        np.sum(messages["w"], 0, dtype=np.uint32), np.sum(fixed["w"], 0, dtype=np.uint32)
    )


def test_weighted_aggregate_is_the_weighted_mean_numpy_computes() -> None:
    updates = _updates()
    weights = np.asarray([0.1, 0.2, 0.3, 0.15, 0.25], np.float32)
    cohort = Cohort(jnp.arange(5), jnp.asarray(weights))
    mean, _ = jax.jit(lambda u, c, k: aggregate(weighted(), u, c, k))(
        updates, cohort, jax.random.key(0)
    )
    for name, leaf in updates.items():
        expected = np.tensordot(weights.astype(np.float64), np.asarray(leaf, np.float64), 1)
        np.testing.assert_allclose(mean[name], expected, rtol=1e-6, atol=1e-6)


def test_dp_clipping_bounds_each_update() -> None:
    updates = _updates()
    norms = np.asarray(jax.vmap(optax.global_norm)(updates))
    clip = float(np.median(norms))
    cohort = Cohort(jnp.arange(5), jnp.full(5, 0.2))
    clipped, metrics = clip_updates(clip).encode(updates, cohort, jax.random.key(0))
    after = np.asarray(jax.vmap(optax.global_norm)(clipped))
    assert np.all(after <= clip * (1 + 1e-6))
    small = norms <= clip
    np.testing.assert_allclose(after[small], norms[small], rtol=1e-6)
    assert float(metrics["clipped_fraction"]) == pytest.approx(np.mean(norms > clip))


def test_epsilon_grows_with_rounds_and_matches_dp_accounting() -> None:
    """dp_epsilon's default accounts make_round's default sampling: a fixed number of clients
    without replacement (replace-one adjacency, so the Gaussian's ratio to the sum's
    sensitivity 2C is sigma / 2), by dp_accounting's own event for it."""
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    epsilons = [dp_epsilon(1.1, 0.1, rounds, 1e-5, population=50) for rounds in (1, 5, 20)]
    assert all(a < b for a, b in zip(epsilons[:-1], epsilons[1:], strict=True))
    accountant = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    round_event = dp_accounting.SampledWithoutReplacementDpEvent(
        50, 5, dp_accounting.GaussianDpEvent(1.1 / 2)
    )
    accountant.compose(dp_accounting.SelfComposedDpEvent(round_event, 20))
    assert epsilons[2] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    assert dp_epsilon(0.0, 0.1, 3, 1e-5) == float("inf") and dp_epsilon(1.0, 0.1, 0, 1e-5) == 0


# --- algorithms and the runner ----------------------------------------------------------


def test_scaffold_runs_and_updates_its_control_variates(tmp_path, digits) -> None:
    config = _config(tmp_path, ["federated.algorithm=scaffold"])
    pieces = build_federated(config, digits)
    server, metrics = pieces.run_round(pieces.server, pieces.clients)
    server, metrics = pieces.run_round(server, pieces.clients)
    assert np.isfinite(float(metrics["loss"]))
    c = server.controls["server"]
    assert float(optax.global_norm(c)) > 0
    per_client = np.asarray(jax.vmap(optax.global_norm)(server.controls["clients"]))
    assert 4 <= np.sum(per_client > 0) <= 8  # the clients sampled in two rounds of 4
    # c is the mean of the clients' control variates (both start at zero)
    mean_ck = jax.tree.map(lambda x: jnp.mean(x, axis=0), server.controls["clients"])
    _allclose(c, mean_ck, rtol=1e-5, atol=1e-7)


def test_resume_of_a_federated_run_is_bitwise_identical(tmp_path, digits) -> None:
    overrides = [
        "federated.dp={clip_norm: 1.0, noise_multiplier: 1.0}",
        "federated.server_optimizer={name: adam}",
        "federated.checkpoint_every=2",
    ]
    config = _config(tmp_path, overrides)
    whole_dir, split_dir = tmp_path / "whole", tmp_path / "split"
    whole_dir.mkdir(), split_dir.mkdir()
    whole = run_federated(config, whole_dir, digits, progress=False)
    assert whole["status"] == "finished" and whole["round"] == 4
    stopped = run_federated(config, split_dir, digits, progress=False, callbacks=(stop_at_step(2),))
    assert stopped["status"] == "stopped" and stopped["round"] == 2
    resumed = run_federated(config, split_dir, digits, resume=True, progress=False, report=False)
    assert resumed["status"] == "finished"
    assert _bitwise_equal(resumed["server"], whole["server"])

    for name in ("metrics.json", "report.md", "learning_curves.png", "confusion_matrix.png"):
        assert (whole_dir / name).is_file(), name
    records = [json.loads(x) for x in (split_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    # The epsilon the default (Poisson sampling, PLD) accountant gives, at evaluation rounds.
    expected = [federated_epsilon(config.federated, r) for r in (2, 4)]
    assert [r["epsilon"] for r in train if "epsilon" in r] == pytest.approx(expected)
    assert [r["step"] for r in train if "epsilon" in r] == [2, 4]
    summary = json.loads((whole_dir / "metrics.json").read_text())
    assert summary["privacy"]["epsilon"] == pytest.approx(expected[-1])
    assert summary["privacy"]["sampling"] == "poisson"
    assert "| adjacency |" in (whole_dir / "report.md").read_text()
    assert summary["test"]["accuracy"] == pytest.approx(resumed["test"]["accuracy"])


@pytest.mark.slow
def test_shipped_federated_config_runs(tmp_path) -> None:
    config = load_config(
        CONFIGS / "digits_federated.yaml",
        ["federated.rounds=2", "federated.eval_every=1", "model.hidden=[16]"],
    )
    data = prepare_data(config.data)
    result = run_federated(config, tmp_path, data, progress=False)
    assert result["status"] == "finished" and np.isfinite(result["test"]["loss"])
    assert "Federated" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_experiment_runs_shortened(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "experiments" / "federated"))
    try:
        import run as experiment
    finally:
        sys.path.pop(0)
    rows = experiment.main(
        ["--rounds", "2", "--out", str(tmp_path), "--hidden", "16"]
        + ["--settings", "centralised,fedavg_iid"]
    )
    assert {row["setting"] for row in rows} >= {"centralised", "FedAvg, IID"}
    assert (tmp_path / "results.md").is_file() and (tmp_path / "accuracy_vs_round.png").is_file()


@pytest.mark.slow
def test_round_benchmark_runs_and_prints_its_ratio() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_federated.py")]
        + ["--clients", "20", "--repeats", "1", "--block", "2"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.splitlines()
    assert out[0].startswith("20 clients")
    assert re.fullmatch(r"round_vs_loop: \d+\.\d\d", out[-1])
    gap = float(re.search(r"\|: (\S+)", next(x for x in out if x.startswith("max |"))).group(1))
    assert gap < 0.05  # the same algorithm on the same data, only the shuffles differ
