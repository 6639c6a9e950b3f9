"""Classification metrics equal scikit-learn's on the same predictions.

Tolerance: every score is compared EXACTLY (``==``, i.e. rtol=0, atol=0). The module does the
same float64 operations as scikit-learn in the same order, so any difference, even in the last
digit, is a bug. Counts (confusion matrices, supports) are integers and compared exactly too.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.metrics as skm

from jaxtrain.metrics import classification_metrics, confusion_matrix

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")

BATCH = 32  # every batch is padded to this size, so each num_classes compiles once
jit_confusion = jax.jit(confusion_matrix, static_argnames="num_classes")


# ---------------------------------------------------------------------------------------------
# reference and helpers


def sklearn_reference(y: np.ndarray, p: np.ndarray, k: int) -> dict:
    """Everything classification_metrics returns, computed by scikit-learn from the raw labels."""
    ref: dict = {"accuracy": skm.accuracy_score(y, p)}
    for avg in ("macro", "micro", "weighted") + (("binary",) if k == 2 else ()):
        prec, rec, f1, _ = skm.precision_recall_fscore_support(y, p, average=avg)
        assert skm.f1_score(y, p, average=avg) == f1
        assert skm.precision_score(y, p, average=avg) == prec
        assert skm.recall_score(y, p, average=avg) == rec
        ref |= {f"precision_{avg}": prec, f"recall_{avg}": rec, f"f1_{avg}": f1}
    prec, rec, f1, support = skm.precision_recall_fscore_support(
        y, p, labels=np.arange(k), average=None
    )
    ref["per_class"] = {
        "precision": prec.tolist(),
        "recall": rec.tolist(),
        "f1": f1.tolist(),
        "support": support.tolist(),
    }
    ref["confusion_matrix"] = skm.confusion_matrix(y, p, labels=np.arange(k)).tolist()
    ref["count"] = len(y)
    return ref


def assert_same(ours: dict, ref: dict) -> None:
    """Same keys, same values, exactly; scalar scores are Python floats."""
    assert ours.keys() == ref.keys()
    for key, value in ref.items():
        if key in ("per_class", "confusion_matrix", "count"):
            assert ours[key] == value, key
        else:
            assert type(ours[key]) is float, key
            assert ours[key] == value, (key, ours[key], value)


def batched_confusion(
    y: np.ndarray, p: np.ndarray, k: int, rng: np.random.Generator, sizes: list[int] | None = None
) -> np.ndarray:
    """Jitted confusion matrices of padded, masked batches, summed on the host in int64."""
    if sizes is None:
        sizes = []
        while sum(sizes) < len(y):
            sizes.append(int(rng.integers(1, BATCH + 1)))
        sizes[-1] -= sum(sizes) - len(y)
    total = np.zeros((k, k), np.int64)
    start = 0
    for size in sizes:
        # Padding rows hold garbage, in range and out of range; the mask must drop them.
        yb = rng.integers(-2, k + 2, BATCH)
        pb = rng.integers(-2, k + 2, BATCH)
        yb[:size], pb[:size] = y[start : start + size], p[start : start + size]
        mask = np.arange(BATCH) < size
        cm = jit_confusion(jnp.asarray(yb), jnp.asarray(pb), num_classes=k, mask=jnp.asarray(mask))
        assert cm.dtype == jnp.int32 and cm.shape == (k, k)
        total += np.asarray(cm, np.int64)
        start += size
    assert start == len(y)
    return total


def noisy(y: np.ndarray, k: int, rng: np.random.Generator, correct: float = 0.6) -> np.ndarray:
    return np.where(rng.random(len(y)) < correct, y, rng.integers(0, k, len(y)))


# ---------------------------------------------------------------------------------------------
# scenarios: (rng, k, c) -> (y_true, y_pred); c is a class singled out by the scenario


def random_labels(rng, k, c):
    y = rng.integers(0, k, int(rng.integers(40, 200)))
    return y, noisy(y, k, rng)


def absent_from_true_but_predicted(rng, k, c):
    y = rng.choice(np.delete(np.arange(k), c), int(rng.integers(40, 200)))
    p = noisy(y, k, rng)
    p[0] = c
    return y, p


def absent_from_both(rng, k, c):
    others = np.delete(np.arange(k), c)
    y = rng.choice(others, int(rng.integers(40, 200)))
    p = np.where(rng.random(len(y)) < 0.6, y, rng.choice(others, len(y)))
    return y, p


def never_predicted(rng, k, c):
    y = rng.integers(0, k, int(rng.integers(40, 200)))
    y[0] = c
    p = noisy(y, k, rng)
    p[p == c] = (c + 1) % k
    return y, p


def perfect(rng, k, c):
    y = rng.integers(0, k, int(rng.integers(40, 200)))
    return y, y.copy()


def all_one_class(rng, k, c):
    y = np.full(int(rng.integers(40, 200)), c)
    return y, y.copy()


def true_all_one_class(rng, k, c):
    y = np.full(int(rng.integers(40, 200)), c)
    return y, noisy(y, k, rng)


SCENARIOS: list[Callable] = [
    random_labels,
    absent_from_true_but_predicted,
    absent_from_both,
    never_predicted,
    perfect,
    all_one_class,
    true_all_one_class,
]


# ---------------------------------------------------------------------------------------------
# confusion_matrix


def test_confusion_matrix_matches_sklearn_under_jit_with_mask():
    rng = np.random.default_rng(0)
    k, n = 4, 300
    y = rng.integers(0, k, n)
    p = noisy(y, k, rng)
    mask = rng.random(n) < 0.7
    # Masked rows get labels that would land in real cells if they were counted.
    y_in = np.where(mask, y, 0)
    p_in = np.where(mask, p, 3)
    ours = jit_confusion(jnp.asarray(y_in), jnp.asarray(p_in), num_classes=k, mask=mask)
    assert ours.dtype == jnp.int32 and ours.shape == (k, k)
    expected = skm.confusion_matrix(y[mask], p[mask], labels=range(k))
    np.testing.assert_array_equal(np.asarray(ours), expected)
    # Without the mask every row counts, and the result differs (so the mask did something).
    unmasked = jit_confusion(jnp.asarray(y_in), jnp.asarray(p_in), num_classes=k)
    np.testing.assert_array_equal(
        np.asarray(unmasked), skm.confusion_matrix(y_in, p_in, labels=range(k))
    )
    assert not np.array_equal(np.asarray(unmasked), expected)
    # A 0/1 numeric mask means the same as a boolean one.
    np.testing.assert_array_equal(
        np.asarray(jit_confusion(y_in, p_in, num_classes=k, mask=mask.astype(np.float32))),
        expected,
    )


def test_confusion_matrix_ignores_out_of_range_like_sklearn_labels_range():
    y = np.array([0, 1, 2, -1, 5, 1, 2, 0])
    p = np.array([0, 2, -1, 1, 1, 1, 3, 9])
    ours = jit_confusion(y, p, num_classes=3)
    np.testing.assert_array_equal(np.asarray(ours), skm.confusion_matrix(y, p, labels=range(3)))
    assert int(ours.sum()) == 3


def test_confusion_matrix_rejects_traced_num_classes():
    with pytest.raises(TypeError, match="static_argnames"):
        jax.jit(confusion_matrix)(jnp.zeros(3, jnp.int32), jnp.zeros(3, jnp.int32), num_classes=2)


# ---------------------------------------------------------------------------------------------
# classification_metrics against sklearn


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("k", [2, 3, 5])
def test_metrics_from_summed_batches_equal_sklearn(k, scenario, seed):
    rng = np.random.default_rng([k, SCENARIOS.index(scenario), seed])
    c = seed % k  # for k=2 this covers the positive class and the negative class
    y, p = scenario(rng, k, c)
    confusion = batched_confusion(y, p, k, rng)
    assert_same(classification_metrics(confusion), sklearn_reference(y, p, k))


def test_class_absent_from_some_batches_accumulates_to_sklearn():
    rng = np.random.default_rng(1)
    k = 4
    y = np.sort(rng.integers(0, k, 120))  # sorted: each batch sees only one or two classes
    p = noisy(y, k, rng, correct=0.8)
    sizes = [30, 30, 30, 30]
    confusion = batched_confusion(y, p, k, rng, sizes)
    assert any((y[i : i + 30] == 0).sum() == 0 for i in range(0, 120, 30))
    assert_same(classification_metrics(confusion), sklearn_reference(y, p, k))


def test_accepts_jax_array_and_float_counts():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 50)
    p = noisy(y, 3, rng)
    cm = confusion_matrix(y, p, num_classes=3)
    ref = sklearn_reference(y, p, 3)
    assert_same(classification_metrics(cm), ref)
    assert_same(classification_metrics(np.asarray(cm, np.float64)), ref)


def test_macro_excludes_classes_absent_from_true_and_pred():
    # Class 2 appears nowhere; sklearn (labels=None) averages over classes 0, 1, 3 only.
    y = np.array([0, 0, 1, 1, 3, 3, 3])
    p = np.array([0, 1, 1, 1, 3, 0, 3])
    ours = classification_metrics(jit_confusion(y, p, num_classes=4))
    ref = sklearn_reference(y, p, 4)
    assert_same(ours, ref)
    per_class = ours["per_class"]
    for name in ("precision", "recall", "f1"):
        included = np.mean([per_class[name][i] for i in (0, 1, 3)])
        over_all = np.mean(per_class[name])
        assert ours[f"{name}_macro"] == included
        assert ours[f"{name}_macro"] != over_all  # averaging over all 4 classes would fail


def test_class_predicted_but_absent_from_true_counts_in_macro():
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 2, 1, 1])  # class 2: predicted once, never true -> precision 0, recall 0
    ours = classification_metrics(jit_confusion(y, p, num_classes=3))
    assert_same(ours, sklearn_reference(y, p, 3))
    assert ours["recall_macro"] == pytest.approx((1 / 2 + 1 + 0) / 3, rel=1e-15)


def test_never_predicted_class_scores_zero_precision():
    y = np.array([0, 1, 2, 2, 1])
    p = np.array([0, 1, 1, 1, 1])
    ours = classification_metrics(jit_confusion(y, p, num_classes=3))
    assert_same(ours, sklearn_reference(y, p, 3))
    assert ours["per_class"]["precision"][2] == 0.0
    assert ours["per_class"]["f1"][2] == 0.0


def test_binary_when_positive_class_never_appears_is_zero():
    y = p = np.zeros(10, np.int32)
    ours = classification_metrics(jit_confusion(y, p, num_classes=2))
    assert_same(ours, sklearn_reference(y, p, 2))
    assert ours["accuracy"] == 1.0 and ours["f1_macro"] == 1.0
    assert ours["precision_binary"] == ours["recall_binary"] == ours["f1_binary"] == 0.0


def test_binary_keys_only_for_two_classes():
    y = np.array([0, 1, 2])
    assert "f1_binary" not in classification_metrics(jit_confusion(y, y, num_classes=3))
    assert "f1_binary" in classification_metrics(jit_confusion(y[:2], y[:2], num_classes=2))


def test_micro_equals_accuracy_for_multiclass():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, 97)
    ours = classification_metrics(jit_confusion(y, noisy(y, 5, rng), num_classes=5))
    for name in ("precision", "recall", "f1"):
        assert ours[f"{name}_micro"] == ours["accuracy"]


# ---------------------------------------------------------------------------------------------
# errors


def test_zero_total_count_raises():
    with pytest.raises(ValueError, match="no examples"):
        classification_metrics(np.zeros((3, 3), np.int64))
    # The same from an evaluation whose rows are all padding.
    y = jnp.array([0, 1, 2])
    cm = jit_confusion(y, y, num_classes=3, mask=jnp.zeros(3, bool))
    with pytest.raises(ValueError, match="no examples"):
        classification_metrics(cm)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 3)), np.zeros(4), np.array([[1, -1], [0, 2]]), np.array([[1.5, 0], [0, 1]])],
    ids=["not_square", "1d", "negative", "fractional"],
)
def test_invalid_confusion_raises(bad):
    with pytest.raises(ValueError):
        classification_metrics(bad)
