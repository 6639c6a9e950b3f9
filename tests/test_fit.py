"""``jaxtrain.fit``: a user's Flax module (linen or NNX), arrays and optax transformation get
the whole ``train`` run: the same run directory, the same numbers, the same resume."""

from __future__ import annotations

import json
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import optax
import pandas as pd
import pytest
from flax import nnx

import jaxtrain
from jaxtrain.config import ConfigError
from jaxtrain.runner import train
from jaxtrain.train import stop_at_step

CONFIG = {
    "data": {"batch_size": 16},
    "optimizer": {"name": "sgd", "learning_rate": 0.05},
    "train": {"epochs": 2, "log_every": 5, "eval_every": 10},
}


def blobs(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs in 4 dimensions, float64 features, int labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    return rng.normal(0, 2, (3, 4))[labels] + rng.normal(0, 1, (n, 4)), labels


class LinenMLP(nn.Module):
    hidden: int = 16
    num_outputs: int = 3

    @nn.compact
    def __call__(self, x):
        hidden = nn.relu(nn.Dense(self.hidden)(x))  # Dense_0
        return nn.Dense(self.num_outputs)(hidden)  # Dense_1


class NNXMLP(nnx.Module):
    def __init__(self, din: int, hidden: int, dout: int, *, rngs: nnx.Rngs):
        self.first = nnx.Linear(din, hidden, rngs=rngs)
        self.second = nnx.Linear(hidden, dout, rngs=rngs)

    def __call__(self, x):
        return self.second(nnx.relu(self.first(x)))


def _close(a, b, atol: float) -> bool:
    return all(
        np.allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_nnx_and_linen_modules_of_one_architecture_end_with_the_same_metrics(tmp_path) -> None:
    """Same initial parameters (the linen init copied into the NNX module), same data order:
    the NNX module, split into graph and state, trains through the same pure step."""
    x, y = blobs()
    linen = LinenMLP()
    variables = linen.init(jax.random.key(0), x[:1].astype(np.float32))
    module = NNXMLP(4, 16, 3, rngs=nnx.Rngs(7))
    p = variables["params"]
    for layer, name in ((module.first, "Dense_0"), (module.second, "Dense_1")):
        layer.kernel.value, layer.bias.value = p[name]["kernel"], p[name]["bias"]
    runs = tmp_path / "runs"
    a = jaxtrain.fit(linen, (x, y), CONFIG, variables=variables, runs_dir=runs, progress=False,
                     report=False)  # fmt: skip
    b = jaxtrain.fit(module, (x, y), CONFIG, runs_dir=runs, progress=False, report=False)
    assert a.status == b.status == "finished" and a.step == b.step == 12
    for key in ("accuracy", "loss", "f1_macro"):
        assert abs(a.test[key] - b.test[key]) <= 1e-5, key
    pairs = {"Dense_0": "first", "Dense_1": "second"}
    for linen_name, nnx_name in pairs.items():
        assert _close(a.state.params[linen_name], b.state.params[nnx_name], 1e-5)
    record = (b.run_dir / "config.yaml").read_text()
    assert f"name: {__name__}:NNXMLP" in record


def test_fit_equals_jaxtrain_train_of_the_same_data_and_model(tmp_path) -> None:
    """A linen MLP and arrays through ``fit`` give the run ``jaxtrain train`` gives for a
    CSV of the same rows and ``model: mlp``: parameters and test metrics bit for bit, and
    the same files in the run directory."""
    x, y = blobs()
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(4)]).assign(label=y)
    frame.to_csv(tmp_path / "blobs.csv", index=False)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"name: csv\ndata: {{path: {tmp_path / 'blobs.csv'}, label_column: label, "
        "batch_size: 16}\n"
        "model: {name: mlp, hidden: [16]}\noptimizer: {name: sgd, learning_rate: 0.05}\n"
        "train: {epochs: 2, log_every: 5, eval_every: 10}\n"
    )
    cli = train(config.resolve(), runs_dir=tmp_path / "runs", progress=False)
    ours = jaxtrain.fit(
        jaxtrain.MLP(hidden=(16,), num_classes=3), (x, y), CONFIG, runs_dir=tmp_path / "runs",
        progress=False,
    )  # fmt: skip
    leaves = zip(jax.tree.leaves(cli.state.params), jax.tree.leaves(ours.state.params), strict=True)
    assert all(np.array_equal(a, b) for a, b in leaves)
    assert cli.test == ours.test
    files = {p.name for p in cli.run_dir.iterdir()}
    assert files == {p.name for p in ours.run_dir.iterdir()}
    summary = json.loads((ours.run_dir / "metrics.json").read_text())
    assert summary["model"] == "jaxtrain.models.mlp:MLP"
    assert "jaxtrain.models.mlp:MLP" in (ours.run_dir / "report.md").read_text()


class NNXRegularised(nnx.Module):
    """BatchNorm statistics (model state) and dropout (random streams) in NNX."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.first = nnx.Linear(4, 16, rngs=rngs)
        self.norm = nnx.BatchNorm(16, rngs=rngs)
        self.drop = nnx.Dropout(0.3, rngs=rngs)
        self.second = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        return self.second(self.drop(nnx.relu(self.norm(self.first(x)))))


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_fit_resumes_bitwise(tmp_path, kind) -> None:
    """Stopped mid-run and resumed, the run ends exactly as one never stopped: for NNX the
    BatchNorm statistics travel in the state and dropout draws from the step's key."""
    x, y = blobs()

    def model():
        return LinenMLP() if kind == "linen" else NNXRegularised(rngs=nnx.Rngs(3))

    runs = tmp_path / "runs"
    straight = jaxtrain.fit(model(), (x, y), CONFIG, runs_dir=runs, progress=False,
                            report=False)  # fmt: skip
    stopped = jaxtrain.fit(model(), (x, y), CONFIG, runs_dir=runs, progress=False, report=False,
                           callbacks=(stop_at_step(9),))  # fmt: skip
    assert (stopped.status, stopped.step) == ("stopped", 9)
    resumed = jaxtrain.fit(model(), (x, y), CONFIG, resume=stopped.run_dir, progress=False,
                           report=False)  # fmt: skip
    assert resumed.step == straight.step and resumed.test == straight.test
    assert _close(resumed.state.params, straight.state.params, 0.0)
    assert _close(resumed.state.model_state, straight.state.model_state, 0.0)
    if kind == "nnx":
        assert set(straight.state.model_state["norm"]) == {"mean", "var"}
        with pytest.raises(ConfigError, match="model.name: the run trained"):
            jaxtrain.fit(LinenMLP(), (x, y), CONFIG, resume=stopped.run_dir)


def test_a_given_optax_transformation_trains_and_logs_its_rate_only_when_exposed(
    tmp_path,
) -> None:
    x, y = blobs()
    runs = tmp_path / "runs"
    rates = []
    for tx in (optax.adamw(3e-3), optax.inject_hyperparams(optax.adamw)(learning_rate=3e-3)):
        result = jaxtrain.fit(LinenMLP(), (x, y), CONFIG, optimizer=tx, runs_dir=runs,
                              progress=False, report=False)  # fmt: skip
        assert result.status == "finished"
        assert "name: given" in (result.run_dir / "config.yaml").read_text()
        lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
        train_lines = [json.loads(line) for line in lines if '"train"' in line]
        rates.append({line.get("learning_rate") for line in train_lines})
    assert rates[0] == {None}
    assert len(rates[1]) == 1 and rates[1].pop() == pytest.approx(3e-3)


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ({"train.reduce_on_plateau": {}}, "reduce_on_plateau"),
        ({"train.nonfinite": "rollback"}, "nonfinite"),
    ],  # fmt: skip
)
def test_what_would_scale_a_given_optimizers_rate_is_refused(tmp_path, setting, key) -> None:
    x, y = blobs()
    with pytest.raises(ConfigError, match=f"train.{key}: scales the learning rate"):
        jaxtrain.fit(LinenMLP(), (x, y), {**CONFIG, **setting}, optimizer=optax.sgd(0.1),
                     runs_dir=tmp_path / "runs")  # fmt: skip
    assert not (tmp_path / "runs").exists()


def test_a_model_whose_outputs_do_not_fit_the_data_is_a_clear_error(tmp_path) -> None:
    x, y = blobs()
    with pytest.raises(ConfigError, match=r"outputs of shape \(5,\).*3 classes"):
        jaxtrain.fit(LinenMLP(num_outputs=5), (x, y), CONFIG, runs_dir=tmp_path / "runs")
    with pytest.raises(TypeError, match="expected a Flax module"):
        jaxtrain.fit(object(), (x, y), CONFIG, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_fit_takes_a_dataframe_and_a_file_path(tmp_path) -> None:
    x, y = blobs()
    frame = pd.DataFrame(x, columns=list("abcd")).assign(kind=np.array(["p", "q", "r"])[y])
    overrides = [*[f"{k}={json.dumps(v)}" for k, v in _flat(CONFIG).items()],
                 "data.label_column=kind"]  # fmt: skip
    result = jaxtrain.fit(LinenMLP(), frame, overrides, runs_dir=tmp_path / "runs",
                          progress=False, report=False)  # fmt: skip
    assert result.status == "finished"
    assert json.loads((result.run_dir / "data_stats.json").read_text())["prepare"][
        "class_names"
    ] == ["p", "q", "r"]
    np.savez(tmp_path / "blobs.npz", x=x, y=y)
    result = jaxtrain.fit(LinenMLP(), tmp_path / "blobs.npz", CONFIG, runs_dir=tmp_path / "runs",
                          progress=False, report=False)  # fmt: skip
    assert "path: " in (result.run_dir / "config.yaml").read_text()
    assert "name: blobs" in (result.run_dir / "config.yaml").read_text()


def _flat(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_sweep_model_member_equals_the_fit_of_its_settings(tmp_path) -> None:
    """A population over optax's own hyperparameter names (inject_hyperparams), member k
    equal to the standalone run of member k's settings."""
    x, y = blobs()
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    settings = jaxtrain.grid(learning_rate=[1e-3, 1e-2], b1=[0.8, 0.9])
    result = jaxtrain.sweep_model(LinenMLP(), (x, y), settings, CONFIG, optimizer=tx, seeds=0)
    assert len(result.validation) == 4
    k = 3
    alone = jaxtrain.fit(
        LinenMLP(),
        (x, y),
        CONFIG,
        optimizer=optax.adam(float(settings["learning_rate"][k]), b1=float(settings["b1"][k])),
        runs_dir=tmp_path / "runs",
        progress=False,
        report=False,
    )
    assert _close(result.member(k).params, alone.state.params, 1e-6)
    metrics = json.loads((alone.run_dir / "metrics.json").read_text())
    assert result.validation[k]["accuracy"] == pytest.approx(metrics["validation"]["accuracy"])


def test_a_data_path_is_recorded_and_its_name_defaults_to_the_stem(tmp_path: Path) -> None:
    x, y = blobs()
    np.savez(tmp_path / "points.npz", inputs=x, labels=y)
    config = jaxtrain.load_config(_write(tmp_path, "data: {path: points.npz}"))
    assert config.data.name == "points"


def _write(tmp_path: Path, data: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"name: x\n{data}\n")
    return path


def test_an_nnx_modules_dropout_draws_from_the_steps_key_and_eval_is_deterministic() -> None:
    from jaxtrain.models.adapters import as_model

    model = as_model(NNXRegularised(rngs=nnx.Rngs(0)))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    params, state = model.init(jax.random.key(0), x[:1])

    def run(key, train=True):
        return np.asarray(model.apply(params, state, x, train=train, rng=key)[0])

    np.testing.assert_array_equal(run(jax.random.key(1)), run(jax.random.key(1)))
    assert not np.array_equal(run(jax.random.key(1)), run(jax.random.key(2)))
    np.testing.assert_array_equal(run(jax.random.key(1), False), run(jax.random.key(2), False))
    _, updated = model.apply(params, state, x, train=True, rng=jax.random.key(1))
    assert not np.array_equal(updated["norm"]["mean"], state["norm"]["mean"])  # stats move


@pytest.mark.parametrize("parallel", ["fsdp", "pmap"])
def test_user_modules_run_under_every_placement(tmp_path, parallel) -> None:
    """A linen module without a ``train`` argument and an NNX module under a mesh (FSDP: no
    logical annotations, every parameter by the fallback) and under pmap."""
    x, y = blobs()
    config = {**CONFIG, "train": {**CONFIG["train"], "parallel": parallel}}
    for model in (LinenMLP(), NNXMLP(4, 8, 3, rngs=nnx.Rngs(0))):
        result = jaxtrain.fit(model, (x, y), config, runs_dir=tmp_path / "runs", progress=False,
                              report=False)  # fmt: skip
        assert result.status == "finished" and np.isfinite(result.test["loss"])
