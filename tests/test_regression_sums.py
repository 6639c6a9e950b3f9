"""Held-out regression metrics of a run equal scikit-learn's on targets far from zero.

The run's metrics come from float32 sums added over padded batches; these tests compare them
with scikit-learn (float64) on the same values, for targets with large offsets and a small
spread, where sum(y^2) - (sum y)^2 / n in float32 lost every digit.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from jaxtrain.config import load_config
from jaxtrain.data import prepare_data
from jaxtrain.data.prepare import fit_normalizer
from jaxtrain.runner import train
from jaxtrain.train.tasks import regression
from tests.support import CONFIGS

BATCH = 32


def _run_sums(task, outputs: np.ndarray, targets: np.ndarray) -> dict:
    """The task's metrics over padded, masked batches, summed as evaluate() sums them."""
    step = jax.jit(task.eval_sums)
    totals = None
    for start in range(0, len(targets), BATCH):
        out = np.zeros((BATCH, outputs.shape[1]), np.float32)
        tgt = np.full((BATCH,) + targets.shape[1:], 7.0, np.float32)  # padding garbage
        size = min(BATCH, len(targets) - start)
        out[:size], tgt[:size] = outputs[start : start + size], targets[start : start + size]
        sums = step(out, tgt, np.arange(BATCH) < size)
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    return task.finalize(jax.device_get(totals))


def _case(offsets, n=301, seed=0):
    """Targets offset +- 0.5 (one column per offset), standardised on a training split, and
    predictions with an error of about a third of the spread."""
    rng = np.random.default_rng(seed)
    k = len(offsets)
    train = np.asarray(offsets) + rng.uniform(-0.5, 0.5, (4 * n, k))
    truth = np.asarray(offsets) + rng.uniform(-0.5, 0.5, (n, k))
    scaler = fit_normalizer(train, "standard")
    z = scaler(truth)  # f32, what a prepared split holds
    outputs = (z + 0.35 * rng.standard_normal(z.shape)).astype(np.float32)
    # The reference sees exactly the values the task sees, mapped back in float64.
    scale, shift = scaler.scale.astype(np.float64), scaler.shift.astype(np.float64)
    y = z.astype(np.float64) * scale + shift
    pred = outputs.astype(np.float64) * scale + shift
    return regression(k, scaler.shift, scaler.scale), outputs, z, y, pred


@pytest.mark.parametrize("offsets", [[300.0], [1e3], [1e5], [1e5, -300.0], [0.0, 1e3, 1e5]])
def test_held_out_regression_metrics_equal_sklearn_for_large_offsets(offsets):
    task, outputs, z, y, pred = _case(offsets)
    targets = z[:, 0] if len(offsets) == 1 else z
    metrics = _run_sums(task, outputs, targets)
    assert metrics["count"] == len(y)
    assert metrics["r2"] == pytest.approx(r2_score(y, pred), rel=1e-5)
    assert metrics["mse"] == pytest.approx(mean_squared_error(y, pred), rel=1e-5)
    assert metrics["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-5)
    rmse = np.sqrt(mean_squared_error(y, pred, multioutput="raw_values")).mean()
    assert metrics["rmse"] == pytest.approx(rmse, rel=1e-5)


def test_constant_held_out_target_scores_as_sklearn():
    task, outputs, z, y, pred = _case([300.0])
    constant = np.full_like(z, z[0])
    wrong = _run_sums(task, outputs, constant[:, 0])
    exact = _run_sums(task, constant, constant[:, 0])
    y = constant.astype(np.float64)
    assert wrong["r2"] == r2_score(y, outputs.astype(np.float64)) == 0.0
    assert exact["r2"] == r2_score(y, y) == 1.0


def test_a_run_on_targets_near_1e5_reports_sklearns_r2(tmp_path):
    """Through the runner: a CSV whose target is 100000 + a small signal, fitted in closed
    form; metrics.json equals scikit-learn's metrics of scikit-learn's Ridge on the same
    split, with the targets read from the file in float64."""
    rng = np.random.default_rng(3)
    n = 400
    x = rng.standard_normal((n, 3))
    target = 1e5 + 0.2 * x[:, 0] - 0.1 * x[:, 1] + 0.15 * rng.standard_normal(n)
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": target})
    path = tmp_path / "offset.csv"
    frame.to_csv(path, index=False, float_format="%.10f")
    overrides = [f"data.path={path}", "data.label_column=y", "data.task=regression"]
    result = train(CONFIGS / "diabetes_ridge.yaml", overrides, runs_dir=tmp_path, progress=False)
    test = json.loads((result.run_dir / "metrics.json").read_text())["test"]

    config = load_config(CONFIGS / "diabetes_ridge.yaml", overrides)
    data = prepare_data(config.data)
    raw = pd.read_csv(path)["y"].to_numpy(np.float64)
    n_train = len(data.splits["train"])
    # float64 inputs: scikit-learn's Ridge would cast the targets to float32 inputs' dtype.
    inputs = {name: split.inputs.astype(np.float64) for name, split in data.splits.items()}
    ridge = Ridge(alpha=n_train * config.model.l2 / 2).fit(inputs["train"], raw[data.rows["train"]])
    expected = ridge.predict(inputs["test"])
    truth = raw[data.rows["test"]]
    assert r2_score(truth, expected) > 0.5
    assert test["r2"] == pytest.approx(r2_score(truth, expected), rel=1e-4)
    assert test["mse"] == pytest.approx(mean_squared_error(truth, expected), rel=1e-4)
    assert test["mae"] == pytest.approx(mean_absolute_error(truth, expected), rel=1e-4)
