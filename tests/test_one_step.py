"""One step everywhere: every verb trains with the run's own step, with every option on.

Noise augmentation, label smoothing, bfloat16 compute and micro-batches change a sweep member,
a federated client, a learning-curve point and the determinism check exactly as they change a
``jaxtrain train`` run (the reference: the standalone run, or the step applied by hand), and a
verb refuses, before anything is written, the loop settings it cannot honour.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrain.checkpoint import state_digest
from jaxtrain.cli import main
from jaxtrain.config import ConfigError, load_config
from jaxtrain.config.verbs import check_verb
from jaxtrain.federated import build_federated
from jaxtrain.federated.client import _plan
from jaxtrain.runner import check_determinism, learning_curve_run, train
from jaxtrain.sweep import run_sweep
from jaxtrain.train import build_pieces, build_step, stop_at_step, train_and_evaluate
from jaxtrain.train.state import TrainState

ATOL = 1e-6
BASE = """
name: one_step
seed: 0
data: {name: digits, batch_size: 32}
model: {name: mlp, hidden: [16], dropout: 0.1}
optimizer: {name: adamw, learning_rate: 0.003}
train: {epochs: 1, eval_every: 20, log_every: 10, checkpoint: {async_save: false}}
"""
# Every option of the step that a verb used to drop.
OPTIONS = [
    "train.augment.noise_std=0.3",
    "train.label_smoothing=0.2",
    "train.precision=bfloat16",
    "train.micro_batches=2",
]


def _write(tmp: Path, extra: str = "") -> Path:
    path = tmp / "one_step.yaml"
    path.write_text(BASE + extra)
    return path


def _difference(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _member(result: dict, member: int):
    population = result["populations"][0]
    position = population["members"].index(member)
    return jax.tree.map(lambda x: np.asarray(x[position]), population["state"].params)


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The same two-member sweep with the options off and on."""
    tmp = tmp_path_factory.mktemp("sweeps")
    path = _write(tmp, "sweep: {axes: {optimizer.learning_rate: [0.001, 0.01]}}\n")
    results = {}
    for name, overrides in (("off", []), ("on", OPTIONS)):
        run_dir = tmp / name
        run_dir.mkdir()
        results[name] = run_sweep(load_config(path, overrides), run_dir, progress=False)
    return tmp, path, results


def test_sweep_member_with_every_option_equals_its_standalone_run(sweeps) -> None:
    tmp, path, results = sweeps
    for member in (0, 1):
        settings = results["on"]["members"][member]["settings"]
        overrides = [*OPTIONS, *(f"{k}={v}" for k, v in settings.items()), "sweep=null"]
        alone = train(path, overrides, runs_dir=tmp / "runs", progress=False, report=False)
        assert _difference(alone.state.params, _member(results["on"], member)) <= ATOL
    # The options change the members' numbers (a sweep that ignored them would not move).
    assert _difference(_member(results["on"], 0), _member(results["off"], 0)) > 1e-3


def _federated_config(tmp: Path, options: list[str]):
    """One client holding the whole training split, full participation, three local steps."""
    path = tmp / "federated.yaml"
    path.write_text(
        "name: one_step_federated\nseed: 0\n"
        "data: {name: digits, batch_size: 32}\n"
        "model: {name: mlp, hidden: [16], dropout: 0.1}\n"
        "optimizer: {name: sgd, learning_rate: 0.1, momentum: 0.0}\n"
        "federated: {num_clients: 1, clients_per_round: 1, local_steps: 3, rounds: 1, "
        "batch_size: 32}\n"
    )
    return load_config(path, options)


@pytest.mark.parametrize(
    "options",
    [pytest.param([], marks=pytest.mark.slow), OPTIONS],  # every_option covers plain's path
    ids=["plain", "every_option"],
)
def test_federated_client_equals_the_train_step_applied_by_hand(tmp_path, options) -> None:
    """FedAvg, one client, full participation, server SGD at rate 1: the new global model is
    the client's model after its local steps, which must be the run's own ``train_step``
    applied to the same batches (the client's shuffled order) with the same key."""
    config = _federated_config(tmp_path, options)
    from jaxtrain.data import prepare_data

    data = prepare_data(config.data)
    federated = build_federated(config, data)
    server, _ = federated.run_round(federated.server, federated.clients)

    pieces = build_pieces(config, data, steps=federated.local_steps)
    step = jax.jit(build_step(config, pieces))
    clients = federated.clients
    # The round's keys, as make_round derives them: client 0 is the only one sampled.
    round_key = jax.random.fold_in(federated.server.rng, 0)
    _, train_key, _ = jax.random.split(round_key, 3)
    shuffle_key, step_key = jax.random.split(jax.random.fold_in(train_key, 0))
    size, padded = int(clients.sizes[0]), clients.inputs.shape[1]
    plan = _plan(shuffle_key, jnp.int32(size), padded, 32, padded // 32, 3, None, 3)
    state = TrainState(jnp.int32(0), pieces.state.params, pieces.tx.init(pieces.state.params),
                       pieces.state.model_state, step_key)  # fmt: skip
    for t in range(3):
        rows = np.asarray(plan["rows"][t])
        batch = {
            "inputs": jnp.asarray(clients.inputs[0][rows]),
            "labels": jnp.asarray(clients.labels[0][rows]),
            "weights": plan["weights"][t],
        }
        state, _ = step(state, batch)
    assert _difference(server.params, state.params) <= ATOL


def test_federated_options_change_the_round(tmp_path) -> None:
    from jaxtrain.data import prepare_data

    rounds = []
    for options in ([], OPTIONS):
        config = _federated_config(tmp_path, options)
        federated = build_federated(config, prepare_data(config.data))
        rounds.append(federated.run_round(federated.server, federated.clients)[0].params)
    assert _difference(*rounds) > 1e-4


def test_learning_curve_point_is_the_train_run(tmp_path) -> None:
    path = _write(tmp_path)
    run_dir, result = learning_curve_run(
        path, OPTIONS, fractions=[1.0], runs_dir=tmp_path / "curve", progress=False
    )
    alone = train(path, OPTIONS, runs_dir=tmp_path / "runs", progress=False, report=False)
    point = json.loads((run_dir / "fraction_1" / "metrics.json").read_text())
    assert point["test"]["loss"] == alone.test["loss"]  # the same run, bit for bit
    assert result["rows"][0]["test"] == alone.test["accuracy"]


def test_determinism_check_runs_the_train_runs_own_steps(tmp_path) -> None:
    path = _write(tmp_path)
    report = check_determinism(path, OPTIONS, steps=7)
    assert report["deterministic"] and report["steps"] == 7
    config = load_config(path, OPTIONS)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stopped = train_and_evaluate(
        config, run_dir, callbacks=(stop_at_step(7),), progress=False, report=False
    )
    assert stopped.status == "stopped" and stopped.step == 7
    assert report["digests"][0] == state_digest(stopped.state.params)
    plain = check_determinism(path, [], steps=7)
    assert plain["digests"][0] != report["digests"][0]  # the options reach the check


@pytest.mark.parametrize(
    ("verb", "override", "key"),
    [
        ("sweep", "train.parallel=pmap", "train.parallel"),
        ("sweep", "train.early_stopping={patience: 2}", "train.early_stopping"),
        ("sweep", "train.nonfinite=rollback", "train.nonfinite"),
        ("federated", "train.reduce_on_plateau={patience: 2}", "train.reduce_on_plateau"),
        ("federated", "train.fused_epochs=true", "train.fused_epochs"),
        ("federated", "train.micro_batches=3", "train.micro_batches"),
    ],
)
def test_a_setting_a_verb_cannot_honour_is_refused(tmp_path, capsys, verb, override, key):
    if verb == "sweep":
        path = _write(tmp_path, "sweep: {axes: {optimizer.learning_rate: [0.001, 0.01]}}\n")
    else:
        path = tmp_path / "federated.yaml"
        _federated_config(tmp_path, [])
    with pytest.raises(ConfigError, match=key):
        check_verb(load_config(path, [override]), verb, path)
    runs = tmp_path / "runs"
    assert main([verb, str(path), override, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0]
    assert not runs.exists()


@pytest.mark.parametrize(
    ("override", "section"),
    [
        ("sweep={axes: {seed: [0, 1]}}", "sweep"),
        ("federated={num_clients: 4, clients_per_round: 2}", "federated"),
    ],  # fmt: skip
)
def test_train_refuses_a_section_it_would_not_run(tmp_path, capsys, override, section) -> None:
    path = _write(tmp_path)
    runs = tmp_path / "runs"
    assert main(["train", str(path), override, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{section}:" in err[0] and f"jaxtrain {section}" in err[0]
    assert not runs.exists()
