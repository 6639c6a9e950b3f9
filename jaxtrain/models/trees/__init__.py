"""Decision trees (CART) and random forests as array-backed pytrees, fitted in pure JAX.

A tree is a ``Tree`` of fixed-capacity arrays, so fitting is one jittable function and a
forest is ``jax.vmap(fit_tree)`` over keys and bootstrap weights.

The fit is exact CART as scikit-learn does it: the best threshold of every feature is searched
over the midpoints between consecutive distinct sorted values, scored by the weighted impurity
decrease, with ``min_samples_leaf``/``min_samples_split`` and per-node ``max_features`` draws.
It grows level by level in a ``lax.while_loop``. Each feature's examples are sorted once; after
each level they are stably partitioned so that every node's examples stay one contiguous,
sorted segment. One scan along the positions, all features side by side, then accumulates the
left child's statistics, scores every candidate threshold and keeps each segment's running
best. Memory is O(n * d + nodes * d) per level (plus a ``[classes, d]`` carry), and no Python
loop runs over nodes or levels. Features must be finite (no NaN).
"""

from jaxtrain.models.trees.forest import fit_forest, forest_feature_importances, predict_forest
from jaxtrain.models.trees.grow import apply_tree, feature_importances, fit_tree, predict_tree
from jaxtrain.models.trees.tree import (
    CRITERIA,
    FEATURE_THRESHOLD,
    MaxFeatures,
    Tree,
    resolve_max_features,
)

__all__ = [
    "CRITERIA",
    "FEATURE_THRESHOLD",
    "MaxFeatures",
    "Tree",
    "apply_tree",
    "feature_importances",
    "fit_forest",
    "fit_tree",
    "forest_feature_importances",
    "predict_forest",
    "predict_tree",
    "resolve_max_features",
]
