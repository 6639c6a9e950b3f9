"""Group fairness: per-group rates, disparity scores equal to fairlearn's, and two mitigations.

The task is binary with positive label 1: ``y_pred == 1`` is a selection, ``y_true == 1`` a
positive. The groups are given as fairlearn gives them, ``sensitive_features=`` (any values;
eagerly the groups are the sorted distinct values), or as jaxtrain's group ids ``groups`` in
``[0, num_groups)`` with ``num_groups`` a static Python int (required under ``jax.jit``:
``jax.jit(fn, static_argnames="num_groups")``). Eagerly inputs are checked (``ValueError``)
and the arithmetic is float64 NumPy; traced it is ``jax.numpy`` in float32.

Measurement follows the shape of ``classification``: ``group_confusion`` is an additive
reduction (sum it over batches and devices), ``group_rates`` turns counts into rates. The
disparity scores equal fairlearn's ``demographic_parity_difference``/``_ratio`` and
``equalized_odds_difference``/``_ratio`` (``method`` ``"between_groups"`` or ``"to_overall"``,
``agg`` ``"worst_case"`` or ``"mean"``, ``sample_weight``), including its conventions where a
rate has no denominator:

- a group with no rows at all is *absent*: fairlearn never sees it, so it takes no part in
  any max/min; its rates in ``group_metrics`` are NaN.
- a present group with no true positives has true positive rate 0.0 (and with no true
  negatives false positive rate 0.0): fairlearn computes these rates with scikit-learn's
  ``confusion_matrix(normalize="true")``, which maps 0/0 to 0. Such a group *does* take part
  in the max/min, exactly as in fairlearn.
- a ratio whose largest rate is 0 is NaN (0/0), as in fairlearn; when no group is present
  every score is NaN.

The mitigations (``reweighing_weights``, ``group_thresholds``, ``apply_thresholds``) are in
:mod:`jaxtrain.metrics.mitigation`, and importable from here too.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from jaxtrain.metrics._common import (
    backend,
    bool_mask,
    check_lengths,
    check_weights,
    divide_or_zero,
    host_array,
    output,
    scatter_add,
    static_int,
)

# The mitigations live in their own module and stay importable from here.
from jaxtrain.metrics.mitigation import apply_thresholds, group_thresholds, reweighing_weights

_METHODS = ("between_groups", "to_overall")
_AGGREGATES = ("worst_case", "mean")


class _Rows:
    """Checked inputs: y_true, y_pred (bool positives / selections), group ids [n], the
    group count G, row weights [n] (0 for padding and rows outside the groups) and
    ``rows``, the unweighted count of valid rows per group (which groups are present)."""

    def __init__(self, xp, positive, selected, group, num_groups, weight, valid):
        self.xp, self.positive, self.selected, self.group = xp, positive, selected, group
        self.num_groups, self.weight, self.valid = num_groups, weight, valid

    def confusion(self) -> Any:
        xp = self.xp
        cell = self.group * 4 + self.positive.astype(xp.int32) * 2 + self.selected.astype(xp.int32)
        values = xp.where(self.valid, self.weight, xp.zeros((), self.weight.dtype))
        cell = xp.where(self.valid, cell, 0)
        return scatter_add(xp, self.num_groups * 4, cell, values).reshape(self.num_groups, 2, 2)

    def present(self) -> Any:
        xp = self.xp
        ones = self.valid.astype(xp.int32)
        return scatter_add(xp, self.num_groups, xp.where(self.valid, self.group, 0), ones) > 0


def _rows(
    y_true: Any,
    y_pred: Any,
    groups: Any,
    num_groups: Any,
    mask: Any,
    sensitive_features: Any,
    sample_weight: Any,
    where: str,
) -> _Rows:
    if (groups is None) == (sensitive_features is None):
        raise TypeError(f"{where}: pass the groups as sensitive_features= (or groups=), once.")
    groups = sensitive_features if groups is None else groups
    xp = backend(y_true, y_pred, groups, mask, sample_weight)
    if xp is np:
        y_true = host_array(y_true, "y_true", where)
        y_pred = host_array(y_pred, "y_pred", where)
        groups = host_array(groups, "sensitive_features", where)
        for name, a in (("y_true", y_true), ("y_pred", y_pred), ("sensitive_features", groups)):
            if a.ndim != 1:
                raise ValueError(f"{where}: {name} must have shape [n]; got {a.shape}.")
        n = check_lengths(where, y_true=y_true, y_pred=y_pred, sensitive_features=groups)
        if num_groups is None:
            _, group = np.unique(groups, return_inverse=True)
            num_groups = int(group.max()) + 1
        else:
            num_groups = static_int(num_groups, "num_groups", where)
            if groups.dtype.kind not in "biu":
                raise ValueError(
                    f"{where}: with num_groups the groups must be integer ids; got "
                    f"{groups.dtype}. Pass sensitive_features= alone to name groups by value."
                )
            group = groups.astype(np.int64)
            outside = np.flatnonzero((group < 0) | (group >= num_groups))
            if len(outside):
                raise ValueError(
                    f"{where}: group {group[outside[0]]} (row {outside[0]}) is not in "
                    f"[0, num_groups={num_groups}); pass sensitive_features= alone to infer "
                    "the groups."
                )
        weight = np.ones(n, np.int64)
        if sample_weight is not None:
            raw = host_array(sample_weight, "sample_weight", where)
            weight = check_weights(where, raw, n)
            if raw.dtype.kind in "biu":
                weight = raw.astype(np.int64)
        valid = np.ones(n, bool) if mask is None else bool_mask(np, mask, (n,), where)
    else:
        num_groups = static_int(num_groups, "num_groups", where)
        y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
        group = jnp.asarray(groups).astype(jnp.int32)
        if y_true.ndim != 1 or y_true.shape != y_pred.shape or y_true.shape != group.shape:
            raise ValueError(
                "fairness: y_true, y_pred and groups must all have shape [n]; got "
                f"{y_true.shape}, {y_pred.shape} and {group.shape}."
            )
        n = y_true.shape[0]
        weight = jnp.ones(n, jnp.int32)
        if sample_weight is not None:
            weight = jnp.asarray(sample_weight)
            if weight.shape != (n,):
                raise ValueError(
                    f"{where}: sample_weight must have shape [{n}]; got {weight.shape}."
                )
            if not jnp.issubdtype(weight.dtype, jnp.floating):
                weight = weight.astype(jnp.int32)
        valid = bool_mask(jnp, mask, (n,), "fairness")
    valid = valid & (group >= 0) & (group < num_groups)
    group = xp.where(valid, group, 0)
    return _Rows(xp, y_true == 1, y_pred == 1, group, num_groups, weight, valid)


def group_confusion(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike | None = None,
    num_groups: int | None = None,
    mask: ArrayLike | None = None,
    *,
    sensitive_features: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
) -> Any:
    """Per-group binary confusion counts; pure, jittable, additive over batches.

    Args:
      y_true: [n] true labels; 1 is positive, anything else negative.
      y_pred: [n] predicted labels; 1 is a selection, anything else not.
      groups: i32[n] group of each example, in ``[0, num_groups)``; rows outside are dropped.
        Or ``sensitive_features``: [n] any values (eager only), one group per distinct value.
      num_groups: G, a Python int (static under jit); inferred eagerly.
      mask: optional bool[n]; rows where it is False are padding and are not counted.
      sample_weight: optional [n] weights (float weights give float counts).

    Returns:
      [G, 2, 2]: entry ``[g, t, p]`` counts examples of group g with ``(y_true == 1) == t``
      and ``(y_pred == 1) == p`` (rows true, columns predicted, negative first, like
      scikit-learn's ``confusion_matrix(labels=[0, 1])`` within each group).
    """
    rows = _rows(
        y_true,
        y_pred,
        groups,
        num_groups,
        mask,
        sensitive_features,
        sample_weight,
        "group_confusion",
    )
    return rows.confusion()


def group_rates(confusion: ArrayLike) -> dict[str, Any]:
    """Rates per group from ``group_confusion`` counts (summed over batches if you like).

    Returns a dict of arrays of length G: ``count``, and float ``accuracy``,
    ``selection_rate`` (P(pred=1)), ``true_positive_rate`` (P(pred=1 | y=1)) and
    ``false_positive_rate`` (P(pred=1 | y=0)). Rates of an absent group (count 0) are NaN; a
    present group without positives (negatives) has TPR (FPR) 0.0, fairlearn's value.
    """
    xp = backend(confusion)
    counts = xp.asarray(confusion)
    return _rates(xp, counts, counts.sum(axis=(1, 2)) > 0)


def _rates(xp: ModuleType, c: Any, present: Any) -> dict[str, Any]:
    tn, fp, fn, tp = c[:, 0, 0], c[:, 0, 1], c[:, 1, 0], c[:, 1, 1]
    count = tn + fp + fn + tp
    dtype = np.float64 if xp is np else jnp.float32

    def rate(numerator: Any, denominator: Any) -> Any:
        value = divide_or_zero(xp, numerator, denominator, dtype)  # 0 where denominator is 0
        return xp.where(present, value, np.nan).astype(dtype)

    return {
        "count": count,
        "accuracy": rate(tp + tn, count),
        "selection_rate": rate(tp + fp, count),
        "true_positive_rate": rate(tp, tp + fn),
        "false_positive_rate": rate(fp, fp + tn),
    }


def _overall(xp: ModuleType, confusion: Any) -> dict[str, Any]:
    """The rates of all rows together (fairlearn's ``overall``)."""
    total = confusion.sum(axis=0)[None]
    return {k: v[0] for k, v in _rates(xp, total, xp.ones(1, bool)).items()}


def group_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike | None = None,
    num_groups: int | None = None,
    mask: ArrayLike | None = None,
    *,
    sensitive_features: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
) -> dict[str, Any]:
    """Count, accuracy, selection rate, TPR and FPR per group; see ``group_rates``.

    Each value equals ``fairlearn.metrics.MetricFrame(...).by_group`` of ``accuracy_score``,
    ``selection_rate``, ``true_positive_rate`` and ``false_positive_rate`` for the groups
    present (with ``sensitive_features``, group g is the g-th distinct value, sorted); absent
    groups (no rows) get NaN rates. NumPy arrays eagerly.
    """
    rows = _rows(
        y_true, y_pred, groups, num_groups, mask, sensitive_features, sample_weight, "group_metrics"
    )
    return _rates(rows.xp, rows.confusion(), rows.present())


def _disparity(
    kind,
    y_true,
    y_pred,
    groups,
    num_groups,
    mask,
    sensitive_features,
    sample_weight,
    method,
    agg,
    where,
):
    if method not in _METHODS:
        raise ValueError(f"{where}: method must be one of {_METHODS}; got {method!r}.")
    if agg not in _AGGREGATES:
        raise ValueError(f"{where}: agg must be one of {_AGGREGATES}; got {agg!r}.")
    rows = _rows(y_true, y_pred, groups, num_groups, mask, sensitive_features, sample_weight, where)
    xp, confusion, present = rows.xp, rows.confusion(), rows.present()
    rates, overall = _rates(xp, confusion, present), _overall(xp, confusion)
    score = _difference if kind == "difference" else _ratio
    names = (
        ("selection_rate",)
        if where.startswith("demographic")
        else ("true_positive_rate", "false_positive_rate")
    )
    values = [score(xp, rates[name], present, overall[name], method) for name in names]
    if len(values) == 1:
        return output(xp, values[0])
    tpr, fpr = values
    if agg == "mean":  # pandas' mean: NaN left out
        both = xp.stack([tpr, fpr])
        kept = ~xp.isnan(both)
        mean = xp.sum(xp.where(kept, both, 0.0)) / xp.maximum(xp.sum(kept), 1)
        return output(xp, xp.where(xp.any(kept), mean, np.nan).astype(tpr.dtype))
    if kind == "difference":
        return output(xp, xp.where(fpr > tpr, fpr, tpr))  # Python's max([tpr, fpr]), as fairlearn
    return output(xp, xp.where(fpr < tpr, fpr, tpr))  # Python's min([tpr, fpr])


def demographic_parity_difference(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike | None = None,
    num_groups: int | None = None,
    mask: ArrayLike | None = None,
    *,
    sensitive_features: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    method: str = "between_groups",
) -> Any:
    """Largest minus smallest selection rate over the groups present (0 = parity); with
    ``method="to_overall"`` the largest gap to the overall rate. = fairlearn's."""
    return _disparity(
        "difference",
        y_true,
        y_pred,
        groups,
        num_groups,
        mask,
        sensitive_features,
        sample_weight,
        method,
        "worst_case",
        "demographic_parity_difference",
    )


def demographic_parity_ratio(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike | None = None,
    num_groups: int | None = None,
    mask: ArrayLike | None = None,
    *,
    sensitive_features: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    method: str = "between_groups",
) -> Any:
    """Smallest over largest selection rate over the groups present (1 = parity); NaN when no
    group is selected at all (0/0, as fairlearn). ``method="to_overall"``: the smallest of
    each group's rate to the overall one, taken below 1. = fairlearn's."""
    return _disparity(
        "ratio",
        y_true,
        y_pred,
        groups,
        num_groups,
        mask,
        sensitive_features,
        sample_weight,
        method,
        "worst_case",
        "demographic_parity_ratio",
    )


def equalized_odds_difference(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike | None = None,
    num_groups: int | None = None,
    mask: ArrayLike | None = None,
    *,
    sensitive_features: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    method: str = "between_groups",
    agg: str = "worst_case",
) -> Any:
    """The larger (``agg="mean"``: the mean) of the TPR difference and the FPR difference
    between groups. = fairlearn's."""
    return _disparity(
        "difference",
        y_true,
        y_pred,
        groups,
        num_groups,
        mask,
        sensitive_features,
        sample_weight,
        method,
        agg,
        "equalized_odds_difference",
    )


def equalized_odds_ratio(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike | None = None,
    num_groups: int | None = None,
    mask: ArrayLike | None = None,
    *,
    sensitive_features: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    method: str = "between_groups",
    agg: str = "worst_case",
) -> Any:
    """The smaller of the TPR ratio and the FPR ratio between groups (``agg="mean"``: their
    mean); = fairlearn's.

    A ratio is NaN when its largest rate is 0. The two are combined as fairlearn does, with
    Python's ``min([tpr_ratio, fpr_ratio])``: an undefined FPR ratio (no false positive in any
    group) gives the TPR ratio, an undefined TPR ratio gives NaN.
    """
    return _disparity(
        "ratio",
        y_true,
        y_pred,
        groups,
        num_groups,
        mask,
        sensitive_features,
        sample_weight,
        method,
        agg,
        "equalized_odds_ratio",
    )


# ---------------------------------------------------------------------------------------------
# helpers


def _difference(
    xp: ModuleType, values: Any, present: Any, overall: Any = None, method: str = "between_groups"
) -> Any:
    """max - min over present groups (or the largest gap to ``overall``); NaN when none."""
    if method == "to_overall":
        gap = xp.where(present, xp.abs(values - overall), -np.inf)
        return xp.where(xp.any(present), xp.max(gap), np.nan).astype(values.dtype)
    high = xp.max(xp.where(present, values, -np.inf))
    low = xp.min(xp.where(present, values, np.inf))
    return xp.where(xp.any(present), high - low, np.nan).astype(values.dtype)


def _ratio(
    xp: ModuleType, values: Any, present: Any, overall: Any = None, method: str = "between_groups"
) -> Any:
    """min / max over present groups (NaN when none is present or the max is 0); or the
    smallest ratio to ``overall``, each taken below 1 (0/0 left out, as pandas' min)."""
    if method == "to_overall":
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = values / overall
            ratio = xp.where(ratio > 1, 1 / ratio, ratio)
        kept = present & ~xp.isnan(ratio)
        smallest = xp.min(xp.where(kept, ratio, np.inf))
        return xp.where(xp.any(kept), smallest, np.nan).astype(values.dtype)
    high = xp.max(xp.where(present, values, -np.inf))
    low = xp.min(xp.where(present, values, np.inf))
    defined = xp.any(present) & (high > 0)
    return xp.where(defined, low / xp.where(defined, high, 1.0), np.nan).astype(values.dtype)


__all__ = [
    "apply_thresholds",
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "group_confusion",
    "group_metrics",
    "group_rates",
    "group_thresholds",
    "reweighing_weights",
]
