"""The studies under experiments/: each one's ``--quick`` mode, checked for what it claims.

The full quick runs of the life cycle, overfitting and cost studies take a minute or more
each on 2 CPU cores and are marked slow; the default run checks the preparation report
against the planted defects, the bias study end to end, and the cost study's step timing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import scipy.stats

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    """``experiments/<name>/run.py`` as a module (each study's folder has its own run.py)."""
    path = ROOT / "experiments" / name / "run.py"
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_lifecycle_preparation_finds_exactly_the_planted_defects(tmp_path):
    lifecycle = _load("lifecycle")
    from planted import DEFECTS, write_dataset

    from jaxtrain.data import prepare_data

    truth = write_dataset(tmp_path / "tfds")
    quick = {"all": ["data.prepare.label_errors.steps=100"]}
    configs = {f: lifecycle.load_family(f, tmp_path / "tfds", quick) for f in lifecycle.FAMILIES}
    assert all(c.data == configs["linear"].data for c in configs.values())  # same splits
    data = prepare_data(configs["cnn"].data)
    assert data.input_shape == (8, 8, 1)  # images, so the CNN can take them
    prep = lifecycle.preparation(data, truth, tmp_path)
    assert prep["rows_in"] == 1797 + DEFECTS["duplicates"]
    for defect in ("missing", "duplicates"):  # exactly the planted rows, no more, no fewer
        found = prep[defect]
        assert found == {"planted": DEFECTS[defect], "found": DEFECTS[defect], "same_rows": True}
    assert prep["leakage"] == 0 and prep["conflicts"] == 0
    labels = prep["label_errors"]
    assert labels["recall"] > 0.7 and labels["precision"] > 0.5, labels
    assert sum(prep["splits"].values()) == 1797 - DEFECTS["missing"] - labels["suspects"]
    assert (tmp_path / "preparation.md").is_file() and (tmp_path / "data_report.md").is_file()


@pytest.mark.slow
def test_bias_quick_reweighing_narrows_the_parity_gap(tmp_path):
    results = _load("bias").main(["--quick", "--out", str(tmp_path)])
    summary = results["summary"]
    gap = "demographic_parity_difference"
    mitigated, unmitigated = (
        summary[s]["model"][gap]["mean"] for s in ("reweighing", "unmitigated")
    )
    assert mitigated < unmitigated
    by_group = summary["unmitigated"]["model"]["by_group_seed0"]
    assert by_group["selection_rate"][0] < by_group["selection_rate"][1]  # group 0 penalised
    for name in ("results.md", "results.json", "selection_rates.png", "gaps.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
def test_cost_step_time_and_flops_rise_with_width():
    cost_study = _load("cost")
    from jaxtrain.config import load_config
    from jaxtrain.data import prepare_data

    base = ROOT / "configs" / "digits_cnn.yaml"
    data = prepare_data(load_config(base).data)
    narrow, wide = (cost_study.step_cost(base, data, [w, w], 64, repeats=10) for w in (32, 1024))
    assert wide["params"] > 100 * narrow["params"]
    assert wide["flops_xla"] > 100 * narrow["flops_xla"]
    assert wide["step_time_s"] > 2 * narrow["step_time_s"]
    assert 0 < narrow["mfu"] < 1 and 0 < wide["mfu"] < 1


@pytest.mark.slow
def test_lifecycle_quick_runs_end_to_end(tmp_path):
    results = _load("lifecycle").main(["--quick", "--out", str(tmp_path)])
    families = {r["family"] for r in results["families"]}
    assert families == {"linear", "decision_tree", "random_forest", "mlp", "cnn"}
    winner = results["winner"]
    best = max(r["best_validation_accuracy"] for r in results["families"])
    assert winner["validation_accuracy"] == pytest.approx(best, abs=1e-4)  # retrain = member
    low, high = winner["test_accuracy_interval"]
    assert low <= winner["test_accuracy"] <= high
    for name in (
        "results.md",
        "preparation.md",
        "preparation.png",
        "comparison.png",
        "winner_run/report.md",
    ):
        assert (tmp_path / name).is_file()


@pytest.mark.slow
def test_overfitting_quick_diagnoses_and_regularisation_helps(tmp_path):
    results = _load("overfitting").main(["--quick", "--out", str(tmp_path)])
    none, both = results["variants"]["none"], results["variants"]["both"]
    assert none[0]["diagnosis"] == "overfitting"  # the smallest training set, unregularised
    assert none[0]["final_validation_loss"] > 1.05 * none[0]["best_validation_loss"]
    assert any(r["early_stopped"] for r in both)
    for plain, guarded in zip(none, both, strict=True):
        assert guarded["steps"] <= plain["steps"]
        assert guarded["final_validation_loss"] < plain["final_validation_loss"]
    assert (tmp_path / "loss_curves.png").is_file()


@pytest.mark.slow
def test_cost_quick_writes_every_family_and_the_scaling_plot(tmp_path):
    results = _load("cost").main(["--quick", "--out", str(tmp_path)])
    rows = {(r["family"], r["size"]): r for r in results["families"]}
    assert rows[("mlp", "large")]["flops_xla"] > rows[("mlp", "small")]["flops_xla"]
    assert all(r["energy_j"] > 0 for r in rows.values())
    batch = results["scaling"]["batch"]
    assert batch[-1]["examples_per_s"] > batch[0]["examples_per_s"]  # bigger batches amortise
    assert (tmp_path / "scaling.png").is_file()


@pytest.mark.slow
def test_transfer_quick_tunes_both_arms_on_validation_and_pairs_the_seeds(tmp_path):
    transfer = _load("transfer")
    arguments = ["--part", "digits", "--quick", "--seeds", "0", "1", "--out", str(tmp_path)]
    results = transfer.main([*arguments, "--settings", "scratch,full"])["digits"]
    rows = {row["key"]: row for row in results["rows"]}
    assert set(rows) == {"scratch", "full"}
    for row in rows.values():  # each arm keeps the grid rate with the best mean validation
        grid = row["grid"]
        best = max(grid, key=lambda rate: grid[rate]["validation"])
        assert grid[str(row["learning_rate"])]["validation"] == grid[best]["validation"]
        assert len(grid) == 2 and len(row["accuracy"]) == 2
    paired = results["paired"]
    full, scratch = rows["full"]["accuracy"], rows["scratch"]["accuracy"]
    expected = [f - s for f, s in zip(full, scratch, strict=True)]
    assert paired["difference"] == pytest.approx(expected)
    if len(set(expected)) > 1:  # scipy's paired t interval as the reference
        interval = scipy.stats.ttest_rel(full, scratch).confidence_interval(0.95)
        assert (paired["low"], paired["high"]) == pytest.approx(tuple(interval))
    assert "Paired difference" in (tmp_path / "results.md").read_text()
    with pytest.raises(SystemExit):
        transfer.main([*arguments, "--settings", "full,head"])  # scratch missing


@pytest.mark.slow
def test_dpsgd_quick_spends_the_target_epsilon(tmp_path):
    results = _load("dpsgd").main(["--quick", "--out", str(tmp_path)])
    summary = results["summary"]
    assert 2.9 <= summary[3.0]["epsilon"] <= 3.0  # calibrated for the run's own steps
    assert summary["none"]["epsilon"] is None  # no noise: no finite epsilon
    assert summary[3.0]["noise_multiplier"] > 0
    for name in ("results.md", "results.json", "accuracy_vs_epsilon.png"):
        assert (tmp_path / name).stat().st_size > 0
