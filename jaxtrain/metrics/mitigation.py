"""Fairness mitigations: reweighing before training, per-group thresholds after it.

``reweighing_weights`` (pre-processing, Kamiran & Calders 2012) gives per-example loss
weights under which the label is independent of the group; ``group_thresholds`` with
``apply_thresholds`` (post-processing) picks one decision threshold per group. Pure JAX,
jittable with the counts static (``static_argnames=("num_groups", "num_classes")``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpy.typing import ArrayLike

from jaxtrain.metrics._common import bool_mask, divide_or_zero, static_int

_CONSTRAINTS = ("demographic_parity", "equal_opportunity")
_DEFAULT_GRID_SIZE = 101  # thresholds 0.00, 0.01, ..., 1.00


def reweighing_weights(
    labels: ArrayLike,
    groups: ArrayLike,
    num_groups: int,
    num_classes: int,
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Kamiran & Calders (2012) reweighing: per-example loss weights that decorrelate label
    and group.

    Each example of group g and class y gets ``w(g, y) = P(g) P(y) / P(g, y)`` (empirical
    frequencies over the valid rows). Under these weights the weighted joint distribution is
    ``P(g) P(y)``, so the weighted ``P(y | g) = P(y)`` for every group: the label carries no
    information about the group. The weights average to 1 over the valid rows, so a weighted
    mean loss keeps its scale. Pass them as per-example weights to the loss.

    Args:
      labels: i32[n] classes in ``[0, num_classes)``.
      groups: i32[n] groups in ``[0, num_groups)``.
      num_groups, num_classes: Python ints (static under jit).
      mask: optional bool[n]; padding rows (and rows with a label or group out of range) get
        weight 0 and are not counted.

    Returns:
      f32[n] weights.
    """
    num_groups = static_int(num_groups, "num_groups", "reweighing_weights")
    num_classes = static_int(num_classes, "num_classes", "reweighing_weights")
    labels = jnp.asarray(labels).astype(jnp.int32)
    groups = jnp.asarray(groups).astype(jnp.int32)
    if labels.ndim != 1 or labels.shape != groups.shape:
        raise ValueError(
            "reweighing_weights: labels and groups must both have shape [n]; got "
            f"{labels.shape} and {groups.shape}."
        )
    valid = (labels >= 0) & (labels < num_classes) & (groups >= 0) & (groups < num_groups)
    valid = valid & bool_mask(jnp, mask, labels.shape, "reweighing_weights")
    cell = groups * num_classes + labels
    joint = _bincount(cell, valid, num_groups * num_classes).reshape(num_groups, num_classes)
    total = joint.sum().astype(jnp.float32)
    p_joint = joint.astype(jnp.float32) / total
    p_group = p_joint.sum(axis=1, keepdims=True)
    p_class = p_joint.sum(axis=0, keepdims=True)
    # A cell with no examples never gets looked up by a valid row; 0 keeps the table finite.
    table = jnp.where(joint > 0, p_group * p_class / jnp.where(joint > 0, p_joint, 1.0), 0.0)
    weights = table.reshape(-1)[jnp.where(valid, cell, 0)]
    return jnp.where(valid, weights, 0.0).astype(jnp.float32)


def group_thresholds(
    scores: ArrayLike,
    y_true: ArrayLike,
    groups: ArrayLike,
    num_groups: int,
    constraint: str = "demographic_parity",
    grid: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    base_threshold: float = 0.5,
) -> jax.Array:
    """Post-processing: one decision threshold per group that equalises a rate across groups.

    The rule, exactly:

    1. The target rate is the overall rate (all valid rows, all groups) of the unconstrained
       classifier ``score >= base_threshold``: its selection rate for
       ``constraint="demographic_parity"``, its true positive rate for
       ``"equal_opportunity"``.
    2. For each group g and each grid threshold t, the group's rate of ``score >= t``
       (selection rate, or TPR over the group's positives) and its accuracy.
    3. Each group gets the grid threshold whose rate is closest to the target; among
       thresholds equally close (they give the same rate) the one with the highest accuracy
       within the group; among those, the smallest threshold.
    4. A group whose rate is undefined (no examples; for equal opportunity, no positives)
       keeps ``base_threshold``.

    Every group's rate then lies within one grid step of the target (as far as its scores
    allow), so the gap between groups shrinks; accuracy only breaks ties, so it may drop.
    Memory is O(len(grid) * n). Jittable with ``num_groups`` and ``constraint`` static.

    Args:
      scores: f32[n] positive-class scores (probabilities, or any score; set ``grid``).
      y_true: i32[n] true labels, 1 positive.
      groups: i32[n] groups in ``[0, num_groups)``.
      num_groups: G, a Python int.
      constraint: "demographic_parity" or "equal_opportunity".
      grid: f32[T] candidate thresholds; default 0.00, 0.01, ..., 1.00.
      mask: optional bool[n]; padding rows are ignored.
      base_threshold: the unconstrained classifier's threshold (defines the target).

    Returns:
      f32[G] thresholds; predict with ``apply_thresholds``.
    """
    num_groups = static_int(num_groups, "num_groups", "group_thresholds")
    if constraint not in _CONSTRAINTS:
        raise ValueError(
            f"group_thresholds: constraint must be one of {_CONSTRAINTS}, got {constraint!r}."
        )
    scores = jnp.asarray(scores, jnp.float32)
    y_true = jnp.asarray(y_true).astype(jnp.int32)
    groups = jnp.asarray(groups).astype(jnp.int32)
    if y_true.ndim != 1 or groups.shape != y_true.shape:
        raise ValueError(
            "group_thresholds: y_true and groups must both have shape [n]; got "
            f"{y_true.shape} and {groups.shape}."
        )
    valid = (groups >= 0) & (groups < num_groups) & bool_mask(jnp, mask, y_true.shape, "fairness")
    if scores.shape != y_true.shape:
        raise ValueError(
            f"group_thresholds: scores must have shape {y_true.shape} like y_true; "
            f"got {scores.shape}."
        )
    grid = jnp.linspace(0.0, 1.0, _DEFAULT_GRID_SIZE) if grid is None else grid
    grid = jnp.asarray(grid, jnp.float32)
    if grid.ndim != 1 or grid.shape[0] == 0:
        raise ValueError(f"group_thresholds: grid must have shape [T], T >= 1; got {grid.shape}.")

    positive = y_true == 1
    # Which rows the constrained rate is computed over.
    base = positive if constraint == "equal_opportunity" else jnp.ones_like(positive)
    base = base & valid
    unconstrained = scores >= base_threshold
    target = divide_or_zero(jnp, jnp.sum(base & unconstrained), jnp.sum(base))

    def per_group(selected: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Numerator of the rate and number correct, per group, for one threshold."""
        hits = _bincount(groups, base & selected, num_groups)
        correct = _bincount(groups, valid & (selected == positive), num_groups)
        return hits, correct

    selected = scores[None, :] >= grid[:, None]  # bool[T, n]
    hits, correct = jax.vmap(per_group)(selected)  # i32[T, G] each
    denominator = _bincount(groups, base, num_groups)  # i32[G]
    count = _bincount(groups, valid, num_groups)
    rate = divide_or_zero(jnp, hits, denominator[None, :])
    accuracy = divide_or_zero(jnp, correct, count[None, :])

    distance = jnp.abs(rate - target)
    closest = distance == jnp.min(distance, axis=0, keepdims=True)
    best = jnp.argmax(jnp.where(closest, accuracy, -1.0), axis=0)  # first max: smallest t
    return jnp.where(denominator > 0, grid[best], jnp.float32(base_threshold))


def apply_thresholds(scores: ArrayLike, groups: ArrayLike, thresholds: ArrayLike) -> jax.Array:
    """i32[n] predictions ``scores >= thresholds[groups]``.

    Args:
      scores: f32[n] positive-class scores.
      groups: i32[n] groups in ``[0, G)`` (out-of-range indices are clamped by JAX, so check
        them beforehand).
      thresholds: f32[G], e.g. from ``group_thresholds``.
    """
    scores = jnp.asarray(scores)
    groups = jnp.asarray(groups).astype(jnp.int32)
    thresholds = jnp.asarray(thresholds, jnp.float32)
    if scores.shape != groups.shape or thresholds.ndim != 1:
        raise ValueError(
            "apply_thresholds: scores and groups must have shape [n] and thresholds [G]; got "
            f"{scores.shape}, {groups.shape} and {thresholds.shape}."
        )
    return (scores >= thresholds[groups]).astype(jnp.int32)


def _bincount(index: jax.Array, weight: jax.Array, length: int) -> jax.Array:
    """i32[length] count of rows with ``weight`` True per index; integer scatter-add, exact on
    every backend. Rows with ``weight`` False add 0 at index 0."""
    index = jnp.where(weight, index, 0).astype(jnp.int32)
    return jnp.zeros(length, jnp.int32).at[index].add(weight.astype(jnp.int32))


__all__ = ["apply_thresholds", "group_thresholds", "reweighing_weights"]
