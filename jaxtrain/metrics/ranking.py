"""Ranking metrics: ROC AUC and average precision (jittable), ROC and PR curves (host arrays).

Every score equals scikit-learn's on the same inputs (``roc_auc_score``,
``roc_auc_score(multi_class="ovr")``, ``average_precision_score``, ``roc_curve``,
``precision_recall_curve``), ties included, up to float rounding: the areas are computed
through ranks rather than by integrating a curve, so no curve of data-dependent length is
needed and the functions jit with static shapes.

- ROC AUC, with tied scores counted as half (the Mann-Whitney statistic), is exactly the
  trapezoid over the distinct thresholds that scikit-learn integrates:
  ``AUC = mean over positives p of (#neg scored below p + 0.5 #neg tied with p) / #neg``.
- Average precision is scikit-learn's step sum ``sum_j (R_j - R_{j-1}) P_j`` over distinct
  thresholds, which is ``mean over positives p of precision at threshold score(p)``, where the
  precision at ``t`` counts every example scored ``>= t`` (the whole tie group).

Counts are exact (integers); the few float operations run in the scores' float dtype (float32
unless x64 is enabled), so results agree with scikit-learn's float64 to about 1e-7. The ROC
AUC is one division of exact integer counts (for n < 65536 without x64), so it is the same
bitwise jitted, vmapped (as in ``bootstrap_ci``) or eager.

Labels are 0/1 (binary) or class ids in ``[0, K)`` (multiclass, ``probs: [n, K]``). Where
scikit-learn raises (one class only in ``y_true``, say) these return NaN, since a jitted
function cannot raise on values.

The curves have one point per distinct score, a data-dependent length, so they are computed
from jitted sorted counts and then trimmed on the host into NumPy arrays, equal to
scikit-learn's. Pass float32 scores if you compare thresholds: without x64 JAX rounds float64
scores to float32, which can merge nearly equal scores into ties.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

_AVERAGES = ("macro", "weighted")


def _float(scores: ArrayLike) -> jax.Array:
    scores = jnp.asarray(scores)
    return scores if jnp.issubdtype(scores.dtype, jnp.floating) else scores.astype(jnp.float32)


def _binary_inputs(y_true: ArrayLike, scores: ArrayLike, name: str) -> tuple[jax.Array, jax.Array]:
    y = jnp.asarray(y_true)
    s = _float(scores)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(
            f"{name}: y_true and scores must both have shape [n]; got {y.shape} and {s.shape}. "
            "For multiclass probabilities [n, K] use the OvR form."
        )
    return y != 0, s


def _below_and_tied(positive: jax.Array, scores: jax.Array) -> tuple[jax.Array, ...]:
    """Per example: (#pos below, #neg below, #pos tied, #neg tied), counting itself as tied."""
    order = jnp.argsort(scores)
    ascending = scores[order]
    pos = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(positive[order], dtype=jnp.int32)])
    index = jnp.arange(scores.shape[0] + 1, dtype=jnp.int32)
    neg = index - pos
    left = jnp.searchsorted(ascending, scores, side="left")
    right = jnp.searchsorted(ascending, scores, side="right")
    return pos[left], neg[left], pos[right] - pos[left], neg[right] - neg[left]


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> jax.Array:
    """Area under the ROC curve of binary labels; = ``sklearn.metrics.roc_auc_score``.

    Args:
      y_true: [n] labels, 0 (negative) or non-zero (positive: 1, True).
      scores: f32[n] scores, higher meaning more likely positive (probabilities, logits).

    Returns:
      A float scalar; tied scores count half, as in scikit-learn's trapezoid over distinct
      thresholds. NaN if ``y_true`` holds a single class (scikit-learn raises).
    """
    positive, scores = _binary_inputs(y_true, scores, "roc_auc")
    _, neg_below, _, neg_tied = _below_and_tied(positive, scores)
    n_pos = jnp.sum(positive, dtype=jnp.int32)
    n_neg = positive.shape[0] - n_pos
    dtype = scores.dtype
    # 2U = sum over positives of (2 #neg below + #neg tied), summed exactly in integers (so
    # the value does not depend on the reduction order: vmapped, jitted and eager agree
    # bitwise) whenever it fits: int64 under x64, int32 while n^2 / 2 < 2^31 (n < 65536).
    total_dtype = jax.dtypes.canonicalize_dtype(jnp.int64)
    n = positive.shape[0]
    if total_dtype == jnp.int32 and n * n // 2 >= 2**31:
        total_dtype = dtype
    twice_u = jnp.sum(jnp.where(positive, 2 * neg_below + neg_tied, 0).astype(total_dtype))
    pairs = 2 * n_pos.astype(dtype) * n_neg.astype(dtype)
    return jnp.where((n_pos > 0) & (n_neg > 0), twice_u.astype(dtype) / pairs, jnp.nan)


def average_precision(y_true: ArrayLike, scores: ArrayLike, average: str = "macro") -> jax.Array:
    """Average precision (area under the step PR curve); = ``average_precision_score``.

    Args:
      y_true: [n] binary labels (0 / non-zero), or class ids in ``[0, K)`` when ``scores`` is
        ``[n, K]``.
      scores: f32[n] scores of the positive class, or f32[n, K] per-class scores (one versus
        rest, like scikit-learn's multiclass ``average_precision_score``).
      average: for ``[n, K]`` scores, ``"macro"`` (mean over classes) or ``"weighted"`` (by
        class frequency); ignored for binary scores.

    Returns:
      A float scalar. 0.0 when there is no positive (as scikit-learn, which warns).
      scikit-learn requires every class to appear in a multiclass ``y_true``; here an absent
      class scores 0.0 in the average.
    """
    scores = _float(scores)
    if scores.ndim == 2:
        return _one_vs_rest(_binary_average_precision, y_true, scores, average, "average_precision")
    positive, scores = _binary_inputs(y_true, scores, "average_precision")
    return _binary_average_precision(positive, scores)


def _binary_average_precision(positive: jax.Array, scores: jax.Array) -> jax.Array:
    pos_below, neg_below, _, _ = _below_and_tied(positive, scores)
    n = positive.shape[0]
    n_pos = jnp.sum(positive, dtype=jnp.int32)
    dtype = scores.dtype
    # Examples scored >= s: all but those strictly below; positives among them likewise.
    at_or_above = (n - pos_below - neg_below).astype(dtype)
    precision = (n_pos - pos_below).astype(dtype) / at_or_above
    total = jnp.sum(jnp.where(positive, precision, 0.0))
    return jnp.where(n_pos > 0, total / jnp.maximum(n_pos, 1).astype(dtype), 0.0)


def roc_auc_ovr(y_true: ArrayLike, probs: ArrayLike, average: str = "macro") -> jax.Array:
    """One-versus-rest multiclass ROC AUC; = ``roc_auc_score(multi_class="ovr")``.

    Args:
      y_true: i32[n] class ids in ``[0, K)``.
      probs: f32[n, K] class scores (scikit-learn insists they are probabilities summing to
        1; the AUC only uses their order per class, so this function does not).
      average: ``"macro"`` (mean of the K per-class AUCs) or ``"weighted"`` (weighted by the
        number of true examples of each class).

    Returns:
      A float scalar. NaN if some class never appears (scikit-learn raises).
    """
    return _one_vs_rest(roc_auc, y_true, _float(probs), average, "roc_auc_ovr")


def _one_vs_rest(binary_fn, y_true: ArrayLike, probs: jax.Array, average: str, name: str):
    if average not in _AVERAGES:
        raise ValueError(f"{name}: average must be one of {_AVERAGES}; got {average!r}.")
    y = jnp.asarray(y_true)
    if probs.ndim != 2 or y.ndim != 1 or y.shape[0] != probs.shape[0]:
        raise ValueError(
            f"{name}: y_true must have shape [n] and probs [n, num_classes]; got {y.shape} "
            f"and {probs.shape}."
        )
    classes = jnp.arange(probs.shape[1])
    positive = y[None, :] == classes[:, None]  # bool[K, n]
    per_class = jax.vmap(binary_fn)(positive, probs.T)
    if average == "macro":
        return jnp.mean(per_class)
    support = jnp.sum(positive, axis=1).astype(per_class.dtype)
    # scikit-learn zeroes the score of a class of weight 0 before averaging.
    return jnp.sum(jnp.where(support > 0, per_class, 0.0) * support) / jnp.sum(support)


@jax.jit
def _sorted_counts(positive: jax.Array, scores: jax.Array) -> tuple[jax.Array, ...]:
    """Scores descending, cumulative TP / FP counts, and where each distinct score ends."""
    order = jnp.argsort(-scores, stable=True)
    descending = scores[order]
    tps = jnp.cumsum(positive[order], dtype=jnp.int32)
    fps = jnp.arange(1, scores.shape[0] + 1, dtype=jnp.int32) - tps
    last = jnp.concatenate([descending[1:] != descending[:-1], jnp.ones(1, bool)])
    return descending, tps, fps, last


def _curve_counts(y_true: ArrayLike, scores: ArrayLike, name: str) -> tuple[np.ndarray, ...]:
    positive, scores = _binary_inputs(y_true, scores, name)
    if positive.shape[0] == 0:
        raise ValueError(f"{name}: needs at least one example.")
    descending, tps, fps, last = jax.device_get(_sorted_counts(positive, scores))
    keep = np.flatnonzero(last)
    return fps[keep].astype(np.float64), tps[keep].astype(np.float64), descending[keep]


def roc_curve(
    y_true: ArrayLike, scores: ArrayLike, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve as NumPy arrays for plots; = ``sklearn.metrics.roc_curve``.

    Args:
      y_true: [n] binary labels (0 / non-zero).
      scores: f32[n] scores.
      drop_intermediate: drop points on straight segments (scikit-learn's default).

    Returns:
      ``(fpr, tpr, thresholds)``: f64[m] rates and f64[m] thresholds, decreasing from
      ``inf``, one point per distinct score plus the origin. A rate with no example of its
      class is NaN (as scikit-learn, which warns). Runs on the host (data-dependent length).
    """
    fps, tps, thresholds = _curve_counts(y_true, scores, "roc_curve")
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
    y_true: ArrayLike, scores: ArrayLike, drop_intermediate: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve as NumPy arrays; = ``sklearn.metrics.precision_recall_curve``.

    Args:
      y_true: [n] binary labels (0 / non-zero).
      scores: f32[n] scores.
      drop_intermediate: drop thresholds that do not change the recall (scikit-learn's
        default is False).

    Returns:
      ``(precision, recall, thresholds)``: f64[m + 1], f64[m + 1] and [m] (the scores' dtype),
      thresholds increasing; the last point is ``(precision 1, recall 0)`` with no threshold.
      With no positive example the recall is 1 everywhere (as scikit-learn, which warns).
      Runs on the host (data-dependent length).
    """
    fps, tps, thresholds = _curve_counts(y_true, scores, "precision_recall_curve")
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
