"""The evidence after a run: held-out analysis, diagnosis, early stopping, regularisation
knobs, cost, learning curves. References: scikit-learn on the run's own predictions, optax's
losses, closed forms, and runs made to overfit on purpose."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from jaxtrain.cli import main as main_cli
from jaxtrain.config import AugmentConfig, load_config
from jaxtrain.learning_curve import subsample
from jaxtrain.metrics import bootstrap_ci, bootstrap_indices, roc_auc_ovr
from jaxtrain.runner import learning_curve_run, train
from jaxtrain.train import build_pieces
from jaxtrain.train.analysis import BOOTSTRAP_RESAMPLES, classification_analysis
from jaxtrain.train.augment import build_augment, flip_horizontal, random_crop
from jaxtrain.train.diagnosis import diagnose
from jaxtrain.train.tasks import classification
from tests.support import CONFIGS, small_mlp_yaml

OVERFIT = """
name: overfit
data: {name: breast_cancer, batch_size: 16, validation_fraction: 0.3, test_fraction: 0.2}
model: {name: mlp, hidden: [128, 128]}
optimizer: {name: adam, learning_rate: 0.003}
train: {epochs: 40, log_every: 5, checkpoint: {monitor: loss}}
"""


@pytest.fixture(scope="module")
def overfit_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "overfit.yaml"
    path.write_text(OVERFIT)
    return path


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    overrides = ["train.epochs=6", "model.dropout=0.0"]
    return train(CONFIGS / "breast_cancer_mlp.yaml", overrides, runs_dir=runs, progress=False)


def _test_probabilities(run):
    config = load_config(run.run_dir / "config.yaml")
    pieces = build_pieces(config)
    summary = json.loads((run.run_dir / "metrics.json").read_text())
    checkpoints = pieces.checkpoints(run.run_dir / "checkpoints", config)
    state = checkpoints.restore(summary["best_step"], pieces.state)
    checkpoints.close()
    test = pieces.data.splits["test"]
    logits = pieces.model.apply({"params": state.params}, test.inputs, train=False)
    return summary, np.asarray(jax.nn.softmax(logits)), test.labels


def test_held_out_analysis_equals_sklearn_on_the_runs_predictions(mlp_run) -> None:
    summary, probs, labels = _test_probabilities(mlp_run)
    analysis = summary["analysis"]
    assert analysis["roc_auc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]), abs=1e-6)
    assert analysis["pr_auc"] == pytest.approx(
        average_precision_score(labels, probs[:, 1]), abs=1e-6
    )
    assert analysis["log_loss"] == pytest.approx(log_loss(labels, probs), abs=1e-5)
    accuracy = analysis["intervals"]["accuracy"]
    assert accuracy["value"] == pytest.approx(summary["test"]["accuracy"], abs=1e-6)
    assert accuracy["low"] <= accuracy["value"] <= accuracy["high"] < 1.0 + 1e-9
    # A 95% interval on ~114 examples near 0.95 accuracy is a few points wide, not zero.
    assert 0.01 < accuracy["high"] - accuracy["low"] < 0.2
    assert (mlp_run.run_dir / "reliability.png").is_file()
    assert "95% bootstrap interval" in (mlp_run.run_dir / "report.md").read_text()


def test_analysis_intervals_equal_a_numpy_bootstrap_over_the_same_draws() -> None:
    """The run's intervals resample by row counts (scores sorted once); the reference draws
    the same rows by index and scores each resample with scikit-learn / NumPy."""
    rng = np.random.default_rng(3)
    for num_classes in (2, 4):
        labels = rng.integers(0, num_classes, 160)
        logits = rng.normal(size=(160, num_classes)).astype(np.float32)
        logits[np.arange(160), labels] += 1.0
        logits[:40:2] = logits[1:40:2]  # tied scores
        analysis = classification_analysis(logits, labels, seed=7)
        probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))
        key = jax.random.key(7)
        rows = np.asarray(bootstrap_indices(key, 160, BOOTSTRAP_RESAMPLES))
        correct = probs.argmax(1) == labels
        accuracies = correct[rows].mean(1)
        expected = np.quantile(accuracies, [0.025, 0.975])
        interval = analysis["intervals"]["accuracy"]
        assert [interval["low"], interval["high"]] == pytest.approx(expected, abs=1e-6)
        auc_key = jax.random.fold_in(key, 1)
        auc_rows = np.asarray(bootstrap_indices(auc_key, 160, BOOTSTRAP_RESAMPLES))
        if num_classes == 2:
            aucs = [roc_auc_score(labels[r], probs[r, 1]) for r in auc_rows]
            expected = np.quantile(aucs, [0.025, 0.975])
        else:  # the index-resampled bootstrap: a sort per resample
            _, *interval_bounds = bootstrap_ci(
                lambda y, p: roc_auc_ovr(y, p), labels, probs, key=auc_key
            )
            expected = [float(bound) for bound in interval_bounds]
        interval = analysis["intervals"]["roc_auc"]
        assert [interval["low"], interval["high"]] == pytest.approx(expected, abs=1e-6)


def test_cost_section_counts_flops_twice_and_they_agree(mlp_run) -> None:
    cost = json.loads((mlp_run.run_dir / "metrics.json").read_text())["cost"]
    flops = cost["flops_per_step"]
    # Dense MLP without dropout: XLA's count and the analytic one agree within 25%.
    assert flops["xla"] == pytest.approx(flops["analytic"], rel=0.25)
    assert cost["flops_warning"] is None
    assert cost["params"] == 30 * 64 + 64 + 64 * 64 + 64 + 64 * 2 + 2
    assert 0 < cost["mfu"] < 1
    assert cost["achieved_flops"] == pytest.approx(flops["analytic"] / cost["step_time_s"])
    assert cost["peak_memory_bytes"] > 0 and cost["energy"]["joules"] > 0


def test_diagnosis_rules_on_constructed_curves() -> None:
    def records(train, validation):
        rows = [{"step": 10 * (i + 1), "split": "train", "loss": v} for i, v in enumerate(train)]
        rows += [
            {"step": 10 * (i + 1), "split": "validation", "loss": v}
            for i, v in enumerate(validation)
        ]
        return rows

    falling = [1.0, 0.5, 0.2, 0.1, 0.05]
    overfit = diagnose(records(falling, [0.9, 0.5, 0.4, 0.5, 0.6]), baseline_loss=1.0)
    assert overfit["verdict"] == "overfitting"
    # "final" training loss: the mean of the last three log points.
    assert overfit["best_validation_step"] == 30
    assert overfit["gap"] == pytest.approx(0.6 - (0.2 + 0.1 + 0.05) / 3)
    under = diagnose(records([1.0, 0.95, 0.9, 0.9, 0.9], [0.95] * 5), baseline_loss=1.0)
    assert under["verdict"] == "underfitting"
    good = diagnose(records(falling, [0.9, 0.5, 0.3, 0.2, 0.2]), baseline_loss=1.0)
    assert good["verdict"] == "good fit"
    # A rise within 5% of the minimum is noise, not overfitting.
    noisy = diagnose(records(falling, [0.9, 0.5, 0.3, 0.2, 0.209]), baseline_loss=1.0)
    assert noisy["verdict"] == "good fit"
    # Validation best before the first training log point (step 5 < 10): still overfitting.
    early = records(falling, [0.5, 0.6, 0.7, 0.8, 1.1])
    early[len(falling)]["step"] = 5
    assert diagnose(early, baseline_loss=1.0)["verdict"] == "overfitting"
    # Both losses rising is unstable optimisation, and the evidence says what happened.
    unstable = diagnose(records([0.2, 0.15, 0.3, 0.4, 0.5], [0.3, 0.2, 0.5, 0.6, 0.7]), 1.0)
    assert unstable["verdict"] == "good fit"
    assert "training loss did not fall" in unstable["evidence"]


def test_a_run_made_to_overfit_is_diagnosed_and_early_stopping_restores_the_best(
    overfit_yaml, tmp_path
) -> None:
    full = train(overfit_yaml, runs_dir=tmp_path, progress=False)
    full_summary = json.loads((full.run_dir / "metrics.json").read_text())
    assert full_summary["diagnosis"]["verdict"] == "overfitting"
    assert full.step == full.total_steps

    stopped = train(overfit_yaml, ["train.early_stopping={patience: 3}"], runs_dir=tmp_path,
                    progress=False, report=False)  # fmt: skip
    summary = json.loads((stopped.run_dir / "metrics.json").read_text())
    early = summary["training"]["early_stopped"]
    assert stopped.status == "finished" and stopped.step == early["step"] < stopped.total_steps
    assert summary["best_step"] == early["best_step"] < early["step"]
    # The same seeds: identical up to the stop, so the best validation loss is the full run's.
    assert early["best"] == pytest.approx(full_summary["validation"]["loss"], abs=1e-6)
    assert summary["test"]["loss"] == pytest.approx(full_summary["test"]["loss"], abs=1e-6)


def test_label_smoothing_changes_the_training_loss_only() -> None:
    logits = jax.random.normal(jax.random.key(0), (8, 5))
    labels = jnp.arange(8) % 5
    task = classification(5, label_smoothing=0.1)
    reference = optax.softmax_cross_entropy(
        logits, optax.smooth_labels(jax.nn.one_hot(labels, 5), 0.1)
    )
    np.testing.assert_allclose(task.loss(logits, labels), reference, rtol=1e-6)
    sums = task.eval_sums(logits, labels, jnp.ones(8, bool))
    plain = optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
    assert float(sums["loss_sum"]) == pytest.approx(float(plain), rel=1e-6)


def test_augmentations_are_what_they_say() -> None:
    images = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
    flipped = flip_horizontal(images, jax.random.key(1))
    for original, out in zip(np.asarray(images), np.asarray(flipped), strict=True):
        assert np.array_equal(out, original) or np.array_equal(out, original[:, ::-1])
    np.testing.assert_array_equal(random_crop(images, jax.random.key(2), 0), images)
    cropped = np.asarray(random_crop(images, jax.random.key(2), 2))
    assert cropped.shape == images.shape
    # A crop is a shift: every crop is a window of the zero-padded image.
    padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
    for i in range(16):
        windows = [padded[i, r : r + 8, c : c + 8] for r in range(5) for c in range(5)]
        assert any(np.array_equal(cropped[i], w) for w in windows)
    noise = build_augment(AugmentConfig(noise_std=0.5))
    drawn = np.asarray(noise(jnp.zeros((4000,)), jax.random.key(3)))
    assert drawn.std() == pytest.approx(0.5, rel=0.05)
    assert build_augment(AugmentConfig()) is None


def test_augmented_training_is_deterministic_and_different(tmp_path) -> None:
    from jaxtrain.data import train_batches
    from jaxtrain.train import make_train_step

    config_path = tmp_path / "small.yaml"
    config_path.write_text(small_mlp_yaml())  # digits images [8, 8, 1] into a small MLP
    config = load_config(
        config_path,
        [
            "train.augment={crop_padding: 1, flip_horizontal: true, noise_std: 0.1}",
            "optimizer.schedule={name: constant}",  # no warmup: the first step moves
        ],
    )
    pieces = build_pieces(config)
    batch = next(iter(train_batches(pieces.data.splits["train"], 32, 1, 0)))
    augment = build_augment(config.train.augment)
    augmented = jax.jit(make_train_step(pieces.model, pieces.tx, pieces.task, None, augment))
    plain = jax.jit(make_train_step(pieces.model, pieces.tx, pieces.task))
    first, _ = augmented(pieces.state, batch)
    second, _ = augmented(pieces.state, batch)
    unaugmented, _ = plain(pieces.state, batch)
    later, _ = augmented(first, batch)  # the next step draws a different augmentation
    leaves = lambda state: jax.tree.leaves(state.params)  # noqa: E731
    assert all(np.array_equal(a, b) for a, b in zip(leaves(first), leaves(second), strict=True))
    assert not all(
        np.array_equal(a, b) for a, b in zip(leaves(first), leaves(unaugmented), strict=True)
    )
    key = jax.random.fold_in(jax.random.fold_in(pieces.state.rng, 0), 1)
    again = augment(jnp.asarray(batch["inputs"]), key)
    assert not np.array_equal(np.asarray(again), batch["inputs"])
    assert np.isfinite(np.asarray(jax.tree.leaves(later.params)[0])).all()


def test_learning_curve_command(tmp_path) -> None:
    run_dir, result = learning_curve_run(
        CONFIGS / "breast_cancer_mlp.yaml",
        ["train.epochs=4", "train.eval_every=20"],
        [0.25, 1.0],
        runs_dir=tmp_path,
        progress=False,
    )
    rows = result["rows"]
    assert [row["train_examples"] for row in rows] == [round(0.25 * 370), 370]
    assert (run_dir / "learning_curve.png").is_file()
    assert (run_dir / "fraction_0.25" / "metrics.json").is_file()
    assert "Verdict" in (run_dir / "report.md").read_text()


def test_subsample_keeps_class_proportions_and_held_out_splits() -> None:
    config = load_config(CONFIGS / "digits_cnn.yaml")
    from jaxtrain.data import prepare_data

    data = prepare_data(config.data)
    half = subsample(data, 0.5, seed=0)
    full_counts = np.bincount(data.splits["train"].labels, minlength=10)
    half_counts = np.bincount(half.splits["train"].labels, minlength=10)
    assert np.all(np.abs(half_counts - full_counts / 2) <= 1)
    assert half.splits["test"] is data.splits["test"]
    assert math.isclose(len(half.splits["train"]), len(data.splits["train"]) / 2, abs_tol=5)


def _poisoned(config_path, batch_index: int, times: int | None = None):
    """A replacement for the pipeline's gather that makes training batch ``batch_index`` NaN
    (recognised by its example indices, since grain may read batches ahead of use), every
    time or only the first ``times`` times it is read."""
    import grain

    from jaxtrain.data import pipeline, prepare_data

    config = load_config(config_path)
    n = len(prepare_data(config.data).splits["train"])
    target = (
        grain.MapDataset.range(n)
        .shuffle(seed=config.data.seed)
        .repeat(config.train.epochs)
        .batch(config.data.batch_size, drop_remainder=True, batch_fn=np.asarray)[batch_index]
    )
    original = pipeline._Gather.__call__

    seen = {"n": 0}

    def gather(self, indices):
        batch = original(self, indices)
        if np.array_equal(indices, target):
            seen["n"] += 1
            if times is None or seen["n"] <= times:
                batch = {**batch, "inputs": np.full_like(batch["inputs"], np.nan)}
        return batch

    return gather


def test_a_nan_batch_stops_the_run_naming_the_step(tmp_path, monkeypatch) -> None:
    from jaxtrain.data import pipeline
    from jaxtrain.train.loop import NonFiniteError

    config = tmp_path / "small.yaml"
    config.write_text(small_mlp_yaml())
    monkeypatch.setattr(pipeline._Gather, "__call__", _poisoned(config, 6))
    with pytest.raises(NonFiniteError, match="at step 7 .batch 6 of the training stream"):
        train(config, ["train.eval_every=1000"], runs_dir=tmp_path, progress=False)


def test_skip_policy_steps_over_a_nan_batch_with_the_state_intact(tmp_path, monkeypatch) -> None:
    from jaxtrain.data import pipeline

    config = tmp_path / "small.yaml"
    config.write_text(small_mlp_yaml())
    monkeypatch.setattr(pipeline._Gather, "__call__", _poisoned(config, 6))
    result = train(config, ["train.nonfinite=skip"], runs_dir=tmp_path, progress=False)
    summary = json.loads((result.run_dir / "metrics.json").read_text())
    assert summary["training"]["skipped_nonfinite_steps"] == 1
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(result.state.params))
    assert summary["test"]["accuracy"] > 0.8


@pytest.fixture(scope="module")
def fairness_runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("fair")
    return {
        mitigation: train(
            CONFIGS / "credit_fairness.yaml",
            [f"fairness.mitigation={mitigation}", "train.epochs=5"],
            runs_dir=runs,
            progress=False,
        )
        for mitigation in ("none", "reweighing")
    }


def test_fairness_audit_equals_fairlearn_on_the_runs_predictions(fairness_runs) -> None:
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        selection_rate,
    )

    run = fairness_runs["none"]
    summary, probs, labels = _test_probabilities(run)
    config = load_config(run.run_dir / "config.yaml")
    groups = build_pieces(config).groups["test"]
    predicted = probs.argmax(1)
    audit = summary["fairness"]["model"]
    kwargs = {"sensitive_features": groups}
    assert audit["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(labels, predicted, **kwargs), abs=1e-6
    )
    assert audit["demographic_parity_ratio"] == pytest.approx(
        demographic_parity_ratio(labels, predicted, **kwargs), abs=1e-6
    )
    assert audit["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(labels, predicted, **kwargs), abs=1e-6
    )
    frame = MetricFrame(metrics=selection_rate, y_true=labels, y_pred=predicted, **kwargs)
    np.testing.assert_allclose(audit["by_group"]["selection_rate"], frame.by_group.to_numpy())
    assert "Fairness (test split)" in (run.run_dir / "report.md").read_text()


def test_reweighing_lowers_the_demographic_parity_difference(fairness_runs) -> None:
    gaps = {
        name: json.loads((run.run_dir / "metrics.json").read_text())["fairness"]["model"][
            "demographic_parity_difference"
        ]
        for name, run in fairness_runs.items()
    }
    assert gaps["reweighing"] < 0.75 * gaps["none"], gaps


def test_a_missing_sensitive_feature_is_a_one_line_error(tmp_path, capsys) -> None:
    code = main_cli(
        ["train", str(CONFIGS / "credit_fairness.yaml"), "fairness.sensitive_feature=colour",
         "--runs-dir", str(tmp_path / "r")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "fairness.sensitive_feature" in err and "colour" in err
    assert not (tmp_path / "r").exists()


def test_reduce_on_plateau_scales_the_learning_rate_when_validation_stalls(
    overfit_yaml, tmp_path
) -> None:
    overrides = ["train.reduce_on_plateau={factor: 0.5, patience: 2}", "train.epochs=12"]
    run = train(overfit_yaml, overrides, runs_dir=tmp_path, progress=False)
    summary = json.loads((run.run_dir / "metrics.json").read_text())
    reductions = summary["training"]["learning_rate_reductions"]
    assert reductions, "the overfitting run's validation loss stalls, so the rate must drop"
    peaks = [r["peak_learning_rate"] for r in reductions]
    assert peaks[0] == pytest.approx(0.003 * 0.5, rel=1e-6)
    assert all(
        b == pytest.approx(a * 0.5, rel=1e-6) for a, b in zip(peaks[:-1], peaks[1:], strict=True)
    )
    final = float(run.state.opt_state.hyperparams["peak_learning_rate"])
    assert final == pytest.approx(peaks[-1], rel=1e-6)
    logged = [
        json.loads(line)
        for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()
        if '"train"' in line
    ]
    # Constant schedule: the logged rate is the peak, and it falls exactly where reduced.
    assert logged[-1]["learning_rate"] == pytest.approx(peaks[-1], rel=1e-5)


def test_rollback_returns_to_the_last_checkpoint_with_half_the_learning_rate(
    tmp_path, monkeypatch
) -> None:
    from jaxtrain.data import pipeline

    config = tmp_path / "small.yaml"
    config.write_text(small_mlp_yaml())  # eval (and checkpoint) every 20 steps, log every 5
    monkeypatch.setattr(pipeline._Gather, "__call__", _poisoned(config, 26, times=1))
    result = train(config, ["train.nonfinite=rollback"], runs_dir=tmp_path, progress=False)
    summary = json.loads((result.run_dir / "metrics.json").read_text())
    assert summary["training"]["rollbacks"] == [
        {"at_step": 30, "first_bad_step": 27, "resumed_at": 20}
    ]
    assert summary["training"]["skipped_nonfinite_steps"] == 0
    peak = float(result.state.opt_state.hyperparams["peak_learning_rate"])
    assert peak == pytest.approx(0.003 * 0.5, rel=1e-6)
    steps = [
        json.loads(line)["step"]
        for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
        if '"train"' in line
    ]
    assert steps == sorted(set(steps))  # the rolled-back log lines were rewritten, not doubled


def test_rollback_gives_up_when_the_fault_persists(tmp_path, monkeypatch) -> None:
    from jaxtrain.data import pipeline
    from jaxtrain.train.loop import NonFiniteError

    config = tmp_path / "small.yaml"
    config.write_text(small_mlp_yaml())
    monkeypatch.setattr(pipeline._Gather, "__call__", _poisoned(config, 26))
    with pytest.raises(NonFiniteError, match="after 3 rollbacks"):
        train(config, ["train.nonfinite=rollback"], runs_dir=tmp_path, progress=False)


def test_balanced_class_weights_reach_the_loss_as_per_example_weights() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    from jaxtrain.data import train_batches
    from jaxtrain.train import make_train_step

    config = load_config(
        CONFIGS / "breast_cancer_mlp.yaml",
        ["data.prepare={class_weights: balanced}", "model.dropout=0.0"],
    )
    pieces = build_pieces(config)
    train_split = pieces.data.splits["train"]
    expected = compute_class_weight("balanced", classes=np.arange(2), y=train_split.labels)
    np.testing.assert_allclose(train_split.weights, expected[train_split.labels], rtol=1e-6)
    batch = next(iter(train_batches(train_split, 32, 1, 0)))
    assert "weights" in batch
    step = jax.jit(make_train_step(pieces.model, pieces.tx, pieces.task))
    _, metrics = step(pieces.state, batch)
    logits = pieces.model.apply({"params": pieces.state.params}, batch["inputs"], train=False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
    # Without dropout the training pass equals the evaluation pass: loss = mean(w * loss).
    assert float(metrics["loss"]) == pytest.approx(
        float(np.mean(batch["weights"] * np.asarray(losses))), rel=1e-5
    )
    assert float(metrics["loss"]) != pytest.approx(float(np.mean(losses)), rel=1e-5)
