"""Group fairness: per-group rates, disparity scores equal to fairlearn's, and two mitigations.

Everything here is pure JAX and jittable with the group count static
(``jax.jit(fn, static_argnames="num_groups")``). The task is binary with positive label 1:
``y_pred == 1`` is a selection, ``y_true == 1`` a positive.

Measurement follows the shape of ``classification``: ``group_confusion`` is an additive
reduction (sum it over batches and devices), ``group_rates`` turns counts into rates. The
disparity scores equal fairlearn's ``demographic_parity_difference``/``_ratio`` and
``equalized_odds_difference``/``_ratio`` (``method="between_groups"``, ``agg="worst_case"``),
including its conventions where a rate has no denominator:

- a group with no examples at all (count 0) is *absent*: fairlearn never sees it, so it takes
  no part in any max/min; its rates in ``group_metrics`` are NaN.
- a present group with no true positives has true positive rate 0.0 (and with no true
  negatives false positive rate 0.0): fairlearn computes these rates with scikit-learn's
  ``confusion_matrix(normalize="true")``, which maps 0/0 to 0. Such a group *does* take part
  in the max/min, exactly as in fairlearn.
- a ratio whose largest rate is 0 is NaN (0/0), as in fairlearn; when no group is present
  every score is NaN.

Mitigations: ``reweighing_weights`` (pre-processing, Kamiran & Calders 2012) gives per-example
loss weights under which the label is independent of the group; ``group_thresholds`` with
``apply_thresholds`` (post-processing) picks one decision threshold per group.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp
from numpy.typing import ArrayLike

_CONSTRAINTS = ("demographic_parity", "equal_opportunity")
_DEFAULT_GRID_SIZE = 101  # thresholds 0.00, 0.01, ..., 1.00


def group_confusion(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike,
    num_groups: int,
    mask: ArrayLike | None = None,
) -> jax.Array:
    """Per-group binary confusion counts; pure, jittable, additive over batches.

    Args:
      y_true: i32[n] true labels; 1 is positive, anything else negative.
      y_pred: i32[n] predicted labels; 1 is a selection, anything else not.
      groups: i32[n] group of each example, in ``[0, num_groups)``; rows outside are dropped.
      num_groups: G, a Python int (static under jit).
      mask: optional bool[n]; rows where it is False are padding and are not counted.

    Returns:
      i32[G, 2, 2]: entry ``[g, t, p]`` counts examples of group g with ``(y_true == 1) == t``
      and ``(y_pred == 1) == p`` (rows true, columns predicted, negative first, like
      scikit-learn's ``confusion_matrix(labels=[0, 1])`` within each group).
    """
    num_groups = _static_count(num_groups, "num_groups", "group_confusion")
    y_true, y_pred, groups, valid = _inputs(y_true, y_pred, groups, num_groups, mask)
    cell = groups * 4 + (y_true == 1).astype(jnp.int32) * 2 + (y_pred == 1).astype(jnp.int32)
    return _bincount(cell, valid, num_groups * 4).reshape(num_groups, 2, 2)


def group_rates(confusion: ArrayLike) -> dict[str, jax.Array]:
    """Rates per group from ``group_confusion`` counts (summed over batches if you like).

    Returns a dict of arrays of length G: ``count`` (i32), and f32 ``accuracy``,
    ``selection_rate`` (P(pred=1)), ``true_positive_rate`` (P(pred=1 | y=1)) and
    ``false_positive_rate`` (P(pred=1 | y=0)). Rates of an absent group (count 0) are NaN; a
    present group without positives (negatives) has TPR (FPR) 0.0, fairlearn's value.
    """
    c = jnp.asarray(confusion).astype(jnp.int32)
    tn, fp, fn, tp = c[:, 0, 0], c[:, 0, 1], c[:, 1, 0], c[:, 1, 1]
    count = tn + fp + fn + tp
    present = count > 0
    nan = jnp.float32(jnp.nan)

    def rate(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
        value = _divide(numerator, denominator)  # 0 where denominator is 0
        return jnp.where(present, value, nan)

    return {
        "count": count,
        "accuracy": rate(tp + tn, count),
        "selection_rate": rate(tp + fp, count),
        "true_positive_rate": rate(tp, tp + fn),
        "false_positive_rate": rate(fp, fp + tn),
    }


def group_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike,
    num_groups: int,
    mask: ArrayLike | None = None,
) -> dict[str, jax.Array]:
    """Count, accuracy, selection rate, TPR and FPR per group; see ``group_rates``.

    Each value equals ``fairlearn.metrics.MetricFrame(...).by_group`` of ``accuracy_score``,
    ``selection_rate``, ``true_positive_rate`` and ``false_positive_rate`` for the groups
    present; absent groups (count 0) get NaN rates.
    """
    return group_rates(group_confusion(y_true, y_pred, groups, num_groups, mask))


def demographic_parity_difference(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike,
    num_groups: int,
    mask: ArrayLike | None = None,
) -> jax.Array:
    """f32[]: largest minus smallest selection rate over the groups present (0 = parity)."""
    rates = group_metrics(y_true, y_pred, groups, num_groups, mask)
    return _difference(rates["selection_rate"], rates["count"] > 0)


def demographic_parity_ratio(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike,
    num_groups: int,
    mask: ArrayLike | None = None,
) -> jax.Array:
    """f32[]: smallest over largest selection rate over the groups present (1 = parity);
    NaN when no group is selected at all (0/0, as fairlearn)."""
    rates = group_metrics(y_true, y_pred, groups, num_groups, mask)
    return _ratio(rates["selection_rate"], rates["count"] > 0)


def equalized_odds_difference(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike,
    num_groups: int,
    mask: ArrayLike | None = None,
) -> jax.Array:
    """f32[]: the larger of the TPR difference and the FPR difference between groups."""
    rates = group_metrics(y_true, y_pred, groups, num_groups, mask)
    present = rates["count"] > 0
    tpr = _difference(rates["true_positive_rate"], present)
    fpr = _difference(rates["false_positive_rate"], present)
    return jnp.where(fpr > tpr, fpr, tpr)  # Python's max([tpr, fpr]), as fairlearn


def equalized_odds_ratio(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike,
    num_groups: int,
    mask: ArrayLike | None = None,
) -> jax.Array:
    """f32[]: the smaller of the TPR ratio and the FPR ratio between groups.

    A ratio is NaN when its largest rate is 0. The two are combined as fairlearn does, with
    Python's ``min([tpr_ratio, fpr_ratio])``: an undefined FPR ratio (no false positive in any
    group) gives the TPR ratio, an undefined TPR ratio gives NaN.
    """
    rates = group_metrics(y_true, y_pred, groups, num_groups, mask)
    present = rates["count"] > 0
    tpr = _ratio(rates["true_positive_rate"], present)
    fpr = _ratio(rates["false_positive_rate"], present)
    return jnp.where(fpr < tpr, fpr, tpr)


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
    num_groups = _static_count(num_groups, "num_groups", "reweighing_weights")
    num_classes = _static_count(num_classes, "num_classes", "reweighing_weights")
    labels = jnp.asarray(labels).astype(jnp.int32)
    groups = jnp.asarray(groups).astype(jnp.int32)
    if labels.ndim != 1 or labels.shape != groups.shape:
        raise ValueError(
            "reweighing_weights: labels and groups must both have shape [n]; got "
            f"{labels.shape} and {groups.shape}."
        )
    valid = (labels >= 0) & (labels < num_classes) & (groups >= 0) & (groups < num_groups)
    valid = valid & _mask(mask, labels.shape, "reweighing_weights")
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
    num_groups = _static_count(num_groups, "num_groups", "group_thresholds")
    if constraint not in _CONSTRAINTS:
        raise ValueError(
            f"group_thresholds: constraint must be one of {_CONSTRAINTS}, got {constraint!r}."
        )
    scores = jnp.asarray(scores, jnp.float32)
    y_true, _, groups, valid = _inputs(y_true, y_true, groups, num_groups, mask)
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
    target = _divide(jnp.sum(base & unconstrained), jnp.sum(base))

    def per_group(selected: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Numerator of the rate and number correct, per group, for one threshold."""
        hits = _bincount(groups, base & selected, num_groups)
        correct = _bincount(groups, valid & (selected == positive), num_groups)
        return hits, correct

    selected = scores[None, :] >= grid[:, None]  # bool[T, n]
    hits, correct = jax.vmap(per_group)(selected)  # i32[T, G] each
    denominator = _bincount(groups, base, num_groups)  # i32[G]
    count = _bincount(groups, valid, num_groups)
    rate = _divide(hits, denominator[None, :])
    accuracy = _divide(correct, count[None, :])

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


# ---------------------------------------------------------------------------------------------
# helpers


def _difference(values: jax.Array, present: jax.Array) -> jax.Array:
    """max - min over present groups; NaN when none is present."""
    high = jnp.max(jnp.where(present, values, -jnp.inf))
    low = jnp.min(jnp.where(present, values, jnp.inf))
    return jnp.where(jnp.any(present), high - low, jnp.nan).astype(jnp.float32)


def _ratio(values: jax.Array, present: jax.Array) -> jax.Array:
    """min / max over present groups; NaN when none is present or the max is 0."""
    high = jnp.max(jnp.where(present, values, -jnp.inf))
    low = jnp.min(jnp.where(present, values, jnp.inf))
    defined = jnp.any(present) & (high > 0)
    return jnp.where(defined, low / jnp.where(defined, high, 1.0), jnp.nan).astype(jnp.float32)


def _divide(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """f32 numerator / denominator, 0 where the denominator is 0 (scikit-learn's 0/0 -> 0)."""
    numerator = jnp.asarray(numerator).astype(jnp.float32)
    denominator = jnp.asarray(denominator).astype(jnp.float32)
    zero = denominator == 0
    return jnp.where(zero, 0.0, numerator / jnp.where(zero, 1.0, denominator))


def _bincount(index: jax.Array, weight: jax.Array, length: int) -> jax.Array:
    """i32[length] count of rows with ``weight`` True per index; integer scatter-add, exact on
    every backend. Rows with ``weight`` False add 0 at index 0."""
    index = jnp.where(weight, index, 0).astype(jnp.int32)
    return jnp.zeros(length, jnp.int32).at[index].add(weight.astype(jnp.int32))


def _inputs(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike,
    num_groups: int,
    mask: ArrayLike | None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Validated i32 arrays and the bool[n] rows to count."""
    y_true = jnp.asarray(y_true).astype(jnp.int32)
    y_pred = jnp.asarray(y_pred).astype(jnp.int32)
    groups = jnp.asarray(groups).astype(jnp.int32)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape or y_true.shape != groups.shape:
        raise ValueError(
            "fairness: y_true, y_pred and groups must all have shape [n]; got "
            f"{y_true.shape}, {y_pred.shape} and {groups.shape}."
        )
    valid = (groups >= 0) & (groups < num_groups) & _mask(mask, y_true.shape, "fairness")
    return y_true, y_pred, groups, valid


def _mask(mask: ArrayLike | None, shape: tuple[int, ...], where: str) -> jax.Array:
    if mask is None:
        return jnp.ones(shape, bool)
    mask = jnp.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"{where}: mask must have shape {shape}; got {mask.shape}.")
    return mask.astype(bool)


def _static_count(value: int, name: str, where: str) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{where}: {name} must be a Python int, got {type(value)}; under jax.jit pass "
            f'static_argnames="{name}".'
        ) from None
    if value < 1:
        raise ValueError(f"{where}: {name} must be >= 1, got {value}.")
    return value
