"""Ranking, probabilistic and regression metrics equal scikit-learn's; the bootstrap is exact.

Tolerance: scores computed in float32 by JAX are compared with scikit-learn's float64 at
rtol=1e-6, atol=1e-6 (rounding only); counts, curves built from counts (ROC / PR curves,
whose rates are divided in float64 on the host) and thresholds are compared EXACTLY. Inputs
are float32 so that both sides see the same scores (and the same ties). The bootstrap is
compared exactly with a NumPy loop over the same resample indices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.metrics as skm
from sklearn.calibration import calibration_curve

from jaxtrain.metrics.bootstrap import bootstrap_ci, bootstrap_ci_weighted, bootstrap_indices
from jaxtrain.metrics.probabilistic import (
    calibration_bins,
    expected_calibration_error,
    log_loss,
    reliability_diagram,
    top_k_accuracy,
)
from jaxtrain.metrics.ranking import (
    average_precision,
    precision_recall_curve,
    roc_auc,
    roc_auc_ovr,
    roc_curve,
)
from jaxtrain.metrics.regression import mae, mse, r2, rmse

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.UndefinedMetricWarning", "ignore::UserWarning"
)
TOL = {"rtol": 1e-6, "atol": 1e-6}


def _close(ours, ref):
    np.testing.assert_allclose(np.asarray(ours, np.float64), ref, **TOL)


# ---------------------------------------------------------------------------------------------
# binary inputs: random, heavy ties, perfect, reversed, constant scores


def _binary_cases():
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 2, n)
    cases = {
        "random": (y, rng.standard_normal(n)),
        "ties": (y, rng.integers(0, 5, n).astype(float)),
        "perfect": (y, y + 0.1 * rng.random(n)),
        "reversed": (y, -y.astype(float)),
        "constant": (y, np.full(n, 0.3)),
        "probabilities": (y, rng.random(n)),
        "imbalanced": ((rng.random(n) < 0.05).astype(int), rng.random(n).round(2)),
        "two_points": (np.array([0, 1]), np.array([0.5, 0.5])),
    }
    return {k: (yy, s.astype(np.float32)) for k, (yy, s) in cases.items()}


BINARY = _binary_cases()


@pytest.mark.parametrize("case", list(BINARY))
def test_binary_ranking_metrics_equal_sklearn(case):
    y, s = BINARY[case]
    _close(jax.jit(roc_auc)(y, s), skm.roc_auc_score(y, s))
    _close(jax.jit(average_precision)(y, s), skm.average_precision_score(y, s))
    # Curves: exact.
    for ours, ref in zip(roc_curve(y, s), skm.roc_curve(y, s), strict=True):
        np.testing.assert_array_equal(ours, ref)
    for ours, ref in zip(
        roc_curve(y, s, drop_intermediate=False),
        skm.roc_curve(y, s, drop_intermediate=False),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, ref)
    for drop in (False, True):
        ours = precision_recall_curve(y, s, drop_intermediate=drop)
        ref = skm.precision_recall_curve(y, s, drop_intermediate=drop)
        for a, b in zip(ours, ref, strict=True):
            np.testing.assert_array_equal(a, b)


def test_ranking_degenerate_labels():
    s = np.linspace(0, 1, 10, dtype=np.float32)
    assert np.isnan(skm.roc_auc_score(np.ones(10, int), s))  # one class only: NaN, a warning
    assert np.isnan(roc_auc(np.ones(10, int), s))
    assert np.isnan(jax.jit(roc_auc)(np.ones(10, int), s))
    no_positive = np.zeros(10, int)
    assert float(average_precision(no_positive, s)) == skm.average_precision_score(no_positive, s)
    for a, b in zip(
        precision_recall_curve(no_positive, s),
        skm.precision_recall_curve(no_positive, s),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(roc_curve(no_positive, s), skm.roc_curve(no_positive, s), strict=True):
        np.testing.assert_array_equal(a, b)


def _multiclass(seed, n=400, k=5, ties=False):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])  # every class present
    probs = rng.dirichlet(np.ones(k), n)
    if ties:
        probs = np.round(probs, 1)
        probs /= probs.sum(1, keepdims=True)
    return y, probs.astype(np.float32)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_ovr_ranking_metrics_equal_sklearn(ties, average):
    y, probs = _multiclass(1, ties=ties)
    ovr = jax.jit(roc_auc_ovr, static_argnames="average")
    ap = jax.jit(average_precision, static_argnames="average")
    _close(
        ovr(y, probs, average=average),
        skm.roc_auc_score(y, probs, multi_class="ovr", average=average),
    )
    _close(ap(y, probs, average=average), skm.average_precision_score(y, probs, average=average))


def test_ovr_with_absent_class_is_nan():
    y, probs = _multiclass(2, k=4)
    y = np.where(y == 3, 0, y)
    assert np.isnan(skm.roc_auc_score(y, probs, multi_class="ovr", labels=range(4)))
    assert np.isnan(roc_auc_ovr(y, probs))
    assert np.isnan(jax.jit(roc_auc_ovr)(y, probs))


# ---------------------------------------------------------------------------------------------
# probabilistic


@pytest.mark.parametrize("seed", [0, 1])
def test_log_loss_equals_sklearn(seed):
    y, probs = _multiclass(seed, k=4)
    probs[:5] = np.eye(4, dtype=np.float32)[(y[:5] + 1) % 4]  # confident mistakes: clipped
    probs[5:10] = np.eye(4, dtype=np.float32)[y[5:10]]  # confident hits
    _close(jax.jit(log_loss)(y, probs), skm.log_loss(y, probs, labels=range(4)))
    # Unnormalised rows are not renormalised (scikit-learn only warns).
    _close(log_loss(y, 0.5 * probs), skm.log_loss(y, 0.5 * probs, labels=range(4)))
    # Binary, as probabilities of class 1.
    yb = (y > 1).astype(int)
    p1 = probs[:, 0]
    _close(log_loss(yb, p1), skm.log_loss(yb, p1))
    _close(log_loss(yb, np.stack([1 - p1, p1], 1)), skm.log_loss(yb, np.stack([1 - p1, p1], 1)))


@pytest.mark.parametrize("ties", [False, True])
def test_top_k_accuracy_equals_sklearn(ties):
    y, probs = _multiclass(3, k=6, ties=ties)
    if ties:
        probs[:50] = 0.25  # all classes tied: sklearn ranks the larger index first
    fn = jax.jit(top_k_accuracy, static_argnames="k")
    for k in range(1, 7):
        expected = skm.top_k_accuracy_score(y, probs, k=k, labels=range(6))
        _close(fn(y, probs, k=k), expected)


def test_top_k_accuracy_binary_scores_equal_sklearn():
    for y, s in BINARY.values():
        for k in (1, 2):
            _close(top_k_accuracy(y, s, k), skm.top_k_accuracy_score(y, s, k=k, labels=[0, 1]))
        logits = (s - 0.5) * 4  # outside [0, 1]: threshold 0
        _close(top_k_accuracy(y, logits, 1), skm.top_k_accuracy_score(y, logits, k=1))


def _numpy_calibration(y, probs, n_bins):
    """Reference: top-label confidence, right-closed equal-width bins, float64."""
    probs = probs.astype(np.float64)
    confidence, correct = probs.max(1), (probs.argmax(1) == y).astype(float)
    bins = np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], confidence)
    count = np.bincount(bins, minlength=n_bins)
    acc = np.bincount(bins, correct, n_bins) / np.maximum(count, 1)
    conf = np.bincount(bins, confidence, n_bins) / np.maximum(count, 1)
    return acc, conf, count, np.sum(count / len(y) * np.abs(acc - conf))


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_calibration_top_label_equals_numpy_reference(n_bins):
    y, probs = _multiclass(4, k=3)
    bins = jax.jit(calibration_bins, static_argnames="n_bins")(y, probs, n_bins=n_bins)
    acc, conf, count, ece = _numpy_calibration(y, probs, n_bins)
    np.testing.assert_array_equal(bins["count"], count)
    _close(bins["accuracy"], acc)
    _close(bins["confidence"], conf)
    _close(expected_calibration_error(y, probs, n_bins), ece)
    # Perfectly calibrated in expectation -> small; confident and always right -> 0.
    onehot = np.eye(3, dtype=np.float32)[y]
    assert float(expected_calibration_error(y, onehot)) == 0.0


def test_calibration_binary_equals_sklearn_calibration_curve():
    rng = np.random.default_rng(5)
    p = rng.random(500).astype(np.float32)
    p[:40] = np.linspace(0, 1, 11, dtype=np.float32)[rng.integers(0, 11, 40)]  # on the edges
    y = (rng.random(500) < p).astype(int)
    for n_bins in (5, 10, 15):
        bins = calibration_bins(y, p, n_bins)
        prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
        filled = np.asarray(bins["count"]) > 0
        _close(np.asarray(bins["accuracy"])[filled], prob_true)
        _close(np.asarray(bins["confidence"])[filled], prob_pred)


def test_reliability_diagram_writes_png(tmp_path):
    y, probs = _multiclass(6, k=3)
    path = reliability_diagram(y, probs, 10, tmp_path / "plots" / "reliability.png")
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# regression


def _regression_cases():
    rng = np.random.default_rng(7)
    y = rng.standard_normal((200, 3)).astype(np.float32)
    pred = (y + 0.5 * rng.standard_normal((200, 3))).astype(np.float32)
    constant = y.copy()
    constant[:, 1] = 2.0  # a constant target, predicted wrongly
    exact = pred.copy()
    exact[:, 1] = constant[:, 1]  # ... and one predicted exactly
    return {
        "multi": (y, pred),
        "single": (y[:, 0], pred[:, 0]),
        "constant_wrong": (constant, pred),
        "constant_exact": (constant, exact),
        "perfect": (y, y),
    }


REGRESSION = _regression_cases()
PAIRS = [
    (mse, skm.mean_squared_error),
    (rmse, skm.root_mean_squared_error),
    (mae, skm.mean_absolute_error),
    (r2, skm.r2_score),
]


@pytest.mark.parametrize("case", list(REGRESSION))
def test_regression_metrics_equal_sklearn(case):
    y, pred = REGRESSION[case]
    weight = np.random.default_rng(8).random(len(y)).astype(np.float32)
    # The reference sees float64 copies: scikit-learn keeps float32 inputs float32, whose
    # weighted mean of a constant column is off by an ulp (its r2 is then -1e14, not 0).
    y64, pred64, weight64 = np.float64(y), np.float64(pred), np.float64(weight)
    for ours, ref in PAIRS:
        for multioutput in ("uniform_average", "raw_values"):
            fn = jax.jit(ours, static_argnames="multioutput") if case == "multi" else ours
            _close(fn(y, pred, multioutput=multioutput), ref(y64, pred64, multioutput=multioutput))
            _close(
                fn(y, pred, weight, multioutput=multioutput),
                ref(y64, pred64, sample_weight=weight64, multioutput=multioutput),
            )
    _close(
        r2(y, pred, multioutput="variance_weighted"),
        skm.r2_score(y64, pred64, multioutput="variance_weighted"),
    )


# ---------------------------------------------------------------------------------------------
# bootstrap


def _accuracy(y, p):
    return jnp.mean((y == p).astype(jnp.float32))


def _classification_data(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    p = np.where(rng.random(n) < 0.7, y, rng.integers(0, 3, n))
    return y, p


def test_bootstrap_equals_numpy_loop_over_same_indices():
    y, p = _classification_data(300)
    key = jax.random.key(42)
    ci = jax.jit(bootstrap_ci, static_argnums=0, static_argnames=("n_resamples", "confidence"))
    point, low, high = ci(_accuracy, y, p, key=key, n_resamples=500, confidence=0.9)
    assert float(point) == float(_accuracy(y, p))
    assert low <= point <= high

    indices = np.asarray(bootstrap_indices(key, 300, 500))
    metric = jax.jit(_accuracy)
    values = np.array([metric(y[rows], p[rows]) for rows in indices])
    assert values.dtype == np.float32
    assert float(low) == np.quantile(values, 0.05)
    assert float(high) == np.quantile(values, 0.95)
    assert low.dtype == values.dtype


def test_bootstrap_of_auc_equals_numpy_loop():
    y, s = BINARY["ties"]
    key = jax.random.key(3)
    point, low, high = bootstrap_ci(roc_auc, y, s, key=key, n_resamples=100)
    indices = np.asarray(bootstrap_indices(key, len(y), 100))
    # Eager, one by one (float64 NumPy, rounded to the float32 the vmapped resamples hold).
    values = np.array([roc_auc(y[rows], s[rows]) for rows in indices], np.float32)
    assert float(point) == float(np.float32(roc_auc(y, s)))
    assert float(low) == np.quantile(values, 0.025)
    assert float(high) == np.quantile(values, 0.975)


def test_bootstrap_interval_shrinks_with_more_data():
    widths = []
    for n in (100, 2500):
        y, p = _classification_data(n, seed=1)
        _, low, high = bootstrap_ci(_accuracy, y, p, key=jax.random.key(0), n_resamples=400)
        widths.append(float(high - low))
    assert widths[1] < 0.4 * widths[0]  # ~ 1 / sqrt(n): a factor 5 expected


def _weighted_accuracy(y, p, w):
    return jnp.sum(w * (y == p)) / jnp.sum(w)


def test_weighted_bootstrap_matches_plain_and_ignores_padding():
    y, p = _classification_data(200)
    key = jax.random.key(9)
    plain = bootstrap_ci(_accuracy, y, p, key=key, n_resamples=300)
    weighted = bootstrap_ci_weighted(_weighted_accuracy, y, p, key=key, n_resamples=300)
    for a, b in zip(plain, weighted, strict=True):
        _close(b, float(a))
    # Padding: the 56 masked rows never count, whatever they hold.
    mask = np.arange(256) < 200
    results = []
    for garbage in (7, 0):
        y_pad = np.concatenate([y, np.full(56, garbage)])
        p_pad = np.concatenate([p, np.full(56, 0)])
        results.append(
            bootstrap_ci_weighted(
                _weighted_accuracy, y_pad, p_pad, key=key, mask=mask, n_resamples=300
            )
        )
    assert [float(v) for v in results[0]] == [float(v) for v in results[1]]
    point, low, high = results[0]
    assert float(point) == float(_accuracy(y, p))
    assert low < point < high


def _r2_reference(y, pred, **kwargs):
    """scikit-learn on float64 copies: its float32 mean of a constant can round off too."""
    return skm.r2_score(np.float64(y), np.float64(pred), **kwargs)


@pytest.mark.parametrize("value", [3.0, 0.1, -7.25, 1e5 + 0.5])
@pytest.mark.parametrize("weighted", [False, True])
def test_r2_of_a_constant_float32_target_follows_sklearn(value, weighted):
    """Seven 3.0s have a float32 mean of 3.0000002: SS_tot is still exactly 0."""
    y = np.full(7, value, np.float32)
    wrong = y + np.float32(0.5)
    weight = np.arange(1, 8, dtype=np.float32) if weighted else None
    jitted = jax.jit(r2, static_argnames=("multioutput", "force_finite"))
    for pred in (wrong, y):
        for force_finite in (True, False):
            expected = _r2_reference(y, pred, sample_weight=weight, force_finite=force_finite)
            for fn in (r2, jitted):
                got = float(fn(y, pred, weight, force_finite=force_finite))
                np.testing.assert_equal(got, expected)  # 0.0, 1.0, -inf or NaN exactly


def test_r2_multi_output_with_a_constant_column_follows_sklearn():
    rng = np.random.default_rng(11)
    y = np.stack([np.full(50, 3.0), rng.standard_normal(50) + 300.0, np.full(50, 1e3)], 1)
    y = y.astype(np.float32)
    pred = (y + 0.1 * rng.standard_normal(y.shape)).astype(np.float32)
    pred[:, 2] = y[:, 2]  # a constant column predicted exactly: 1.0
    weight = rng.random(50).astype(np.float32)
    for multioutput in ("raw_values", "uniform_average", "variance_weighted", [1.0, 2.0, 3.0]):
        for w in (None, weight):
            for force_finite in (True, False):
                expected = _r2_reference(
                    y, pred, sample_weight=w, multioutput=multioutput, force_finite=force_finite
                )
                got = r2(y, pred, w, multioutput=multioutput, force_finite=force_finite)
                np.testing.assert_allclose(got, expected, rtol=1e-9)
                if isinstance(multioutput, str):
                    jitted = jax.jit(r2, static_argnames=("multioutput", "force_finite"))
                    traced = jitted(y, pred, w, multioutput=multioutput, force_finite=force_finite)
                    np.testing.assert_allclose(traced, expected, rtol=2e-5)


def test_r2_ignores_rows_of_zero_weight_when_deciding_constancy():
    y = np.array([2.0, 2.0, 2.0, 9.0], np.float32)
    pred = np.array([2.5, 1.5, 2.0, 0.0], np.float32)
    weight = np.array([1.0, 2.0, 3.0, 0.0], np.float32)
    expected = _r2_reference(y, pred, sample_weight=weight)
    assert expected == 0.0
    assert r2(y, pred, weight) == expected
    assert float(jax.jit(r2)(y, pred, weight)) == expected
