"""The fitted tree as arrays, its settings, and the impurity arithmetic of a node."""

from __future__ import annotations

import math
from typing import Literal

import flax.struct
import jax
import jax.numpy as jnp

# scikit-learn's FEATURE_THRESHOLD: values closer than this count as the same value.
FEATURE_THRESHOLD = 1e-7
INVALID = -1e30  # score of a position that separates two values but breaks min_samples_leaf

CRITERIA = {"classification": ("gini", "entropy"), "regression": ("squared_error",)}
MaxFeatures = None | int | float | Literal["sqrt", "log2"]


@flax.struct.dataclass
class Tree:
    """A fitted tree (or, with a leading ``[n_estimators]`` axis on every array, a forest).

    ``M`` node slots, numbered breadth-first from the root 0 (a node's children have larger
    ids); ``M = min(2 ** (max_depth + 1), 2 * (n // min_samples_leaf)) - 1`` bounds any fit,
    and slots a fit does not use have ``n_node_samples == 0``. ``K`` is the number of classes
    (classification) or 1 (regression).

    - ``feature: i32[M]``: feature a split node tests; -1 at leaves.
    - ``threshold: f32[M]``: an example goes left when ``x[feature] <= threshold``.
    - ``left, right: i32[M]``: children's ids; -1 at leaves.
    - ``value: f32[M, K]``: class probabilities (weighted fractions) or the mean target.
    - ``impurity: f32[M]``: gini, entropy (bits) or variance, as scikit-learn's ``tree_``.
    - ``weighted_n_node_samples: f32[M]``: total training weight reaching the node.
    - ``n_node_samples: i32[M]``: training examples (of nonzero weight) reaching the node.
    - ``depth: i32[M]``: the node's level, root 0.
    - ``is_leaf: bool[M]``: True also for unused slots.
    - ``impurity_decrease: f32[M]``: ``(w * impurity - w_left * impurity_left - w_right *
      impurity_right) / w_root`` at split nodes, 0 at leaves (``w``: weighted sample count).
    - ``num_features``: static, the ``d`` the tree was fitted on.
    """

    feature: jax.Array
    threshold: jax.Array
    left: jax.Array
    right: jax.Array
    value: jax.Array
    impurity: jax.Array
    weighted_n_node_samples: jax.Array
    n_node_samples: jax.Array
    depth: jax.Array
    is_leaf: jax.Array
    impurity_decrease: jax.Array
    num_features: int = flax.struct.field(pytree_node=False)


def resolve_max_features(max_features: MaxFeatures, num_features: int) -> int:
    """scikit-learn's rule: how many features each node draws (at least 1, at most ``d``)."""
    if max_features is None:
        count = num_features
    elif max_features == "sqrt":
        count = int(math.sqrt(num_features))
    elif max_features == "log2":
        count = int(math.log2(num_features))
    elif isinstance(max_features, bool) or not isinstance(max_features, int | float):
        raise ValueError(
            f"max_features must be None, an int, a float in (0, 1], 'sqrt' or 'log2'; "
            f"got {max_features!r}"
        )
    elif isinstance(max_features, float):
        if not 0.0 < max_features <= 1.0:
            raise ValueError(f"max_features as a float is a fraction in (0, 1]; got {max_features}")
        count = int(max_features * num_features)
    else:
        if max_features < 1:
            raise ValueError(f"max_features as an int must be >= 1; got {max_features}")
        count = max_features
    return max(1, min(count, num_features))


def check_settings(task, criterion, num_classes, max_depth, min_samples_split, min_samples_leaf):
    if task not in CRITERIA:
        raise ValueError(f"task must be 'classification' or 'regression'; got {task!r}")
    criterion = criterion or CRITERIA[task][0]
    if criterion not in CRITERIA[task]:
        raise ValueError(
            f"criterion {criterion!r} does not fit task {task!r}; use one of {CRITERIA[task]}"
        )
    if task == "classification" and (num_classes is None or num_classes < 1):
        raise ValueError(
            "classification needs num_classes (an int >= 1, e.g. int(y.max()) + 1): "
            "a jitted fit cannot read it from the labels"
        )
    if max_depth is not None and (not isinstance(max_depth, int) or max_depth < 0):
        raise ValueError(f"max_depth must be None or an int >= 0; got {max_depth!r}")
    if min_samples_split < 2 or min_samples_leaf < 1:
        raise ValueError(
            f"need min_samples_split >= 2 and min_samples_leaf >= 1; got {min_samples_split}, "
            f"{min_samples_leaf}"
        )
    return criterion


# --- node statistics -------------------------------------------------------------------------
# Per-example statistics ``stat: f32[n, S]`` whose sums over a node give everything needed:
# classification: weighted one-hot labels (S = K); regression: (w, w y, w y^2) (S = 3).
# The split search builds the first ones on the fly from ``columns`` (label and weight, or
# weight and weighted target): gathering a [n, S, d] array per level would cost more than the
# whole search.


def stats_at(columns: tuple[jax.Array, ...], num_classes: int | None) -> jax.Array:
    """The statistics of one position of every feature, ``f32[S, d]`` (S = K, or 2: w, w y)."""
    if num_classes is None:
        return jnp.stack(columns)
    label, weight = columns
    return (label[None, :] == jnp.arange(num_classes)[:, None]) * weight[None, :]


def proxy(criterion: str, left: jax.Array, right: jax.Array) -> jax.Array:
    """scikit-learn's proxy impurity improvement (argmax-equivalent), ``[S, d] -> [d]``."""
    if criterion == "gini":
        return (left * left).sum(0) / left.sum(0) + (right * right).sum(0) / right.sum(0)
    if criterion == "entropy":
        w_l, w_r = left.sum(0), right.sum(0)
        xlogx = jax.scipy.special.xlogy
        return (
            xlogx(left, left).sum(0)
            - xlogx(w_l, w_l)
            + xlogx(right, right).sum(0)
            - xlogx(w_r, w_r)
        )
    return left[1] ** 2 / left[0] + right[1] ** 2 / right[0]


def impurity_and_value(criterion: str, totals: jax.Array) -> tuple[jax.Array, ...]:
    """``totals: f32[nodes, S]`` -> impurity f32[nodes], weight f32[nodes], value f32[nodes, K]."""
    if criterion == "squared_error":
        weight = totals[:, 0]
        safe = jnp.where(weight > 0, weight, 1.0)
        mean = totals[:, 1] / safe
        impurity = jnp.maximum(totals[:, 2] / safe - mean**2, 0.0)
        return impurity, weight, mean[:, None]
    weight = totals.sum(-1)
    p = totals / jnp.where(weight > 0, weight, 1.0)[:, None]
    if criterion == "gini":
        impurity = 1.0 - (p * p).sum(-1)
    else:
        impurity = -jax.scipy.special.xlogy(p, p).sum(-1) / math.log(2.0)
    return impurity, weight, p
