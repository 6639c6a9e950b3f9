"""``jaxtrain.metrics`` as a library: scikit-learn's (fairlearn's) arguments and answers.

References: scikit-learn 1.9 and fairlearn on the same random inputs, with sample weights,
every average, ``pos_label``, ``labels`` and string labels. Eager calls compute in float64
NumPy, so they are compared at rtol 1e-9; traced calls (``jax.jit``) run in float32 and are
compared at rtol 1e-5. Also: one return type (a Python float) eagerly, ValueErrors for bad
input where scikit-learn raises, and no compilation whatever the input length.
"""

from __future__ import annotations

import fairlearn.metrics as flm
import jax
import numpy as np
import pytest
import sklearn.metrics as skm

import jaxtrain.metrics as M

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.UndefinedMetricWarning", "ignore::UserWarning"
)
EAGER = {"rtol": 1e-9, "atol": 1e-12}
TRACED = {"rtol": 1e-5, "atol": 1e-6}


def _classes(seed: int, n: int = 300, k: int = 4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    scores = rng.dirichlet(np.ones(k), n).astype(np.float32)
    scores[np.arange(n), y] += 0.3 * rng.random(n).astype(np.float32)  # informative
    scores /= scores.sum(1, keepdims=True)
    weight = rng.random(n)
    return y, p, scores, weight


def _close(ours, ref, tol=EAGER):
    np.testing.assert_allclose(np.asarray(ours, np.float64), ref, **tol)


# --- classification ----------------------------------------------------------------------------

SCORES = [(M.precision, skm.precision_score), (M.recall, skm.recall_score), (M.f1, skm.f1_score)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("average", ["micro", "macro", "weighted", None])
def test_precision_recall_f1_equal_sklearn(seed, average):
    y, p, _, w = _classes(seed)
    for ours, ref in SCORES:
        for weight in (None, w):
            expected = ref(y, p, average=average, sample_weight=weight)
            _close(ours(y, p, average=average, sample_weight=weight), expected)
            traced = jax.jit(
                lambda a, b, c, f=ours: f(a, b, average=average, sample_weight=c, num_classes=4)
            )
            _close(traced(y, p, weight), expected, TRACED)
        subset = [2, 0]  # the classes to score and their order
        _close(
            ours(y, p, labels=subset, average=average),
            ref(y, p, labels=subset, average=average),
        )


@pytest.mark.parametrize("pos_label", [0, 1])
def test_binary_scores_use_pos_label_like_sklearn(pos_label):
    y, p, _, w = _classes(2, k=2)
    for ours, ref in SCORES:
        expected = ref(y, p, pos_label=pos_label, sample_weight=w)
        value = ours(y, p, pos_label=pos_label, sample_weight=w)
        assert type(value) is float
        _close(value, expected)
        traced = jax.jit(lambda a, b, c, f=ours: f(a, b, pos_label=pos_label, sample_weight=c))
        _close(traced(y, p, w), expected, TRACED)
    names = np.array(["no", "yes"])
    for ours, ref in SCORES:
        _close(ours(names[y], names[p], pos_label="no"), ref(names[y], names[p], pos_label="no"))


@pytest.mark.parametrize("zero_division", ["warn", 0.0, 1.0, np.nan])
def test_zero_division_follows_sklearn(zero_division):
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 0, 0, 1, 1, 1])  # class 2 is never predicted: precision 0/0
    for ours, ref in SCORES:
        for average in ("macro", "weighted", None):
            _close(
                ours(y, p, average=average, zero_division=zero_division),
                ref(y, p, average=average, zero_division=zero_division),
            )


def test_accuracy_and_confusion_matrix_equal_sklearn():
    y, p, _, w = _classes(3)
    _close(M.accuracy(y, p), skm.accuracy_score(y, p))
    _close(M.accuracy(y, p, sample_weight=w), skm.accuracy_score(y, p, sample_weight=w))
    _close(M.accuracy(y, p, normalize=False), skm.accuracy_score(y, p, normalize=False))
    for normalize in (None, "true", "pred", "all"):
        for weight in (None, w, (w * 4).astype(int)):
            ours = M.confusion_matrix(y, p, sample_weight=weight, normalize=normalize)
            ref = skm.confusion_matrix(y, p, sample_weight=weight, normalize=normalize)
            assert ours.dtype == ref.dtype
            _close(ours, ref)
    names = np.array(["ant", "bee", "cat", "dog"])
    ours = M.confusion_matrix(names[y], names[p], labels=["dog", "ant"])
    np.testing.assert_array_equal(
        ours, skm.confusion_matrix(names[y], names[p], labels=["dog", "ant"])
    )
    traced = jax.jit(lambda a, b, c: M.confusion_matrix(a, b, num_classes=4, sample_weight=c))
    _close(traced(y, p, w), skm.confusion_matrix(y, p, sample_weight=w), TRACED)


# --- probabilities and ranks -------------------------------------------------------------------


def test_log_loss_and_top_k_equal_sklearn_with_weights_and_labels():
    y, _, scores, w = _classes(4)
    loose = {"rtol": 1e-6}  # scikit-learn takes the logs of float32 probabilities in float32
    names = np.array(["ant", "bee", "cat", "dog"])
    for normalize in (True, False):
        expected = skm.log_loss(y, scores, sample_weight=w, normalize=normalize)
        _close(M.log_loss(y, scores, sample_weight=w, normalize=normalize), expected, loose)
        _close(
            M.log_loss(names[y], scores, labels=names, sample_weight=w, normalize=normalize),
            expected,
            loose,
        )
        traced = jax.jit(
            lambda a, b, c, z=normalize: M.log_loss(a, b, sample_weight=c, normalize=z)
        )
        _close(traced(y, scores, w), expected, TRACED)
        for k in (1, 2, 3):
            expected = skm.top_k_accuracy_score(
                y, scores, k=k, sample_weight=w, normalize=normalize
            )
            _close(M.top_k_accuracy(y, scores, k, sample_weight=w, normalize=normalize), expected)


def test_roc_auc_and_average_precision_equal_sklearn_with_weights():
    y, _, scores, w = _classes(5)
    for average in ("macro", "weighted"):
        expected = skm.roc_auc_score(y, scores, multi_class="ovr", average=average, sample_weight=w)
        _close(M.roc_auc(y, scores, multi_class="ovr", average=average, sample_weight=w), expected)
        _close(M.roc_auc_ovr(y, scores, average=average, sample_weight=w), expected)
        traced = jax.jit(
            lambda a, b, c, avg=average: M.roc_auc_ovr(a, b, average=avg, sample_weight=c)
        )
        _close(traced(y, scores, w), expected, TRACED)
        expected = skm.average_precision_score(y, scores, average=average, sample_weight=w)
        _close(M.average_precision(y, scores, average=average, sample_weight=w), expected)
    binary = (y == 1).astype(int)
    positive = scores[:, 1]
    names = np.array(["healthy", "sick"])
    for weight in (None, w):
        expected = skm.roc_auc_score(binary, positive, sample_weight=weight)
        _close(M.roc_auc(binary, positive, sample_weight=weight), expected)
        _close(M.roc_auc(names[binary], positive, sample_weight=weight), expected)
        for pos_label in (0, 1):
            expected = skm.average_precision_score(
                binary, positive, pos_label=pos_label, sample_weight=weight
            )
            _close(
                M.average_precision(binary, positive, pos_label=pos_label, sample_weight=weight),
                expected,
            )
            for ours, ref in (
                (M.roc_curve, skm.roc_curve),
                (M.precision_recall_curve, skm.precision_recall_curve),
            ):
                for a, b in zip(
                    ours(binary, positive, pos_label=pos_label, sample_weight=weight),
                    ref(binary, positive, pos_label=pos_label, sample_weight=weight),
                    strict=True,
                ):
                    _close(a, b)
    traced = jax.jit(lambda a, b, c: M.roc_auc(a, b, sample_weight=c))
    _close(
        traced(binary, positive, w), skm.roc_auc_score(binary, positive, sample_weight=w), TRACED
    )


# --- regression -----------------------------------------------------------------------------------


def test_regression_metrics_equal_sklearn_eagerly_in_float64():
    rng = np.random.default_rng(6)
    y = 1e5 + rng.standard_normal((120, 2))  # a large offset: float64 keeps every digit
    pred = y + 0.3 * rng.standard_normal(y.shape)
    w = rng.random(120)
    pairs = [
        (M.mse, skm.mean_squared_error),
        (M.rmse, skm.root_mean_squared_error),
        (M.mae, skm.mean_absolute_error),
        (M.r2, skm.r2_score),
    ]
    for ours, ref in pairs:
        for multioutput in ("raw_values", "uniform_average", [0.3, 0.7]):
            _close(
                ours(y, pred, sample_weight=w, multioutput=multioutput),
                ref(y, pred, sample_weight=w, multioutput=multioutput),
            )
    assert type(M.r2(y, pred)) is float


# --- fairness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["between_groups", "to_overall"])
def test_fairness_scores_equal_fairlearn_with_named_groups_and_weights(method):
    rng = np.random.default_rng(7)
    n = 400
    groups = rng.choice(np.array(["north", "south", "east"]), n)
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.7, y, 1 - y)
    w = rng.random(n)
    cases = [
        (M.demographic_parity_difference, flm.demographic_parity_difference, {}),
        (M.demographic_parity_ratio, flm.demographic_parity_ratio, {}),
        (M.equalized_odds_difference, flm.equalized_odds_difference, {}),
        (M.equalized_odds_ratio, flm.equalized_odds_ratio, {}),
        (M.equalized_odds_difference, flm.equalized_odds_difference, {"agg": "mean"}),
        (M.equalized_odds_ratio, flm.equalized_odds_ratio, {"agg": "mean"}),
    ]
    for ours, ref, extra in cases:
        for weight in (None, w):
            expected = ref(
                y, p, sensitive_features=groups, method=method, sample_weight=weight, **extra
            )
            value = ours(
                y, p, sensitive_features=groups, method=method, sample_weight=weight, **extra
            )
            assert type(value) is float
            _close(value, expected)
    frame = flm.MetricFrame(
        metrics={"selection_rate": flm.selection_rate},
        y_true=y,
        y_pred=p,
        sensitive_features=groups,
    )
    rates = M.group_metrics(y, p, sensitive_features=groups)["selection_rate"]
    _close(rates, frame.by_group["selection_rate"].sort_index().to_numpy())


# --- one return type, clear errors, no compilation ----------------------------------------------


def _calls():
    """(name, call(n)) for every public scalar metric on n rows."""

    def data(n):
        rng = np.random.default_rng(n)
        y = np.arange(n) % 3
        probs = rng.dirichlet(np.ones(3), n)
        return y, (y + (np.arange(n) % 2)) % 3, probs, (y == 1).astype(int), probs[:, 1]

    def groups(n):
        return np.arange(n) % 2

    return {
        "accuracy": lambda n: M.accuracy(*data(n)[:2]),
        "precision": lambda n: M.precision(*data(n)[:2], average="macro"),
        "recall": lambda n: M.recall(*data(n)[:2], average="macro"),
        "f1": lambda n: M.f1(*data(n)[:2], average="weighted"),
        "log_loss": lambda n: M.log_loss(data(n)[0], data(n)[2]),
        "top_k_accuracy": lambda n: M.top_k_accuracy(data(n)[0], data(n)[2], 2),
        "expected_calibration_error": lambda n: M.expected_calibration_error(
            data(n)[0], data(n)[2]
        ),
        "roc_auc": lambda n: M.roc_auc(data(n)[3], data(n)[4]),
        "roc_auc_ovr": lambda n: M.roc_auc_ovr(data(n)[0], data(n)[2]),
        "average_precision": lambda n: M.average_precision(data(n)[3], data(n)[4]),
        "mse": lambda n: M.mse(data(n)[4], data(n)[2][:, 0]),
        "rmse": lambda n: M.rmse(data(n)[4], data(n)[2][:, 0]),
        "mae": lambda n: M.mae(data(n)[4], data(n)[2][:, 0]),
        "r2": lambda n: M.r2(data(n)[4], data(n)[2][:, 0]),
        "demographic_parity_difference": lambda n: M.demographic_parity_difference(
            data(n)[3], data(n)[3], sensitive_features=groups(n)
        ),
        "demographic_parity_ratio": lambda n: M.demographic_parity_ratio(
            data(n)[3], data(n)[3], sensitive_features=groups(n)
        ),
        "equalized_odds_difference": lambda n: M.equalized_odds_difference(
            data(n)[3], 1 - data(n)[3], sensitive_features=groups(n)
        ),
        "equalized_odds_ratio": lambda n: M.equalized_odds_ratio(
            data(n)[3], data(n)[3], sensitive_features=groups(n)
        ),
    }


CALLS = _calls()


@pytest.mark.parametrize("name", sorted(CALLS))
def test_eager_metrics_return_a_python_float_and_never_compile(name):
    compiles = []

    def listener(event, duration, **kwargs):
        if "backend_compile" in event:
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        values = [CALLS[name](n) for n in (40, 41, 47, 50, 63)]  # five lengths
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert all(type(v) is float for v in values)
    assert compiles == []  # a NumPy path: no compilation for any input length


def test_the_control_a_jitted_metric_compiles_once_per_length():
    """The counter above works: a jitted metric compiles once for each new length."""
    compiles = []

    def listener(event, duration, **kwargs):
        if "backend_compile" in event:
            compiles.append(event)

    jitted = jax.jit(lambda y, p: M.mse(y, p))
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for n in (40, 41, 47, 50, 63, 63):
            jitted(np.zeros(n, np.float32), np.ones(n, np.float32))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(compiles) == 5


def test_every_public_metric_is_documented_in_the_readme():
    from tests.support import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Metrics as a library", 1)[1].split("\n## ", 1)[0]
    for name in M.__all__:
        assert f"`{name}`" in section, name


BAD_INPUTS = {
    "label outside the columns": (
        lambda: M.log_loss([0, 1, 3], np.full((3, 3), 1 / 3)),
        r"label 3 \(row 2\), outside",
    ),
    "negative label": (
        lambda: M.log_loss([0, -1, 2], np.full((3, 3), 1 / 3)),
        r"label -1 \(row 1\)",
    ),
    "top-k unknown label": (lambda: M.top_k_accuracy([0, 5], np.full((2, 3), 1 / 3), 1), "label 5"),
    "calibration unknown label": (
        lambda: M.expected_calibration_error([0, 7], np.full((2, 3), 1 / 3)),
        "label 7",
    ),
    "ovr unknown label": (lambda: M.roc_auc_ovr([0, 1, 9], np.full((3, 3), 1 / 3)), "label 9"),
    "probability above 1": (
        lambda: M.log_loss([0, 1], [[1.5, -0.5], [0.5, 0.5]]),
        "outside \\[0, 1\\]",
    ),
    "NaN score": (lambda: M.roc_auc([0, 1, 1], [0.1, np.nan, 0.3]), "y_score contains nan"),
    "NaN prediction": (lambda: M.mse([1.0, 2.0], [np.nan, 1.0]), "y_pred contains nan"),
    "NaN weight": (
        lambda: M.r2([1.0, 2.0, 3.0], [1.0, 2.0, 2.5], sample_weight=[1, np.nan, 1]),
        "sample_weight contains nan",
    ),
    "empty": (lambda: M.log_loss([], np.zeros((0, 2))), "hold no rows"),
    "empty regression": (lambda: M.mae([], []), "hold no rows"),
    "lengths": (lambda: M.accuracy([0, 1, 1], [0, 1]), "different numbers of rows"),
    "lengths ranking": (
        lambda: M.average_precision([0, 1, 1], [0.2, 0.4]),
        "different numbers of rows",
    ),
    "lengths fairness": (
        lambda: M.demographic_parity_difference([0, 1], [0, 1], sensitive_features=[0, 1, 1]),
        "different numbers of rows",
    ),
    "group outside num_groups": (
        lambda: M.group_metrics([0, 1], [0, 1], [0, 4], 2),
        r"group 4 \(row 1\) is not in \[0, num_groups=2\)",
    ),
    "binary average on three classes": (lambda: M.f1([0, 1, 2], [0, 1, 2]), "average='binary'"),
    "unknown pos_label": (
        lambda: M.average_precision([0, 1], [0.2, 0.7], pos_label=2),
        "pos_label=2",
    ),
    "three classes for binary scores": (lambda: M.roc_auc([0, 1, 2], [0.1, 0.2, 0.3]), "3 classes"),
    "weights of the wrong length": (
        lambda: M.log_loss([0, 1], [0.3, 0.6], sample_weight=[1.0]),
        "sample_weight must have",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_one_line_value_error_naming_the_argument(case):
    call, match = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=match) as error:
        call()
    assert "\n" not in str(error.value)
    assert str(error.value).split(":")[0] in M.__all__  # names the function


def test_log_loss_of_an_unknown_label_is_nan_under_jit():
    """It used to be zero loss for that row; under jit it cannot raise, so it poisons."""
    probs = np.full((3, 3), 1 / 3, np.float32)
    assert np.isnan(jax.jit(M.log_loss)(np.array([0, 1, 3]), probs))
    assert np.isnan(jax.jit(M.log_loss)(np.array([0, -1, 2]), probs))
    assert np.isnan(
        jax.jit(M.top_k_accuracy, static_argnames="k")(np.array([0, 3]), probs[:2], k=1)
    )
    assert np.isfinite(jax.jit(M.log_loss)(np.array([0, 1, 2]), probs))
