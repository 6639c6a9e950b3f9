"""A sweep across processes: two processes joined by ``jax.distributed`` (gloo on CPU), two
devices each, train one population sharded over all four devices; every member ends equal to
the same sweep run in one process on one device.

Tolerance: 1e-5 on parameters (float32 sums in another order on another device layout: a few
ulps; a wrong member, learning rate or data order moves parameters by more than 1e-3).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxtrain.config import load_config
from jaxtrain.config.verbs import check_verb
from tests.support import ROOT, forced_devices

ATOL = 1e-5

CONFIG = """
name: sweep_processes
seed: 0
data: {name: digits, batch_size: 64}
model: {name: mlp, hidden: [8]}
optimizer: {name: adamw, learning_rate: 0.003}
train: {epochs: 1, eval_every: 9, log_every: 10, checkpoint: {async_save: false}}
distributed: {initialization_timeout: 120}
sweep:
  axes:
    optimizer.learning_rate: [0.001, 0.01, 0.003]
    data.seed: [0, 3]
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(config: Path, runs: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.sweep_worker", str(config), str(runs), str(out)],
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]


def test_a_sweep_config_may_ask_for_processes(tmp_path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(CONFIG)
    check_verb(load_config(path), "sweep", path)  # no longer refused
    with pytest.raises(Exception, match="sweep.devices: under distributed"):
        check_verb(load_config(path, ["sweep.devices=2"]), "sweep", path)


@pytest.mark.slow  # ~90 s on 2 shared cores: three JAX processes
def test_two_processes_train_one_population_equal_to_one_process(tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(CONFIG)
    port = _free_port()
    processes = [
        _worker(
            path,
            tmp_path / "runs",
            tmp_path / "two",
            {
                "XLA_FLAGS": forced_devices(2),
                "JAXTRAIN_COORDINATOR": f"127.0.0.1:{port}",
                "JAXTRAIN_NUM_PROCESSES": "2",
                "JAXTRAIN_PROCESS_ID": str(index),
            },
        )
        for index in range(2)
    ]
    for process in processes:
        _finish(process)
    one = tmp_path / "single.yaml"
    one.write_text(CONFIG.replace("distributed: {initialization_timeout: 120}\n", ""))
    _finish(_worker(one, tmp_path / "runs_one", tmp_path / "one", {}))

    two = json.loads((tmp_path / "two.json").read_text())
    single = json.loads((tmp_path / "one.json").read_text())
    # 6 members padded to 8 rows over the 4 devices of both processes
    assert (two["processes"], two["devices"], two["population_devices"]) == (2, 4, 4)
    assert (single["processes"], single["devices"]) == (1, 1)
    a, b = np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz")
    assert sorted(a.files) == sorted(b.files) and len({k.split("/")[0] for k in a.files}) == 6
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], atol=ATOL, rtol=0, err_msg=key)
    first = [f for f in a.files if f.startswith("m0/")][0]
    assert np.max(np.abs(a[first] - a[first.replace("m0/", "m1/")])) > 1e-3  # members differ
    for row_two, row_one in zip(two["members"], single["members"], strict=True):
        assert row_two["status"] == row_one["status"] == "finished"
        assert row_two["best_value"] == pytest.approx(row_one["best_value"], abs=ATOL)
    # Only process 0 wrote the sweep directory; the best member is an ordinary run dir.
    run_dir = Path(two["run_dir"])
    assert len(list((tmp_path / "runs" / "sweep_processes").iterdir())) == 1
    assert (run_dir / "members.csv").is_file() and (run_dir / "best" / "config.yaml").is_file()


SEARCH = CONFIG.replace(
    """sweep:
  axes:
    optimizer.learning_rate: [0.001, 0.01, 0.003]
    data.seed: [0, 3]
""",
    """sweep:
  method: tpe
  batch: 3
  rounds: 2
  axes:
    optimizer.name: [adamw, sgd]
    optimizer.learning_rate: {distribution: log_uniform, low: 0.001, high: 0.1}
    optimizer.momentum: {distribution: uniform, low: 0.5, high: 0.95, when: {optimizer.name: sgd}}
""",
)


@pytest.mark.slow  # ~2 min on 2 shared cores
def test_two_processes_run_a_search_in_rounds_like_one_process(tmp_path: Path) -> None:
    """Process 0 asks each round and sends the trials to process 1; both train their share;
    the study process 0 keeps holds the same trials and values as a one-process search."""
    import optuna

    from jaxtrain.sweep.study import storage_url

    path = tmp_path / "search.yaml"
    path.write_text(SEARCH)
    port = _free_port()
    env = {
        "XLA_FLAGS": forced_devices(2),
        "JAXTRAIN_COORDINATOR": f"127.0.0.1:{port}",
        "JAXTRAIN_NUM_PROCESSES": "2",
    }
    processes = [
        _worker(path, tmp_path / "runs", tmp_path / "two", {**env, "JAXTRAIN_PROCESS_ID": str(i)})
        for i in range(2)
    ]
    for process in processes:
        _finish(process)
    one = tmp_path / "single.yaml"
    one.write_text(SEARCH.replace("distributed: {initialization_timeout: 120}\n", ""))
    _finish(_worker(one, tmp_path / "runs_one", tmp_path / "one", {}))
    studies = []
    for name in ("two", "one"):
        run_dir = Path(json.loads((tmp_path / f"{name}.json").read_text())["run_dir"])
        study = optuna.load_study(study_name="sweep_processes", storage=storage_url(run_dir))
        studies.append(study.trials)
    two, single = studies
    assert len(two) == len(single) == 6
    for a, b in zip(two, single, strict=True):
        assert a.params == b.params and a.state == b.state
        assert a.value == pytest.approx(b.value, abs=ATOL)
