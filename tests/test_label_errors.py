"""Confident learning flags exactly what cleanlab flags on the same out-of-fold probabilities.

The reference is ``cleanlab.filter.find_label_issues(labels, pred_probs,
filter_by="confident_learning")`` (cleanlab 2.9), the variant jaxtrain implements: the
examples off the diagonal of the confident joint, less those whose given label is their most
probable class. Compared as sets of flagged positions, on synthetic probabilities (random,
tied, an absent class, near-zero self-confidence) and on digits with flipped labels.
"""

from __future__ import annotations

import numpy as np
import pytest
from cleanlab.filter import find_label_issues
from sklearn.datasets import load_digits

from jaxtrain.data import confident_learning, find_label_errors, prepare_data, write_data_report
from jaxtrain.data.data_report import PROBABILITIES_FILE
from tests.support import CONFIGS, ROOT


def _cleanlab(labels: np.ndarray, probabilities: np.ndarray) -> set[int]:
    mask = find_label_issues(
        labels, probabilities, filter_by="confident_learning", n_jobs=1, verbose=False
    )
    return set(np.flatnonzero(mask).tolist())


def _ours(labels: np.ndarray, probabilities: np.ndarray) -> set[int]:
    return set(confident_learning(probabilities, labels).indices.tolist())


def _noisy(seed: int, n: int = 600, k: int = 4, noise: float = 0.2, concentration: float = 1.0):
    """Probabilities from a Dirichlet peaked at each example's true class; ``noise`` of the
    given labels replaced by another class."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    alpha = np.full((n, k), concentration)
    alpha[np.arange(n), truth] += 4.0
    probabilities = np.stack([rng.dirichlet(a) for a in alpha])
    labels = truth.copy()
    flip = rng.random(n) < noise
    labels[flip] = (truth[flip] + rng.integers(1, k, flip.sum())) % k
    return labels, probabilities


def test_most_probable_given_label_is_not_a_suspect():
    """The issue's example: [.5, .45, .05] labelled 0, where only class 1 reaches its
    threshold. The old rule flagged it "predicted 1"; cleanlab does not."""
    rows = [[0.95, 0.04, 0.01]] * 20 + [[0.3, 0.4, 0.3]] * 20 + [[0.05, 0.05, 0.9]] * 20
    labels = [0] * 20 + [1] * 20 + [2] * 20
    probabilities = np.array(rows + [[0.5, 0.45, 0.05]])
    labels = np.array(labels + [0])
    assert 60 not in _cleanlab(labels, probabilities)
    assert 60 not in _ours(labels, probabilities)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("k", "noise", "concentration"), [(3, 0.1, 1.0), (5, 0.4, 2.0)])
def test_flags_equal_cleanlab_on_noisy_synthetic_probabilities(seed, k, noise, concentration):
    labels, probabilities = _noisy(seed, k=k, noise=noise, concentration=concentration)
    expected = _cleanlab(labels, probabilities)
    assert expected  # the comparison is about something
    assert _ours(labels, probabilities) == expected


def test_flags_equal_cleanlab_with_ties_and_rounded_probabilities():
    labels, probabilities = _noisy(7, k=4, noise=0.3)
    probabilities = np.round(probabilities, 1)
    probabilities[:40] = 0.25  # every class tied
    assert _ours(labels, probabilities) == _cleanlab(labels, probabilities)


def test_a_class_nobody_is_labelled_with_is_never_the_confident_label():
    labels, probabilities = _noisy(3, k=4, noise=0.2)
    labels = np.where(labels == 3, 0, labels)  # class 3 absent from the labels
    probabilities[:10] = [0.0, 0.0, 0.0, 1.0]  # even certain rows do not reach it
    suspects = confident_learning(probabilities, labels)
    assert suspects.thresholds[3] == 2.0
    assert not np.isin(suspects.predicted, [3]).any()
    assert _ours(labels, probabilities) == _cleanlab(labels, probabilities)


def test_a_near_zero_self_confidence_is_clipped_like_cleanlab():
    """Class 2's labelled rows give it probability 0: its threshold is the floor 2e-6, not 0
    (with 0 every example would be confident in class 2)."""
    labels, probabilities = _noisy(5, k=3, noise=0.1)
    probabilities[labels == 2] = [0.6, 0.4, 0.0]
    probabilities[::7, 2] = 1e-7  # below the floor: not confident
    probabilities /= probabilities.sum(1, keepdims=True)
    suspects = confident_learning(probabilities, labels)
    assert suspects.thresholds[2] == np.float32(2e-6)
    assert _ours(labels, probabilities) == _cleanlab(labels, probabilities)


@pytest.fixture(scope="module")
def digits_suspects():
    digits = load_digits()
    labels = digits.target.copy()
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(labels), 270, replace=False)  # 15%
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    return labels, flipped, find_label_errors(digits.data, labels, 10, folds=5, seed=0)


def test_flags_equal_cleanlab_on_digits_out_of_fold_probabilities(digits_suspects):
    labels, flipped, suspects = digits_suspects
    probabilities = suspects.probabilities
    assert probabilities.shape == (len(labels), 10) and probabilities.dtype == np.float32
    expected = _cleanlab(labels, probabilities.astype(np.float64))
    assert set(suspects.indices.tolist()) == expected
    found = len(expected & set(flipped.tolist()))
    assert found / len(flipped) > 0.8 and found / len(expected) > 0.65  # measured .87, .70


def test_suspects_are_ranked_by_margin_and_name_the_confident_class(digits_suspects):
    labels, _, suspects = digits_suspects
    p = suspects.probabilities.astype(np.float64)
    np.testing.assert_array_equal(suspects.given, labels[suspects.indices])
    margin = p[suspects.indices, suspects.predicted] - p[suspects.indices, suspects.given]
    np.testing.assert_allclose(suspects.margin, margin, rtol=1e-6)
    assert np.all(np.diff(suspects.margin) <= 0) and np.all(suspects.margin > 0)


def test_the_run_directory_keeps_the_probabilities_that_re_derive_the_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    from jaxtrain.config import load_config

    config = load_config(
        CONFIGS / "csv_cleaning.yaml", ["data.prepare.label_errors.action=report"]
    ).data
    data = prepare_data(config)
    write_data_report(tmp_path, data.report)
    with np.load(tmp_path / PROBABILITIES_FILE, allow_pickle=False) as stored:
        rows, labels = stored["rows"], stored["labels"]
        probabilities, names = stored["probabilities"], stored["class_names"]
    assert list(names) == list(data.class_names)
    reported = data.report.step("label_errors")["rows"]
    assert reported  # the planted flips
    again = confident_learning(probabilities, labels)
    assert rows[again.indices].tolist() == reported
    assert set(rows[sorted(_cleanlab(labels, probabilities.astype(np.float64)))]) == set(reported)


@pytest.mark.parametrize(
    ("labels", "match"),
    [([0, 1, 3], r"label 3 \(position 2\) is not a class id in \[0, 3\)"), ([0, -1, 2], "-1")],
)
def test_labels_outside_the_classes_are_refused(labels, match):
    probabilities = np.full((3, 3), 1 / 3)
    with pytest.raises(ValueError, match=match):
        confident_learning(probabilities, np.array(labels))
