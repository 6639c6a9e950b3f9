"""Fitting one tree level by level, and predicting with it."""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp

from jaxtrain.models.trees.levels import find_splits, presort, repartition, write_nodes
from jaxtrain.models.trees.tree import (
    MaxFeatures,
    Tree,
    check_settings,
    impurity_and_value,
    resolve_max_features,
)

# --- fit / predict ---------------------------------------------------------------------------


def _capacity(n: int, max_depth: int | None, min_samples_leaf: int) -> tuple[int, int]:
    """(node slots M, slots per level) that no fit can exceed."""
    max_leaves = max(1, n // min_samples_leaf)
    if max_depth is not None:
        max_leaves = min(max_leaves, 2**max_depth)
    return 2 * max_leaves - 1, max_leaves


@functools.partial(
    jax.jit,
    static_argnames=(
        "task",
        "num_classes",
        "criterion",
        "max_depth",
        "min_samples_split",
        "min_samples_leaf",
        "max_features",
    ),
)
def fit_tree(
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    weights: jax.Array | None = None,
    *,
    task: Literal["classification", "regression"] = "classification",
    num_classes: int | None = None,
    criterion: str | None = None,
    max_depth: int | None,
    min_samples_split: int = 2,
    min_samples_leaf: int = 1,
    max_features: MaxFeatures = None,
) -> Tree:
    """Fit one CART tree, as ``sklearn.tree.DecisionTree{Classifier,Regressor}`` would.

    Args:
      x: ``f32[n, d]`` features.
      y: ``i32[n]`` labels in ``[0, num_classes)`` (classification) or ``f32[n]`` targets.
      key: PRNG key for the per-node feature draws (unused when ``max_features`` covers d).
      weights: ``f32[n]`` sample weights, or None for ones; examples of weight 0 are left out
        entirely (bootstrap counts are weights).
      task, num_classes, criterion: ``'gini'`` (default) or ``'entropy'`` for classification,
        ``'squared_error'`` for regression. All settings are static under ``jit``.
      max_depth: the deepest level (root 0), or None to grow until the leaves are pure.
      min_samples_split, min_samples_leaf: as in scikit-learn (counts of examples).
      max_features: features drawn per node: None (all), an int, a fraction, 'sqrt', 'log2'.

    Returns:
      A ``Tree`` with ``min(2 ** (max_depth + 1), 2 * (n // min_samples_leaf)) - 1`` slots.
      Vmappable over ``key`` and ``weights``.
    """
    criterion = check_settings(
        task, criterion, num_classes, max_depth, min_samples_split, min_samples_leaf
    )
    x = jnp.asarray(x, jnp.float32)
    return grow(
        x,
        y,
        key,
        weights,
        presort(x),
        task=task,
        num_classes=num_classes,
        criterion=criterion,
        max_depth=max_depth,
        min_samples_split=min_samples_split,
        min_samples_leaf=min_samples_leaf,
        max_features=max_features,
    )


def grow(
    x,
    y,
    key,
    weights,
    presorted,
    *,
    task,
    num_classes,
    criterion,
    max_depth,
    min_samples_split,
    min_samples_leaf,
    max_features,
) -> Tree:
    """``fit_tree`` given ``presort(x)`` (shared by all the trees of a forest)."""
    n, d = x.shape
    mf = resolve_max_features(max_features, d)
    capacity, width = _capacity(n, max_depth, min_samples_leaf)
    depth_limit = n if max_depth is None else max_depth
    min_count = max(min_samples_split, 2 * min_samples_leaf)
    w = jnp.ones(n, jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
    if task == "classification":
        y = jnp.asarray(y, jnp.int32)
        stat = w[:, None] * jax.nn.one_hot(y, num_classes, dtype=jnp.float32)
        columns, split_classes = (y, w), num_classes
        y_shift = jnp.zeros((), jnp.float32)
    else:
        y = jnp.asarray(y, jnp.float32)
        y_shift = y.mean()  # centred targets keep the f32 sums of y and y^2 accurate
        yc = y - y_shift
        stat = jnp.stack([w, w * yc, w * yc * yc], axis=1)
        columns, split_classes = (w, w * yc), None

    order, group = presorted
    node = jnp.where(w > 0, 0, width).astype(jnp.int32)  # the root holds weight > 0
    order, seg, seg_start, counts = repartition(
        order, node, jnp.zeros(n, jnp.int32), jnp.zeros(width + 1, jnp.int32), width
    )
    slots = jnp.arange(width, dtype=jnp.int32)
    tree = dict(
        feature=jnp.full(capacity, -1, jnp.int32),
        threshold=jnp.zeros(capacity, jnp.float32),
        left=jnp.full(capacity, -1, jnp.int32),
        right=jnp.full(capacity, -1, jnp.int32),
        value=jnp.zeros((capacity, stat.shape[1] if task == "classification" else 1)),
        impurity=jnp.zeros(capacity, jnp.float32),
        weighted_n_node_samples=jnp.zeros(capacity, jnp.float32),
        n_node_samples=jnp.zeros(capacity, jnp.int32),
        depth=jnp.zeros(capacity, jnp.int32),
    )
    level_splits = functools.partial(
        find_splits,
        x,
        group,
        columns,
        criterion=criterion,
        num_classes=split_classes,
        min_leaf=min_samples_leaf,
        max_features=mf,
    )

    def grow_level(state):
        """Record one level's nodes, split those that can, and lay out the next level."""
        order, seg, seg_start, counts, node, node_id, next_id, level, tree = state
        live = counts > 0
        totals = jax.ops.segment_sum(stat, node, width)
        impurity, weight, value = impurity_and_value(criterion, totals)
        if task == "classification":
            pure = (totals > 0).sum(-1) <= 1
        else:
            pure = jax.ops.segment_max(y, node, width) <= jax.ops.segment_min(y, node, width)
        tree = write_nodes(
            tree,
            jnp.where(live, node_id, capacity),
            value=value,
            impurity=impurity,
            weighted_n_node_samples=weight,
            n_node_samples=counts,
            depth=jnp.full(width, level),
        )
        can_split = live & (counts >= min_count) & ~pure & (level < depth_limit)

        def split_level(_):
            feature, threshold, split = level_splits(
                order, seg, seg_start, counts, totals, can_split, jax.random.fold_in(key, level)
            )
            # Route examples to children 2r / 2r + 1 of the r-th split slot; the rest leave.
            rank = jnp.cumsum(split, dtype=jnp.int32) - 1
            j = jnp.minimum(node, width - 1)
            right = x[jnp.arange(n), feature[j]] > threshold[j]
            new_node = jnp.where((node < width) & split[j], 2 * rank[j] + right, width)
            layout = repartition(order, new_node, seg, seg_start, width)
            return feature, threshold, split, rank, new_node, layout

        def stop(_):  # no node can split: the loop ends after this level
            nothing = jnp.zeros(width, jnp.int32)
            layout = (order, seg, seg_start, nothing)
            no_split = jnp.zeros(width, bool)
            return nothing, jnp.zeros(width), no_split, nothing, jnp.full(n, width), layout

        feature, threshold, split, rank, new_node, layout = jax.lax.cond(
            can_split.any(), split_level, stop, None
        )
        child = next_id + 2 * rank
        tree = write_nodes(
            tree,
            jnp.where(split, node_id, capacity),
            feature=feature,
            threshold=threshold,
            left=child,
            right=child + 1,
        )
        next_ids = next_id + 2 * split.sum(dtype=jnp.int32)
        return (*layout, new_node, next_id + slots, next_ids, level + 1, tree)

    # Loop state: the sorted layout, each example's slot, each slot's node id, counters.
    state = (order, seg, seg_start, counts, node, slots, jnp.int32(1), jnp.int32(0), tree)
    state = jax.lax.while_loop(lambda s: (s[3] > 0).any(), grow_level, state)
    tree = state[-1]
    split = tree["left"] >= 0
    weighted_impurity = tree["weighted_n_node_samples"] * tree["impurity"]
    decrease = (
        weighted_impurity
        - weighted_impurity[jnp.maximum(tree["left"], 0)]
        - weighted_impurity[jnp.maximum(tree["right"], 0)]
    )
    root_weight = jnp.maximum(tree["weighted_n_node_samples"][0], 1e-30)
    tree["value"] = tree["value"] + y_shift
    return Tree(
        **tree,
        is_leaf=~split,
        impurity_decrease=jnp.where(split, decrease, 0.0) / root_weight,
        num_features=d,
    )


@jax.jit
def apply_tree(tree: Tree, x: jax.Array) -> jax.Array:
    """The leaf each example reaches: ``x: f32[n, d] -> i32[n]`` node ids."""
    x = jnp.asarray(x, jnp.float32)
    rows = jnp.arange(x.shape[0])

    def descend(node: jax.Array) -> jax.Array:
        goes_left = x[rows, jnp.maximum(tree.feature[node], 0)] <= tree.threshold[node]
        child = jnp.where(goes_left, tree.left[node], tree.right[node])
        return jnp.where(tree.is_leaf[node], node, child)

    node = jnp.zeros(x.shape[0], jnp.int32)
    return jax.lax.while_loop(lambda node: (~tree.is_leaf[node]).any(), descend, node)


@jax.jit
def predict_tree(tree: Tree, x: jax.Array) -> jax.Array:
    """``x: f32[n, d] -> f32[n, K]``: class probabilities, or the prediction (K = 1)."""
    return tree.value[apply_tree(tree, x)]


@jax.jit
def feature_importances(tree: Tree) -> jax.Array:
    """``f32[d]``: total impurity decrease per feature, summing to 1 (0s for a lone leaf),
    like scikit-learn's ``feature_importances_``."""
    feature = jnp.maximum(tree.feature, 0)
    total = jnp.zeros(tree.num_features, jnp.float32).at[feature].add(tree.impurity_decrease)
    norm = total.sum()
    return jnp.where(norm > 0, total / jnp.where(norm > 0, norm, 1.0), 0.0)
