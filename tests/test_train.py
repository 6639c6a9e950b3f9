"""End to end: a run directory's contents, evaluation, checkpoints and exact resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from jaxtrain.cli import main
from jaxtrain.config import dump_config, load_config
from jaxtrain.data import prepare_data
from jaxtrain.runner import evaluate_run, new_run_dir, train
from jaxtrain.train import build_pieces, stop_at_step, train_and_evaluate
from tests.support import CONFIGS, ROOT, small_mlp_yaml


def _config(tmp_path: Path, overrides=()):
    path = tmp_path / "small.yaml"
    path.write_text(small_mlp_yaml())
    return path, load_config(path, list(overrides))


def _as_numbers(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


def _leaves_equal(a, b) -> bool:
    """Bitwise equality of two train states (params, optimizer state, step, rng)."""
    return all(
        np.array_equal(_as_numbers(x), _as_numbers(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("finished")
    path, _ = _config(tmp)
    result = train(path, runs_dir=tmp / "runs", progress=False)
    return result


def test_run_directory_holds_every_output(finished_run) -> None:
    run_dir = finished_run.run_dir
    assert run_dir.parent.name == "small_mlp" and finished_run.status == "finished"
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "metrics.json",
        "learning_curves.png",
        "confusion_matrix.png",
        "report.md",
        "environment.json",
        "data_stats.json",
    ):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["optimizer"]["b1"] == 0.9  # defaults are resolved into the file
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    splits = {r["split"] for r in records}
    assert splits == {"train", "validation"}
    steps = [r["step"] for r in records if r["split"] == "validation"]
    assert steps == [20, 40, 60, 73]  # eval_every=20, final step = 2 epochs * 1168 // 32
    report = (run_dir / "report.md").read_text()
    assert "![learning curves](learning_curves.png)" in report
    assert "confusion_matrix.png" in report


def test_test_metrics_equal_sklearn_on_the_best_checkpoint(finished_run) -> None:
    run_dir = finished_run.run_dir
    summary = json.loads((run_dir / "metrics.json").read_text())
    config = load_config(run_dir / "config.yaml")
    pieces = build_pieces(config)
    checkpoints = pieces.checkpoints(run_dir / "checkpoints", config)
    best = checkpoints.best_step()
    assert best == summary["best_step"]
    state = checkpoints.restore(best, pieces.state)
    checkpoints.close()
    test = pieces.data.splits["test"]
    logits = pieces.model.apply({"params": state.params}, test.inputs, train=False)
    predictions = np.asarray(logits.argmax(-1))
    reported = summary["test"]
    assert reported["accuracy"] == accuracy_score(test.labels, predictions)
    assert reported["f1_macro"] == f1_score(test.labels, predictions, average="macro")
    precision, recall, f1, _ = precision_recall_fscore_support(
        test.labels, predictions, average="weighted"
    )
    assert (reported["precision_weighted"], reported["recall_weighted"]) == (precision, recall)
    validation_accuracies = [
        json.loads(line)["accuracy"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "validation"
    ]
    assert summary["validation"]["accuracy"] == max(validation_accuracies)


def test_checkpoints_keep_latest_and_best(finished_run) -> None:
    run_dir = finished_run.run_dir
    summary = json.loads((run_dir / "metrics.json").read_text())
    kept = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    latest_two = [60, 73]
    assert set(latest_two) <= set(kept)
    assert summary["best_step"] in kept
    assert set(kept) == set(latest_two) | {summary["best_step"]}


def test_eval_verb_reproduces_the_test_metrics(finished_run, capsys) -> None:
    run_dir = finished_run.run_dir
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert main(["eval", str(run_dir)]) == 0
    evaluated = json.loads((run_dir / "eval.json").read_text())
    assert evaluated["step"] == summary["best_step"]
    assert evaluated["test"]["accuracy"] == summary["test"]["accuracy"]
    assert evaluated["test"]["confusion_matrix"] == summary["test"]["confusion_matrix"]
    assert "test_accuracy" in capsys.readouterr().out


def test_eval_of_a_non_run_directory_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a jaxtrain run directory" in capsys.readouterr().err


def test_same_config_and_seed_give_identical_results(tmp_path: Path) -> None:
    _, config = _config(tmp_path, ["train.epochs=1"])
    data = prepare_data(config.data)
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        runs.append(
            train_and_evaluate(config, tmp_path / name, data=data, progress=False, report=False)
        )
    assert _leaves_equal(runs[0].state, runs[1].state)
    assert runs[0].test == runs[1].test


# both mid-epoch (36.5 steps per epoch)
@pytest.mark.parametrize("stop_at", [13, pytest.param(50, marks=pytest.mark.slow)])
def test_resume_is_bitwise_identical(tmp_path: Path, stop_at: int) -> None:
    _, config = _config(tmp_path)
    data = prepare_data(config.data)
    (tmp_path / "straight").mkdir()
    straight = train_and_evaluate(
        config, tmp_path / "straight", data=data, progress=False, report=False
    )

    run_dir = new_run_dir(tmp_path / "runs", config.name)
    dump_config(config, run_dir / "config.yaml")
    stopped = train_and_evaluate(
        config, run_dir, data=data, callbacks=(stop_at_step(stop_at),), progress=False
    )
    assert (stopped.status, stopped.step) == ("stopped", stop_at)
    assert not (run_dir / "metrics.json").exists()
    resumed = train(None, resume=run_dir, progress=False, report=False)
    assert resumed.status == "finished" and resumed.step == straight.step
    assert _leaves_equal(resumed.state, straight.state)
    assert resumed.test == straight.test
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps)), "no duplicated log lines after resume"


def test_sigterm_saves_a_checkpoint_and_resume_finishes_exactly(tmp_path: Path) -> None:
    overrides = ["train.epochs=6", "train.eval_every=50"]
    path, config = _config(tmp_path, overrides)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "jaxtrain",
        "train",
        str(path),
        *overrides,
        "--runs-dir",
        str(tmp_path / "runs"),
        "--no-progress",
    ]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    jsonl = None
    while time.time() < deadline:
        found = list((tmp_path / "runs").glob("small_mlp/*/metrics.jsonl"))
        if found and found[0].stat().st_size > 0:
            jsonl = found[0]
            break
        time.sleep(0.05)
    assert jsonl is not None, "training did not start"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    assert "stopped at step" in output and "--resume" in output, output
    run_dir = jsonl.parent
    assert not (run_dir / "metrics.json").exists()
    resumed = train(None, resume=run_dir, progress=False, report=False)
    (tmp_path / "straight").mkdir()
    straight = train_and_evaluate(config, tmp_path / "straight", progress=False, report=False)
    assert _leaves_equal(resumed.state, straight.state)


@pytest.mark.parametrize(
    ("config_name", "threshold"),
    [
        pytest.param("digits_cnn.yaml", 0.97, marks=pytest.mark.slow),
        ("breast_cancer_mlp.yaml", 0.95),
    ],
)
def test_default_experiments_reach_their_accuracy(
    tmp_path: Path, config_name: str, threshold: float
) -> None:
    result = train(CONFIGS / config_name, runs_dir=tmp_path, progress=False)
    assert result.test["accuracy"] >= threshold


def test_resume_refuses_to_change_settings_the_checkpoint_depends_on(finished_run, capsys) -> None:
    run_dir = finished_run.run_dir
    before = (run_dir / "config.yaml").read_text()
    code = main(["train", "--resume", str(run_dir), "model.hidden=[8]", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "model.hidden: only train.*, distributed.* and tracking.* settings can change" in err
    assert (run_dir / "config.yaml").read_text() == before


def test_resume_without_any_checkpoint_starts_over_cleanly(tmp_path: Path) -> None:
    # A run killed before its first checkpoint left only log lines; resuming redoes them.
    _, config = _config(tmp_path, ["train.epochs=1"])
    run_dir = new_run_dir(tmp_path / "runs", config.name)
    dump_config(config, run_dir / "config.yaml")
    (run_dir / "metrics.jsonl").write_text('{"step": 5, "split": "train", "loss": 9.0}\n')
    resumed = train(None, resume=run_dir, progress=False, report=False)
    (tmp_path / "straight").mkdir()
    straight = train_and_evaluate(config, tmp_path / "straight", progress=False, report=False)
    assert _leaves_equal(resumed.state, straight.state)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r.get("loss") != 9.0 for r in records)
    assert [r["step"] for r in records if r["split"] == "train"][0] == 5


def test_eval_reuses_the_normalisation_stored_with_the_run(finished_run, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(finished_run.run_dir, copy)
    stats = json.loads((copy / "data_stats.json").read_text())
    original = evaluate_run(copy)["test"]["loss"]
    stats["inputs"]["shift"] = [s + 3.0 for s in stats["inputs"]["shift"]]  # wrong on purpose
    (copy / "data_stats.json").write_text(json.dumps(stats))
    assert evaluate_run(copy)["test"]["loss"] != original
