"""Ranking metrics: ROC AUC and average precision (jittable), ROC and PR curves (host arrays).

Every score equals scikit-learn's on the same inputs (``roc_auc_score`` binary and
``multi_class="ovr"``, ``average_precision_score``, ``roc_curve``, ``precision_recall_curve``),
ties and ``sample_weight`` included. The areas are computed through (weighted) ranks rather
than by integrating a curve, so no curve of data-dependent length is needed and the
functions jit with static shapes:

- ROC AUC, with tied scores counted as half (the Mann-Whitney statistic), is exactly the
  trapezoid over the distinct thresholds that scikit-learn integrates:
  ``AUC = sum over positives p of w_p (W_neg below p + 0.5 W_neg tied with p) / (W_pos W_neg)``.
- Average precision is scikit-learn's step sum ``sum_j (R_j - R_{j-1}) P_j`` over distinct
  thresholds, which is ``sum over positives p of w_p * precision at score(p) / W_pos``, where
  the precision at ``t`` counts every example scored ``>= t`` (the whole tie group).

Eagerly the inputs are checked as scikit-learn checks them (labels outside the classes, more
than two classes for binary scores, an unknown ``pos_label``, NaN, mismatched lengths:
``ValueError``) and the arithmetic is float64 NumPy. An AUC with one class only is NaN, as in
scikit-learn 1.9 (which warns). Traced, unweighted counts are exact integers, so the ROC AUC
is one division of integers (for n < 65536 without x64) and the same bitwise jitted or
vmapped (as in ``bootstrap_ci``). Traced labels are 0/1 (the positive class is ``pos_label``,
1) or class ids in ``[0, K)``.

The curves have one point per distinct score, a data-dependent length, so they are host-only
NumPy, equal to scikit-learn's exactly (thresholds in the scores' dtype).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from jaxtrain.metrics._common import (
    backend,
    check_finite,
    check_lengths,
    check_weights,
    class_ids,
    float_dtype,
    host_array,
    map_rows,
    output,
)

_AVERAGES = ("macro", "weighted")


# --- inputs ----------------------------------------------------------------------------------


def _scores(xp: ModuleType, y_score: Any, where: str) -> Any:
    if xp is np:
        scores = check_finite(where, "y_score", host_array(y_score, "y_score", where))
        return scores.astype(np.float64)
    scores = jnp.asarray(y_score)
    return scores.astype(float_dtype(xp, scores))


def _weights(xp: ModuleType, sample_weight: Any, n: int, dtype: Any, where: str) -> Any:
    """The row weights: ``sample_weight``, or integer ones (exact counts)."""
    if sample_weight is None:
        return xp.ones(n, np.int64 if xp is np else jnp.int32)
    if xp is np:
        return check_weights(where, sample_weight, n)
    weight = jnp.asarray(sample_weight, dtype)
    if weight.shape != (n,):
        raise ValueError(f"{where}: sample_weight must have shape [{n}]; got {weight.shape}.")
    return weight


def _binary_positive(xp: ModuleType, y_true: Any, n: int, pos_label: Any, where: str) -> Any:
    """bool[n] positives of binary labels, checked scikit-learn's way when eager."""
    if xp is not np:
        y = jnp.asarray(y_true)
        if y.shape != (n,):
            raise ValueError(
                f"{where}: y_true and y_score must both have shape [n]; got {y.shape} and ({n},)."
            )
        return y == (1 if pos_label is None else pos_label)
    y = host_array(y_true, "y_true", where)
    if y.ndim != 1:
        raise ValueError(f"{where}: y_true must have shape [n]; got {y.shape}.")
    check_lengths(where, y_true=y, y_score=np.empty(n))
    if y.dtype.kind == "f":
        check_finite(where, "y_true", y)
    classes = np.unique(y)
    if len(classes) > 2:
        raise ValueError(
            f"{where}: y_true holds {len(classes)} classes ({classes[:5].tolist()} ...); binary "
            "scores need two. For [n, K] class scores use the one-versus-rest form."
        )
    if pos_label is None:
        values = set(classes.tolist())
        if y.dtype.kind in "OUS" or not (values <= {0, 1} or values <= {-1, 1}):
            raise ValueError(
                f"{where}: y_true takes the values {classes.tolist()} and pos_label is not "
                "given: make y_true 0/1 (or -1/1) or pass pos_label."
            )
        pos_label = 1
    elif len(classes) == 2 and pos_label not in classes.tolist():
        raise ValueError(
            f"{where}: pos_label={pos_label!r} is not a label of y_true ({classes.tolist()})."
        )
    return y == pos_label


# --- areas -----------------------------------------------------------------------------------


def _below_and_tied(xp: ModuleType, positive: Any, scores: Any, weight: Any) -> tuple[Any, ...]:
    """Per example, weighted: (pos below, neg below, pos tied, neg tied), itself tied."""
    order = xp.argsort(scores, stable=True)
    ascending = scores[order]
    zero = xp.zeros((), weight.dtype)
    pos_w = xp.where(positive, weight, zero)[order]
    neg_w = xp.where(positive, zero, weight)[order]
    start = xp.zeros(1, weight.dtype)
    pos = xp.concatenate([start, xp.cumsum(pos_w)])
    neg = xp.concatenate([start, xp.cumsum(neg_w)])
    left = xp.searchsorted(ascending, scores, side="left")
    right = xp.searchsorted(ascending, scores, side="right")
    return pos[left], neg[left], pos[right] - pos[left], neg[right] - neg[left]


def _binary_auc(xp: ModuleType, positive: Any, scores: Any, weight: Any) -> Any:
    _, neg_below, _, neg_tied = _below_and_tied(xp, positive, scores, weight)
    zero = xp.zeros((), weight.dtype)
    w_pos = xp.sum(xp.where(positive, weight, zero))
    w_neg = xp.sum(weight) - w_pos
    dtype = scores.dtype
    total_dtype = weight.dtype
    if xp is not np and jnp.issubdtype(weight.dtype, jnp.integer):
        # 2U summed exactly in integers when it fits (then vmapped and jitted agree
        # bitwise): int64 under x64, int32 while n^2 / 2 < 2^31 (n < 65536).
        total_dtype = jax.dtypes.canonicalize_dtype(jnp.int64)
        n = positive.shape[0]
        if total_dtype == jnp.int32 and n * n // 2 >= 2**31:
            total_dtype = dtype
    pair_weight = weight * (2 * neg_below + neg_tied)
    twice_u = xp.sum(xp.where(positive, pair_weight, zero).astype(total_dtype))
    pairs = 2 * w_pos.astype(dtype) * w_neg.astype(dtype)
    defined = (w_pos > 0) & (w_neg > 0)
    return xp.where(defined, twice_u.astype(dtype) / xp.where(defined, pairs, 1), np.nan)


def _binary_average_precision(xp: ModuleType, positive: Any, scores: Any, weight: Any) -> Any:
    pos_below, neg_below, _, _ = _below_and_tied(xp, positive, scores, weight)
    zero = xp.zeros((), weight.dtype)
    w_pos = xp.sum(xp.where(positive, weight, zero))
    total = xp.sum(weight)
    dtype = scores.dtype
    # Weight scored >= s: all but what is strictly below; positives among it likewise.
    at_or_above = (total - pos_below - neg_below).astype(dtype)
    precision = (w_pos - pos_below).astype(dtype) / xp.where(at_or_above > 0, at_or_above, 1)
    summed = xp.sum(xp.where(positive, weight.astype(dtype) * precision, 0.0))
    return xp.where(w_pos > 0, summed / xp.where(w_pos > 0, w_pos, 1).astype(dtype), 0.0)


def roc_auc(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    average: str = "macro",
    sample_weight: ArrayLike | None = None,
    multi_class: str = "raise",
    labels: ArrayLike | None = None,
) -> Any:
    """Area under the ROC curve; = ``sklearn.metrics.roc_auc_score``.

    Args:
      y_true: [n] labels. Binary scores: two classes, the larger label positive (as
        scikit-learn; traced: 1 is positive). [n, K] scores: class ids in ``[0, K)`` or the
        values of ``labels``.
      y_score: f[n] scores of the positive class, higher meaning more likely positive
        (probabilities, logits); or f[n, K] class scores with ``multi_class="ovr"``.
      average, labels: for ``multi_class="ovr"``, see :func:`roc_auc_ovr`.
      sample_weight: optional f[n] row weights.
      multi_class: ``"raise"`` (binary only, scikit-learn's default) or ``"ovr"``.

    Returns:
      A float (eager) or scalar array (traced); tied scores count half, as in scikit-learn's
      trapezoid over distinct thresholds. NaN with one class only (scikit-learn warns).
    """
    if multi_class == "ovr":
        return roc_auc_ovr(
            y_true, y_score, average=average, sample_weight=sample_weight, labels=labels
        )
    if multi_class != "raise":
        raise ValueError(f"roc_auc: multi_class must be 'raise' or 'ovr'; got {multi_class!r}.")
    xp = backend(y_true, y_score, sample_weight)
    scores = _scores(xp, y_score, "roc_auc")
    if scores.ndim != 1:
        raise ValueError(
            f"roc_auc: y_score must have shape [n] for binary labels; got {scores.shape}. For "
            "[n, K] class scores pass multi_class='ovr'."
        )
    if xp is np:
        y = host_array(y_true, "y_true", "roc_auc")
        check_lengths("roc_auc", y_true=y, y_score=scores)
        classes = np.unique(y)
        if len(classes) > 2:
            raise ValueError(
                f"roc_auc: y_true holds {len(classes)} classes ({classes[:5].tolist()} ...); "
                "binary scores need two (the larger is positive). For [n, K] class scores pass "
                "multi_class='ovr'."
            )
        positive = _binary_positive(xp, y, len(y), classes[-1], "roc_auc")
    else:
        positive = _binary_positive(xp, y_true, scores.shape[0], 1, "roc_auc")
    weight = _weights(xp, sample_weight, scores.shape[0], scores.dtype, "roc_auc")
    return output(xp, _binary_auc(xp, positive, scores, weight))


def average_precision(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    average: str = "macro",
    pos_label: Any = 1,
    sample_weight: ArrayLike | None = None,
) -> Any:
    """Average precision (area under the step PR curve); = ``average_precision_score``.

    Args:
      y_true: [n] binary labels (``pos_label`` positive), or class ids in ``[0, K)`` when
        ``y_score`` is ``[n, K]``.
      y_score: f[n] scores of the positive class, or f[n, K] per-class scores (one versus
        rest, like scikit-learn's multiclass ``average_precision_score``).
      average: for ``[n, K]`` scores, ``"macro"`` (mean over classes) or ``"weighted"`` (by
        class weight); ignored for binary scores.
      pos_label: the positive label of binary ``y_true``.
      sample_weight: optional f[n] row weights.

    Returns:
      A float (eager) or scalar array (traced). 0.0 when there is no positive (as
      scikit-learn, which warns). The classes of ``[n, K]`` scores are the columns; a class
      absent from ``y_true`` scores 0.0 in the average (scikit-learn, which infers the
      classes from ``y_true``, refuses the shapes then).
    """
    xp = backend(y_true, y_score, sample_weight)
    scores = _scores(xp, y_score, "average_precision")
    if scores.ndim == 2:
        if pos_label != 1:
            raise ValueError("average_precision: pos_label is fixed to 1 for [n, K] scores.")
        return _one_vs_rest(
            xp,
            _binary_average_precision,
            y_true,
            scores,
            average,
            sample_weight,
            None,
            "average_precision",
        )
    if scores.ndim != 1:
        raise ValueError(f"average_precision: y_score must be [n] or [n, K]; got {scores.shape}.")
    positive = _binary_positive(xp, y_true, scores.shape[0], pos_label, "average_precision")
    weight = _weights(xp, sample_weight, scores.shape[0], scores.dtype, "average_precision")
    return output(xp, _binary_average_precision(xp, positive, scores, weight))


def roc_auc_ovr(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    average: str = "macro",
    sample_weight: ArrayLike | None = None,
    labels: ArrayLike | None = None,
) -> Any:
    """One-versus-rest multiclass ROC AUC; = ``roc_auc_score(multi_class="ovr")``.

    Args:
      y_true: [n] class ids in ``[0, K)``, or the values of ``labels``.
      y_score: f[n, K] class scores (scikit-learn insists they are probabilities summing to
        1; the AUC only uses their order per class, so this function does not).
      average: ``"macro"`` (mean of the K per-class AUCs) or ``"weighted"`` (weighted by the
        (weighted) number of true examples of each class).
      sample_weight: optional f[n] row weights.
      labels: optional K class values, in the order of the columns.

    Returns:
      A float (eager) or scalar array (traced). NaN when some class never appears in
      ``y_true`` (scikit-learn with ``labels=range(K)`` warns and returns NaN too).
    """
    xp = backend(y_true, y_score, sample_weight)
    scores = _scores(xp, y_score, "roc_auc_ovr")
    return _one_vs_rest(
        xp, _binary_auc, y_true, scores, average, sample_weight, labels, "roc_auc_ovr"
    )


def _one_vs_rest(xp, binary_fn, y_true, scores, average, sample_weight, labels, name):
    if average not in _AVERAGES:
        raise ValueError(f"{name}: average must be one of {_AVERAGES}; got {average!r}.")
    if scores.ndim != 2:
        raise ValueError(f"{name}: y_score must have shape [n, num_classes]; got {scores.shape}.")
    n, num_classes = scores.shape
    weight = _weights(xp, sample_weight, n, scores.dtype, name)
    if xp is np:
        y = host_array(y_true, "y_true", name)
        check_lengths(name, y_true=y, y_score=scores)
        ids = class_ids(name, y, num_classes, labels)
    else:
        y = jnp.asarray(y_true)
        if y.shape != (n,):
            raise ValueError(f"{name}: y_true must have shape [{n}]; got {y.shape}.")
        ids = y if labels is None else jnp.argmax(y[:, None] == jnp.asarray(labels)[None], 1)
    classes = xp.arange(num_classes)
    positive = ids[None, :] == classes[:, None]  # bool[K, n]
    per_class = map_rows(xp, lambda pos, s: binary_fn(xp, pos, s, weight), positive, scores.T)
    if average == "macro":
        return output(xp, xp.mean(per_class))
    zero = xp.zeros((), weight.dtype)
    support = xp.sum(xp.where(positive, weight[None, :], zero), axis=1).astype(per_class.dtype)
    # scikit-learn zeroes the score of a class of weight 0 before averaging.
    kept = xp.where(support > 0, per_class, 0.0)
    return output(xp, xp.sum(kept * support) / xp.sum(support))


# --- curves (host) ---------------------------------------------------------------------------


def _curve_counts(y_true, y_score, pos_label, sample_weight, name) -> tuple[np.ndarray, ...]:
    """Weighted FP and TP counts at each distinct score, descending, and the scores."""
    scores = check_finite(name, "y_score", host_array(jax.device_get(y_score), "y_score", name))
    if scores.ndim != 1:
        raise ValueError(f"{name}: y_score must have shape [n]; got {scores.shape}.")
    check_lengths(name, y_score=scores)
    positive = _binary_positive(np, jax.device_get(y_true), scores.shape[0], pos_label, name)
    weight = _weights(np, sample_weight, scores.shape[0], None, name)
    if sample_weight is not None:  # scikit-learn drops the rows of weight 0 first
        keep = weight != 0
        positive, scores, weight = positive[keep], scores[keep], weight[keep]
    order = np.argsort(scores, kind="stable")[::-1]
    descending = scores[order]
    tps = np.cumsum(np.where(positive, weight, 0)[order])
    fps = np.cumsum(np.where(positive, 0, weight)[order])
    last = np.flatnonzero(np.r_[descending[1:] != descending[:-1], True])
    return fps[last].astype(np.float64), tps[last].astype(np.float64), descending[last]


def roc_curve(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    pos_label: Any = None,
    sample_weight: ArrayLike | None = None,
    drop_intermediate: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve as NumPy arrays for plots; = ``sklearn.metrics.roc_curve``.

    Args:
      y_true: [n] binary labels (0/1 or -1/1, or any two with ``pos_label``).
      y_score: f[n] scores.
      pos_label, sample_weight: as in scikit-learn.
      drop_intermediate: drop points on straight segments (scikit-learn's default).

    Returns:
      ``(fpr, tpr, thresholds)``: f64[m] rates and f64[m] thresholds, decreasing from
      ``inf``, one point per distinct score plus the origin. A rate with no example of its
      class is NaN (as scikit-learn, which warns). Host only (data-dependent length).
    """
    fps, tps, thresholds = _curve_counts(y_true, y_score, pos_label, sample_weight, "roc_curve")
    if drop_intermediate and fps.shape[0] > 2:
        bend = np.logical_or(np.diff(fps, 2), np.diff(tps, 2))
        keep = np.flatnonzero(np.concatenate([[True], bend, [True]]))
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps, tps = np.concatenate([[0.0], fps]), np.concatenate([[0.0], tps])
    thresholds = np.concatenate([[np.inf], thresholds.astype(np.float64)])
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thresholds


def precision_recall_curve(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    pos_label: Any = None,
    sample_weight: ArrayLike | None = None,
    drop_intermediate: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve as NumPy arrays; = ``sklearn.metrics.precision_recall_curve``.

    Args:
      y_true: [n] binary labels (0/1 or -1/1, or any two with ``pos_label``).
      y_score: f[n] scores.
      pos_label, sample_weight: as in scikit-learn.
      drop_intermediate: drop thresholds that do not change the recall (scikit-learn's
        default is False).

    Returns:
      ``(precision, recall, thresholds)``: f64[m + 1], f64[m + 1] and [m] (the scores' dtype),
      thresholds increasing; the last point is ``(precision 1, recall 0)`` with no threshold.
      With no positive example the recall is 1 everywhere (as scikit-learn, which warns).
      Host only (data-dependent length).
    """
    fps, tps, thresholds = _curve_counts(
        y_true, y_score, pos_label, sample_weight, "precision_recall_curve"
    )
    if drop_intermediate and fps.shape[0] > 2:
        change = np.logical_or(np.diff(tps[:-1]), np.diff(tps[1:]))
        keep = np.flatnonzero(np.concatenate([[True], change, [True]]))
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    predicted = tps + fps
    precision = np.divide(tps, predicted, out=np.zeros_like(tps), where=predicted != 0)
    recall = tps / tps[-1] if tps[-1] != 0 else np.ones_like(tps)
    return (
        np.concatenate([precision[::-1], [1.0]]),
        np.concatenate([recall[::-1], [0.0]]),
        thresholds[::-1],
    )


__all__ = [
    "average_precision",
    "precision_recall_curve",
    "roc_auc",
    "roc_auc_ovr",
    "roc_curve",
]
