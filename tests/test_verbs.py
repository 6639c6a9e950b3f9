"""The sweep and federated verbs end to end through the command line (their machinery is
tested in tests/test_sweep.py and tests/test_federated.py)."""

from __future__ import annotations

import json

import pytest

from jaxtrain.cli import main
from tests.support import CONFIGS


@pytest.mark.slow
def test_federated_verb_runs_and_resumes_through_the_cli(tmp_path, capsys) -> None:
    runs = str(tmp_path / "runs")
    args = ["federated", str(CONFIGS / "digits_federated.yaml"), "federated.rounds=3"]
    assert main([*args, "federated.eval_every=1", "--runs-dir", runs, "--no-progress"]) == 0
    out = capsys.readouterr().out
    run_dir = out.split("run directory: ")[1].splitlines()[0]
    headline = json.loads(out.strip().splitlines()[-1])
    assert 0 <= headline["test_accuracy"] <= 1 and headline["epsilon"] is None
    # Extending a finished federated run is a resume with more rounds.
    assert main(["federated", "--resume", run_dir, "federated.rounds=4", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "runs").joinpath(run_dir.split("runs/")[1], "metrics.json")
                         .read_text())  # fmt: skip
    assert summary["training"]["rounds"] == 4


def test_federated_verb_refuses_a_config_without_the_section(tmp_path, capsys) -> None:
    code = main(["federated", str(CONFIGS / "breast_cancer_mlp.yaml"), "--runs-dir",
                 str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "federated" in err and not (tmp_path / "r").exists()


def test_sweep_verb_runs_a_small_population(tmp_path, capsys) -> None:
    overrides = [
        "sweep.samples=2", "sweep.halving=null", "train.epochs=1",
        "model.features=[8]", "model.dense=16",
    ]  # fmt: skip
    code = main(["sweep", str(CONFIGS / "digits_lr_sweep.yaml"), *overrides,
                 "--runs-dir", str(tmp_path / "runs"), "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    sweep_dir = out.split("sweep directory: ")[1].splitlines()[0]
    best = json.loads(out.strip().splitlines()[-1])
    assert best["best_member"] in (0, 1) and "validation_accuracy" in best
    assert (tmp_path / "runs").joinpath(sweep_dir.split("runs/")[1], "members.csv").is_file()


def test_sweep_verb_refuses_a_config_without_the_section(tmp_path, capsys) -> None:
    code = main(["sweep", str(CONFIGS / "breast_cancer_mlp.yaml"), "--runs-dir",
                 str(tmp_path / "r")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "sweep" in err and not (tmp_path / "r").exists()
