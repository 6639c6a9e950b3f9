"""Random forests: ``jax.vmap`` of the tree fit over keys and bootstrap weights."""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp

from jaxtrain.models.trees.grow import feature_importances, grow, predict_tree
from jaxtrain.models.trees.levels import presort
from jaxtrain.models.trees.tree import MaxFeatures, Tree, check_settings

# --- forests ---------------------------------------------------------------------------------


@functools.partial(
    jax.jit,
    static_argnames=(
        "n_estimators",
        "bootstrap",
        "task",
        "num_classes",
        "criterion",
        "max_depth",
        "min_samples_split",
        "min_samples_leaf",
        "max_features",
        "trees_per_step",
    ),
)
def fit_forest(
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    weights: jax.Array | None = None,
    *,
    n_estimators: int = 100,
    bootstrap: bool = True,
    task: Literal["classification", "regression"] = "classification",
    num_classes: int | None = None,
    criterion: str | None = None,
    max_depth: int | None,
    min_samples_split: int = 2,
    min_samples_leaf: int = 1,
    max_features: MaxFeatures = "sqrt",
    trees_per_step: int | None = None,
) -> Tree:
    """A random forest: ``fit_tree`` vmapped over per-tree keys and bootstrap weights.

    Each tree sees ``weights`` (ones if None) times multinomial bootstrap counts (n draws with
    replacement, as scikit-learn) when ``bootstrap``; the features are sorted once for all.
    ``trees_per_step``: None fits all trees in one ``vmap`` (best on an accelerator); ``k``
    fits them ``k`` at a time with ``lax.map`` (on CPU, 1 is several times faster). Either
    way tree ``i`` is the same. The other settings are ``fit_tree``'s.

    Returns a ``Tree`` whose arrays have a leading ``[n_estimators]`` axis.
    """
    criterion = check_settings(
        task, criterion, num_classes, max_depth, min_samples_split, min_samples_leaf
    )
    x = jnp.asarray(x, jnp.float32)
    n = x.shape[0]
    base = jnp.ones(n, jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    fit = functools.partial(
        grow,
        x,
        y,
        task=task,
        num_classes=num_classes,
        criterion=criterion,
        max_depth=max_depth,
        min_samples_split=min_samples_split,
        min_samples_leaf=min_samples_leaf,
        max_features=max_features,
    )
    presorted = presort(x)

    def one_tree(tree_key: jax.Array) -> Tree:
        draw_key, split_key = jax.random.split(tree_key)
        w = base
        if bootstrap:
            draws = jax.random.randint(draw_key, (n,), 0, n)
            w = w * jnp.zeros(n, jnp.float32).at[draws].add(1.0)
        return fit(split_key, w, presorted)

    keys = jax.random.split(key, n_estimators)
    if trees_per_step is None:
        return jax.vmap(one_tree)(keys)
    return jax.lax.map(one_tree, keys, batch_size=None if trees_per_step == 1 else trees_per_step)


@jax.jit
def predict_forest(forest: Tree, x: jax.Array) -> jax.Array:
    """``f32[n, K]``: the trees' probabilities (or predictions) averaged, as scikit-learn."""
    return jax.vmap(predict_tree, in_axes=(0, None))(forest, x).mean(axis=0)


@jax.jit
def forest_feature_importances(forest: Tree) -> jax.Array:
    """``f32[d]``: per-tree importances averaged over trees that split at all, summing to 1."""
    per_tree = jax.vmap(feature_importances)(forest)
    splits = ~forest.is_leaf[:, 0]
    mean = (per_tree * splits[:, None]).sum(0) / jnp.maximum(splits.sum(), 1)
    norm = mean.sum()
    return jnp.where(norm > 0, mean / jnp.where(norm > 0, norm, 1.0), 0.0)
