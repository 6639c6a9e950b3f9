"""``jaxtrain compare``: exactly the keys that differ, the best metrics with their intervals,
one figure of the learning curves; runs, globs, folders of runs and sweep members."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jaxtrain.cli import main
from jaxtrain.compare import CompareError, compare, expand_paths
from jaxtrain.config import dump_config, load_config

TINY = """
name: tiny_compare
data: {name: iris, batch_size: 16}
model: {name: mlp, hidden: [8]}
optimizer: {name: adamw, learning_rate: 0.003}
train: {epochs: 1, log_every: 2}
"""


def _fake_run(folder: Path, config_file: Path, overrides: list[str], accuracy: float,
              interval: tuple[float, float] | None = None) -> Path:  # fmt: skip
    """A finished run's files, written by hand: the resolved config, metrics.json (with a
    bootstrap interval) and two logged records."""
    folder.mkdir(parents=True)
    dump_config(load_config(config_file, overrides), folder / "config.yaml")
    summary = {
        "monitor": "validation accuracy (max)",
        "best_step": 6,
        "validation": {"accuracy": accuracy - 0.01, "loss": 0.5},
        "test": {"accuracy": accuracy, "loss": 0.4, "per_class": {"f1": [1.0]}},
        "analysis": {},
    }
    if interval:
        summary["analysis"]["intervals"] = {
            "accuracy": {"value": accuracy, "low": interval[0], "high": interval[1]}
        }
    (folder / "metrics.json").write_text(json.dumps(summary))
    records = [
        {"step": 3, "split": "train", "loss": 1.0},
        {"step": 6, "split": "validation", "accuracy": accuracy - 0.01, "loss": 0.5},
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


@pytest.mark.slow  # two runs (~9 s); the fake runs below pin the same rule in the default suite
def test_compare_two_real_runs_names_exactly_the_keys_that_differ(tmp_path, capsys) -> None:
    from jaxtrain.runner import train

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    runs = tmp_path / "runs"
    first = train(config, [], runs_dir=runs, progress=False, report=False).run_dir
    second = train(
        config, ["optimizer.learning_rate=0.01", "model.hidden=[16]"], runs_dir=runs,
        progress=False, report=False,
    ).run_dir  # fmt: skip
    result = compare([first, second], tmp_path / "out")
    assert sorted(result["keys"]) == ["model.hidden", "optimizer.learning_rate"]
    header = result["table"][0]
    assert "| model.hidden | optimizer.learning_rate |" in header
    assert "test accuracy" in header and "validation accuracy" in header
    for run in (first, second):
        test = json.loads((run / "metrics.json").read_text())["test"]
        row = next(line for line in result["table"] if line.startswith(f"| {run.name} "))
        assert f"{test['accuracy']:.4f}" in row
    assert (tmp_path / "out" / "compare.png").stat().st_size > 1000
    # Through the command line, with a quoted glob over the folder of runs.
    assert main(["compare", str(runs / "tiny_compare" / "*"), "--out", str(tmp_path / "o2")]) == 0
    out = capsys.readouterr().out
    assert "model.hidden" in out and "figure: " in out


def test_intervals_are_shown_beside_the_test_metrics(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    a = _fake_run(tmp_path / "runs" / "a", config, [], 0.9, (0.85, 0.95))
    _fake_run(tmp_path / "runs" / "b", config, ["data.batch_size=32", "seed=3"], 0.8)
    result = compare([tmp_path / "runs"])  # a folder of runs: every run in it
    assert sorted(result["keys"]) == ["data.batch_size", "seed"]
    rows = {row.path: row for row in result["rows"]}
    assert rows[str(a)].intervals["accuracy"]["low"] == 0.85
    table = "\n".join(result["table"])
    assert "0.9000 [0.8500, 0.9500]" in table
    assert "| 0.8000 |" in table  # no interval: the value alone
    assert "per_class" not in table


def test_a_sweep_compares_its_members(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    dump_config(load_config(config), sweep / "config.yaml")
    members = [
        {"member": i, "settings": {"optimizer.learning_rate": lr, "seed": 0}, "best_value": v,
         "best_step": 6, "status": "finished",
         "history": [{"step": 6, "train_loss": 0.3, "validation_accuracy": v}]}
        for i, (lr, v) in enumerate([(0.001, 0.8), (0.01, 0.9)])
    ]  # fmt: skip
    summary = {"metric": "accuracy", "members": members,
               "best": {"member": 1, "test": {"accuracy": 0.88}}}  # fmt: skip
    (sweep / "members.json").write_text(json.dumps(summary))
    result = compare([sweep], tmp_path / "out")
    assert result["keys"] == ["optimizer.learning_rate"]  # seed is the same in both
    table = "\n".join(result["table"])
    assert "| member 1 | 0.01 | 6 | 0.9000 | 0.8800 | finished (best member) |" in table


def test_mistakes_are_one_line_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(CompareError, match="matches nothing"):
        expand_paths([str(tmp_path / "none*")])
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a jaxtrain run directory" in err
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    one = _fake_run(tmp_path / "one", config, [], 0.9)
    with pytest.raises(CompareError, match="compare needs two or more"):
        compare([one, one])


def test_compare_reads_files_without_importing_jax() -> None:
    import subprocess
    import sys

    code = "import sys, jaxtrain.compare; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
