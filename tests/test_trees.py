"""Decision trees and random forests against scikit-learn, the independent reference."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from jaxtrain.models.trees import (
    feature_importances,
    fit_forest,
    fit_tree,
    forest_feature_importances,
    predict_forest,
    predict_tree,
)
from tests.support import xla_defaults

LOADERS = {
    "breast_cancer": load_breast_cancer,
    "wine": load_wine,
    "digits": load_digits,
    "diabetes": load_diabetes,
}


@functools.cache
def split(name: str) -> tuple[np.ndarray, ...]:
    """Train/test split as the brief fixes it (stratified for classification, seed 0)."""
    x, y = LOADERS[name](return_X_y=True)
    stratify = None if name == "diabetes" else y
    return tuple(train_test_split(x.astype(np.float32), y, stratify=stratify, random_state=0))


def used(tree) -> tuple[np.ndarray, np.ndarray]:
    """(node mask, leaf mask) of the slots a fit actually used."""
    reached = np.asarray(tree.n_node_samples) > 0
    return reached, reached & np.asarray(tree.is_leaf)


def split_nodes(feature, threshold) -> list[tuple[int, float]]:
    """The (feature, threshold) of every split node, in a canonical order."""
    feature, threshold = np.asarray(feature), np.asarray(threshold, np.float64)
    keep = feature >= 0
    return sorted(zip(feature[keep].tolist(), np.round(threshold[keep], 4).tolist(), strict=True))


# Each case fits once with max_features=None and no bootstrap: the deterministic CART, which
# must grow scikit-learn's tree. scikit-learn breaks exact ties between features at random
# (wine and breast_cancer have features that split the training set alike), so the test set
# may disagree a little, and scikit-learn's own test accuracy moves with ``random_state``
# (wine/entropy: 0.933 or 0.978); the reference accuracy is its median over five seeds.
CASES = [
    ("breast_cancer", "gini", 6, 1),
    ("breast_cancer", "entropy", 8, 3),
    ("wine", "gini", 6, 1),
    ("wine", "entropy", 6, 2),
    ("digits", "gini", 10, 1),
    ("digits", "entropy", 8, 3),
]


@pytest.mark.parametrize(("name", "criterion", "max_depth", "min_leaf"), CASES)
def test_tree_grows_sklearns_tree(name, criterion, max_depth, min_leaf):
    xt, xe, yt, ye = split(name)
    settings = dict(criterion=criterion, max_depth=max_depth, min_samples_leaf=min_leaf)
    references = [
        DecisionTreeClassifier(random_state=seed, **settings).fit(xt, yt) for seed in range(5)
    ]
    reference = references[0]
    tree = fit_tree(xt, yt, jax.random.key(0), num_classes=int(yt.max()) + 1, **settings)

    train_pred = np.asarray(predict_tree(tree, xt)).argmax(1)
    test_pred = np.asarray(predict_tree(tree, xe)).argmax(1)
    # We disagree with scikit-learn no more than its seeds disagree among themselves.
    self_agreement = min((r.predict(xt) == reference.predict(xt)).mean() for r in references)
    assert (train_pred == reference.predict(xt)).mean() >= min(0.99, self_agreement)
    reference_accuracy = np.median([r.score(xe, ye) for r in references])
    assert abs((test_pred == ye).mean() - reference_accuracy) <= 0.02
    reached, leaves = used(tree)
    assert reached.sum() == reference.tree_.node_count
    assert np.asarray(tree.n_node_samples)[leaves].min() >= min_leaf
    assert np.asarray(tree.depth)[reached].max() <= max_depth
    np.testing.assert_allclose(np.asarray(feature_importances(tree)).sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize(("name", "criterion"), [("breast_cancer", "entropy"), ("digits", "gini")])
def test_shallow_tree_equals_sklearns_exactly(name, criterion):
    xt, xe, yt, _ = split(name)
    reference = DecisionTreeClassifier(criterion=criterion, max_depth=3, random_state=0)
    reference.fit(xt, yt)
    tree = fit_tree(
        xt,
        yt,
        jax.random.key(0),
        num_classes=int(yt.max()) + 1,
        criterion=criterion,
        max_depth=3,
    )
    np.testing.assert_array_equal(
        np.asarray(predict_tree(tree, xe)).argmax(1), reference.predict(xe)
    )
    np.testing.assert_allclose(
        np.asarray(predict_tree(tree, xe)), reference.predict_proba(xe), atol=1e-6
    )
    ref = reference.tree_
    assert split_nodes(tree.feature, tree.threshold) == split_nodes(ref.feature, ref.threshold)
    np.testing.assert_allclose(
        np.asarray(feature_importances(tree)), reference.feature_importances_, atol=1e-5
    )


def test_regression_tree_matches_sklearn_on_diabetes():
    xt, xe, yt, ye = split("diabetes")
    reference = DecisionTreeRegressor(max_depth=5, min_samples_leaf=5, random_state=0)
    reference.fit(xt, yt)
    tree = fit_tree(xt, yt, jax.random.key(0), task="regression", max_depth=5, min_samples_leaf=5)
    np.testing.assert_allclose(
        np.asarray(predict_tree(tree, xt))[:, 0], reference.predict(xt), rtol=1e-4
    )
    r2 = r2_score(ye, np.asarray(predict_tree(tree, xe))[:, 0])
    assert abs(r2 - reference.score(xe, ye)) < 0.01
    np.testing.assert_allclose(
        np.asarray(feature_importances(tree)), reference.feature_importances_, atol=1e-3
    )
    _, leaves = used(tree)
    assert np.asarray(tree.n_node_samples)[leaves].min() >= 5


@pytest.mark.parametrize("name", ["breast_cancer", pytest.param("digits", marks=pytest.mark.slow)])
def test_forest_accuracy_close_to_sklearn(name):
    xt, xe, yt, ye = split(name)
    reference = RandomForestClassifier(50, max_depth=10, random_state=0, n_jobs=1).fit(xt, yt)
    forest = fit_forest(
        xt,
        yt,
        jax.random.key(0),
        n_estimators=50,
        num_classes=int(yt.max()) + 1,
        max_depth=10,
        trees_per_step=1,
    )
    assert forest.feature.shape[0] == 50
    accuracy = (np.asarray(predict_forest(forest, xe)).argmax(1) == ye).mean()
    assert abs(accuracy - reference.score(xe, ye)) <= 0.02
    importances = np.asarray(forest_feature_importances(forest))
    np.testing.assert_allclose(importances.sum(), 1.0, rtol=1e-5)
    assert np.corrcoef(importances, reference.feature_importances_)[0, 1] > 0.85


@pytest.mark.default_xla
def test_vmapped_fit_equals_fits_one_at_a_time():
    xt, _, yt, _ = split("wine")
    fit = functools.partial(fit_tree, num_classes=3, max_depth=4, max_features="sqrt")
    keys = jax.random.split(jax.random.key(1), 3)
    weights = jax.random.randint(jax.random.key(2), (3, len(yt)), 0, 3).astype(np.float32)
    together = jax.jit(jax.vmap(fit, in_axes=(None, None, 0, 0)))(xt, yt, keys, weights)
    exact = xla_defaults()  # bitwise under XLA's defaults; float32 rounding under the fast flags
    for i in range(3):
        alone = fit(xt, yt, keys[i], weights[i])
        for got, want in zip(jax.tree.leaves(together), jax.tree.leaves(alone), strict=True):
            got, want = np.asarray(got)[i], np.asarray(want)
            if np.issubdtype(want.dtype, np.floating) and not exact:
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
            else:
                np.testing.assert_array_equal(got, want)
    # Same key, same tree; different keys draw different features.
    again = fit(xt, yt, keys[0], weights[0])
    np.testing.assert_array_equal(np.asarray(again.feature), np.asarray(together.feature[0]))
    assert not np.array_equal(np.asarray(together.feature[0]), np.asarray(together.feature[1]))


def test_ties_constant_features_and_zero_weights():
    rng = np.random.default_rng(0)
    x = np.stack(
        [
            np.full(60, 3.0),  # constant: never split on
            rng.integers(0, 4, 60),  # heavy ties
            rng.normal(size=60),
        ],
        axis=1,
    ).astype(np.float32)
    y = ((x[:, 1] >= 2) ^ (x[:, 2] > 0.5)).astype(np.int32)
    ones = np.ones(60, np.float32)
    tree = fit_tree(x, y, jax.random.key(0), ones, num_classes=2, max_depth=4)
    reference = DecisionTreeClassifier(max_depth=4, random_state=0).fit(x, y)
    assert 0 not in np.asarray(tree.feature)
    np.testing.assert_array_equal(np.asarray(predict_tree(tree, x)).argmax(1), reference.predict(x))
    thresholds = np.asarray(tree.threshold)[np.asarray(tree.feature) == 1]
    assert set(thresholds.tolist()) <= {0.5, 1.5, 2.5}  # midpoints between distinct values

    # Examples of weight 0 are left out entirely: the tree scikit-learn fits to the rest.
    keep = np.arange(60) % 3 != 0
    weighted = fit_tree(
        x, y, jax.random.key(0), keep.astype(np.float32), num_classes=2, max_depth=4
    )
    subset = DecisionTreeClassifier(max_depth=4, random_state=0).fit(x[keep], y[keep])
    np.testing.assert_allclose(
        np.asarray(predict_tree(weighted, x)), subset.predict_proba(x), atol=1e-6
    )

    # Nothing varies: the root is a leaf predicting the class frequencies.
    flat = fit_tree(
        np.ones((60, 3), np.float32), y, jax.random.key(0), ones, num_classes=2, max_depth=4
    )
    assert used(flat)[0].sum() == 1
    np.testing.assert_allclose(np.asarray(predict_tree(flat, x[:1]))[0], np.bincount(y) / 60)
    assert np.asarray(feature_importances(flat)).sum() == 0


def test_bad_settings_are_named():
    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int32)
    with pytest.raises(ValueError, match="num_classes"):
        fit_tree(x, y, jax.random.key(0), max_depth=2)
    with pytest.raises(ValueError, match="criterion"):
        fit_tree(x, y, jax.random.key(0), num_classes=2, criterion="squared_error", max_depth=2)
    with pytest.raises(ValueError, match="max_features"):
        fit_tree(x, y, jax.random.key(0), num_classes=2, max_depth=2, max_features="all")
