"""A package outside jaxtrain adds a model, a dataset and an optimizer through entry points
(and by import path); ``jaxtrain train`` runs it like a built-in, by its own name.

The package (tests/plugin_pkg/jaxtrain_demo_plugin) is installed the way pip installs one: the
package and a ``.dist-info`` folder with its ``entry_points.txt`` in a site directory on the
path, found by ``importlib.metadata`` as any installed distribution is.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxtrain import registry
from jaxtrain.cli import main
from jaxtrain.config import ConfigError, dump_config, load_config, validate
from jaxtrain.runner import new_run_dir, train
from jaxtrain.train import stop_at_step, train_and_evaluate
from tests.support import ROOT

PLUGIN = Path(__file__).parent / "plugin_pkg"
RUN_FILES = {"config.yaml", "environment.json", "data_stats.json", "metrics.jsonl",
             "metrics.json", "report.md", "learning_curves.png", "confusion_matrix.png",
             "checkpoints"}  # fmt: skip


def install_plugin(site: Path) -> Path:
    """Copy the demo package into ``site`` with a dist-info (METADATA, entry_points.txt)."""
    shutil.copytree(PLUGIN / "jaxtrain_demo_plugin", site / "jaxtrain_demo_plugin")
    info = site / "jaxtrain_demo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: jaxtrain-demo-plugin\nVersion: 0.1\n"
    )
    shutil.copy(PLUGIN / "entry_points.txt", info / "entry_points.txt")
    return site


@pytest.fixture
def site(tmp_path_factory, monkeypatch) -> Path:
    """The demo plugin installed and on ``sys.path`` for one test (resolutions forgotten)."""
    path = install_plugin(tmp_path_factory.mktemp("site"))
    monkeypatch.syspath_prepend(str(path))
    registry._RESOLVED.clear()
    yield path
    registry._RESOLVED.clear()
    for name in [m for m in sys.modules if m.startswith("jaxtrain_demo_plugin")]:
        del sys.modules[name]


def plugin_yaml(model: str = "{name: demo_wide_mlp, width: 16}", name: str = "plugin_run") -> str:
    return f"""
name: {name}
data: {{name: demo_blobs, batch_size: 16}}
model: {model}
optimizer: {{name: adamw, learning_rate: 0.01}}
train: {{epochs: 3, log_every: 5, eval_every: 10}}
"""


def _leaves_equal(a, b) -> bool:
    """Bitwise equality of two pytrees (typed PRNG keys through their key data)."""

    def numbers(x):
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return all(
        np.array_equal(numbers(x), numbers(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_entry_points_resolve_to_families_with_strict_keys(site) -> None:
    raw = {
        "name": "x",
        "data": {"name": "demo_blobs"},
        "model": {"name": "demo_wide_mlp", "width": 8},
        "optimizer": {"name": "demo_momentum", "learning_rate": 0.1, "momentum": 0.5},
    }
    config = validate(raw, "c.yaml")
    assert (config.model.name, config.model.width, config.model.depth) == ("demo_wide_mlp", 8, 1)
    assert (config.optimizer.momentum, config.optimizer.nesterov) == (0.5, False)
    bad = {**raw, "model": {"name": "demo_wide_mlp", "widht": 8}}
    with pytest.raises(
        ConfigError, match=r"c.yaml: model.widht: unknown key \(did you mean 'width'"
    ):
        validate(bad, "c.yaml")
    bad = {**raw, "model": {"name": "demo_wide_mlp", "width": "wide"}}
    with pytest.raises(ConfigError, match=r"model.width: Input should be a valid integer"):
        validate(bad, "c.yaml")
    bad = {**raw, "model": {"name": "demo_wide_mpl"}}
    with pytest.raises(ConfigError, match=r"model.name: 'demo_wide_mpl' is not a model"):
        validate(bad, "c.yaml")


def test_cli_train_with_an_entry_point_model_writes_a_complete_run_named_by_it(
    site, tmp_path, capsys
) -> None:
    path = tmp_path / "plugin.yaml"
    path.write_text(plugin_yaml())
    runs = tmp_path / "runs"
    assert main(["train", str(path), "--runs-dir", str(runs), "--no-progress"]) == 0
    (run_dir,) = list((runs / "plugin_run").iterdir())
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    assert "name: demo_wide_mlp" in (run_dir / "config.yaml").read_text()
    assert "demo_wide_mlp" in (run_dir / "report.md").read_text()
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["model"] == "demo_wide_mlp" and summary["test"]["accuracy"] > 0.9
    assert load_config(run_dir / "config.yaml").model.width == 16  # it loads back


def test_a_registered_model_trains_exactly_as_the_same_built_in(site, tmp_path) -> None:
    """WideMLP(width 16) is the built-in mlp with hidden [16], layer for layer: the same seed
    gives the same parameters and metrics, bit for bit."""
    path = tmp_path / "plugin.yaml"
    path.write_text(plugin_yaml())
    ours = train(path, runs_dir=tmp_path / "runs", progress=False, report=False)
    builtin = train(
        path,
        ["model={name: mlp, hidden: [16]}", "name=builtin"],
        runs_dir=tmp_path / "runs",
        progress=False,
        report=False,
    )
    assert _leaves_equal(ours.state.params, builtin.state.params)
    assert ours.test == builtin.test


@pytest.mark.parametrize(
    "model",
    ["{name: demo_wide_mlp, width: 16}", "{name: jaxtrain_demo_plugin.nets:WideMLP, width: 16}"],
)
def test_resume_of_a_plugin_run_is_bitwise_identical(site, tmp_path, model) -> None:
    path = tmp_path / "plugin.yaml"
    path.write_text(plugin_yaml(model))
    straight = train(path, runs_dir=tmp_path / "straight", progress=False, report=False)
    config = load_config(path)
    run_dir = new_run_dir(tmp_path / "runs", config.name)
    dump_config(config, run_dir / "config.yaml")
    stopped = train_and_evaluate(
        config, run_dir, callbacks=(stop_at_step(13),), progress=False, report=False
    )
    assert (stopped.status, stopped.step) == ("stopped", 13)
    resumed = train(None, resume=run_dir, progress=False, report=False)
    assert resumed.step == straight.step
    assert _leaves_equal(resumed.state, straight.state)
    assert resumed.test == straight.test


def test_an_nnx_family_initialises_from_the_run_seed(site) -> None:
    from jaxtrain.data import prepare_data
    from jaxtrain.train import build_pieces

    raw = {"name": "x", "data": {"name": "demo_blobs"}, "model": {"name": "demo_nnx_mlp"}}
    config = validate(raw, "c.yaml")
    assert config.model.width == 32  # derived from NNXMLP.__init__
    data = prepare_data(config.data)
    states = [build_pieces(validate({**raw, "seed": s}, "c")).state for s in (0, 0, 1)]
    assert states[0].params["hidden"]["kernel"].shape == (5, 32)
    assert _leaves_equal(states[0].params, states[1].params)
    assert not _leaves_equal(states[0].params, states[2].params)
    assert data.num_outputs == 3


@pytest.mark.slow
def test_the_real_cli_finds_the_entry_point_in_a_fresh_process(tmp_path) -> None:
    """``jaxtrain train`` in a new process with the plugin only on PYTHONPATH."""
    site = install_plugin(tmp_path / "site")
    path = tmp_path / "plugin.yaml"
    path.write_text(plugin_yaml())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    command = [sys.executable, "-m", "jaxtrain", "train", str(path), "--no-progress",
               "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (run_dir,) = list((tmp_path / "runs" / "plugin_run").iterdir())
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxtrain",
            "train",
            "--resume",
            str(run_dir),
            "train.epochs=4",
            "--no-progress",
        ],  # fmt: skip
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "demo_wide_mlp" in (run_dir / "report.md").read_text()


def test_without_the_package_the_name_is_a_one_line_config_error(tmp_path, capsys) -> None:
    registry._RESOLVED.clear()
    path = tmp_path / "plugin.yaml"
    path.write_text(plugin_yaml())
    assert main(["train", str(path), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "model.name: 'demo_wide_mlp' is not a model" in err
    assert "entry-point group jaxtrain.models" in err
    assert not (tmp_path / "runs").exists()
