"""A table's own test split (``data.split_column``) is honoured by every verb: each one
evaluates on exactly the rows the file marks ``test`` (all verbs prepare data through
``prepare_data``; ``validation_path``/``test_path`` take the same path, see
tests/test_data_sources.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaxtrain.runner import evaluate_run, federated_run, learning_curve_run, sweep_run, train

TEST_ROWS = 18


@pytest.fixture
def config(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    labels = np.arange(90) % 3
    frame = pd.DataFrame(rng.normal(0, 1, (90, 4)) + 2 * labels[:, None], columns=list("abcd"))
    frame = frame.assign(label=labels, fold=np.where(np.arange(90) < TEST_ROWS, "test", "train"))
    frame.to_csv(tmp_path / "fixed.csv", index=False)
    path = tmp_path / "fixed.yaml"
    path.write_text(
        f"name: fixed\ndata: {{path: {tmp_path / 'fixed.csv'}, label_column: label, "
        "split_column: fold, batch_size: 8}\nmodel: {name: mlp, hidden: [8]}\n"
        "optimizer: {name: sgd, learning_rate: 0.1}\n"
        "train: {log_every: 5, checkpoint: {async_save: false}}\n"
    )
    return path


def test_train_and_eval_evaluate_the_files_own_test_rows(config: Path, tmp_path: Path) -> None:
    result = train(config, ["train.epochs=1"], runs_dir=tmp_path / "runs", progress=False,
                   report=False)  # fmt: skip
    assert result.test["count"] == TEST_ROWS
    assert evaluate_run(result.run_dir)["test"]["count"] == TEST_ROWS


@pytest.mark.slow
def test_sweep_federated_and_learning_curve_evaluate_the_files_own_test_rows(
    config: Path, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    one_epoch = ["train.epochs=1"]
    _, swept = sweep_run(
        config, [*one_epoch, "sweep.axes={optimizer.learning_rate: [0.1, 0.2]}"], runs_dir=runs,
        progress=False,
    )  # fmt: skip
    assert swept["best"]["test"]["count"] == TEST_ROWS
    federated = federated_run(
        config,
        ["federated={num_clients: 4, clients_per_round: 2, rounds: 2, eval_every: 1}"],
        runs_dir=runs,
        progress=False,
    )
    assert federated["test"]["count"] == TEST_ROWS
    run_dir, _ = learning_curve_run(config, one_epoch, [0.5, 1.0], runs_dir=runs, progress=False)
    for child in sorted(run_dir.glob("fraction_*")):
        summary = json.loads((child / "metrics.json").read_text())
        assert summary["test"]["count"] == TEST_ROWS
