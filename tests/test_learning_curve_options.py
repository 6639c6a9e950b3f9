"""Learning curves that answer the question: a fixed step budget across fractions, several
seeds per fraction, intervals in the table, the plot and the verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from jaxtrain.config import ConfigError, load_config
from jaxtrain.learning_curve import interval, verdict

TINY = """
name: tiny_curve
data: {name: iris, batch_size: 16}
model: {name: mlp, hidden: [8]}
optimizer: {name: adamw, learning_rate: 0.01}
train: {epochs: 2, log_every: 2}
"""

T_975_2DF = 4.302652729749464  # Student's t, 97.5% quantile, 2 degrees of freedom (tables)


def test_interval_is_the_students_t_interval_of_the_mean() -> None:
    low, high = interval([1.0, 2.0, 3.0])  # mean 2, sample sd 1, n 3
    half = T_975_2DF * 1.0 / math.sqrt(3)
    assert (low, high) == pytest.approx((2 - half, 2 + half), rel=1e-9)
    assert interval([0.5]) is None and interval([]) is None
    assert interval([0.9, 1.0], bounds=(0.0, 1.0))[1] == 1.0  # an accuracy stays in [0, 1]


def _rows(before, after, before_ci=None, after_ci=None):
    return [{"validation": before, "validation_interval": before_ci},
            {"validation": after, "validation_interval": after_ci}]  # fmt: skip


def test_the_verdict_counts_a_gain_only_beyond_its_uncertainty() -> None:
    assert verdict(_rows(0.80, 0.85), "accuracy").startswith("still improving")
    assert "--seeds" in verdict(_rows(0.80, 0.85), "accuracy")  # one seed: says so
    assert verdict(_rows(0.80, 0.805), "accuracy").startswith("flat")
    overlapping = verdict(_rows(0.80, 0.85, (0.70, 0.90), (0.75, 0.95)), "accuracy")
    assert overlapping.startswith("within the noise") and "[0.7000, 0.9000]" in overlapping
    separate = verdict(_rows(0.80, 0.90, (0.78, 0.82), (0.88, 0.92)), "accuracy")
    assert separate.startswith("still improving")
    # Loss falls: a relative gain; the intervals must separate downwards.
    assert verdict(_rows(1.0, 0.5, (0.9, 1.1), (0.45, 0.55)), "loss").startswith("still")
    assert verdict(_rows(1.0, 0.5, (0.4, 1.6), (0.3, 0.7)), "loss").startswith("within")


def test_a_step_budget_trains_exactly_that_many_steps(tmp_path: Path) -> None:
    from jaxtrain.data import prepare_data
    from jaxtrain.learning_curve import _point_config, subsample
    from jaxtrain.train import train_and_evaluate

    (tmp_path / "c.yaml").write_text(TINY)
    config = load_config(tmp_path / "c.yaml")
    data = subsample(prepare_data(config.data), 0.5, seed=0)
    size = len(data.splits["train"])  # 48 rows: 3 steps an epoch
    point = _point_config(config, 1, 10, size)
    assert point.train.epochs == math.ceil(10 * 16 / size) and point.seed == config.seed + 1
    result = train_and_evaluate(point, tmp_path, data=data, progress=False, report=False,
                                total_steps=10)  # fmt: skip
    assert result.status == "finished" and result.step == 10
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert max(steps) == 10


def test_bad_options_are_refused_before_anything_runs(tmp_path: Path) -> None:
    from jaxtrain.runner import learning_curve_run

    (tmp_path / "c.yaml").write_text(TINY)
    for kwargs, message in (({"steps": 0}, "--steps"), ({"seeds": 0}, "--seeds")):
        with pytest.raises(ConfigError, match=message):
            learning_curve_run(tmp_path / "c.yaml", [], [0.5, 1.0], runs_dir=tmp_path / "r",
                               **kwargs)  # fmt: skip
    with pytest.raises(ConfigError, match="each share once"):
        learning_curve_run(tmp_path / "c.yaml", [], [1.0, 1.0], runs_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # four short runs with their analysis (~20 s)
def test_seeds_and_a_budget_give_intervals_in_the_table_plot_and_verdict(tmp_path) -> None:
    from jaxtrain.runner import learning_curve_run

    (tmp_path / "c.yaml").write_text(TINY)
    run_dir, result = learning_curve_run(
        tmp_path / "c.yaml", [], [0.5, 1.0], runs_dir=tmp_path, progress=False, steps=8, seeds=2
    )
    assert result["steps"] == 8 and result["seeds"] == 2
    for row in result["rows"]:
        assert [r["steps"] for r in row["runs"]] == [8, 8]
        values = []
        for run in row["runs"]:
            summary = json.loads((run_dir / run["run_dir"] / "metrics.json").read_text())
            assert summary["training"]["steps"] == 8
            values.append(summary["validation"]["accuracy"])
        assert row["validation"] == pytest.approx(np.mean(values))
        half = 12.706204736174707 * np.std(values, ddof=1) / math.sqrt(2)  # t(0.975, 1 df)
        expected = [max(np.mean(values) - half, 0.0), min(np.mean(values) + half, 1.0)]
        assert row["validation_interval"] == pytest.approx(expected, abs=1e-9)
    names = sorted(p.name for p in run_dir.iterdir() if p.name.startswith("fraction_"))
    assert names == ["fraction_0.5_seed_0", "fraction_0.5_seed_1", "fraction_1_seed_0",
                     "fraction_1_seed_1"]  # fmt: skip
    report = (run_dir / "report.md").read_text()
    assert "8 training steps at every fraction" in report and "95% t-interval" in report
    assert (run_dir / "learning_curve.png").stat().st_size > 1000
