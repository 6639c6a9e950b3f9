"""Single classification scores with scikit-learn's arguments: accuracy, precision, recall, F1.

Each equals scikit-learn's ``accuracy_score``, ``precision_score``, ``recall_score`` and
``f1_score`` (``labels``, ``pos_label``, ``average``, ``sample_weight``, ``zero_division``).
Eagerly the labels may be any values (the classes are the sorted labels present, as
scikit-learn infers them), inputs are checked and the arithmetic is float64 NumPy; under
``jax.jit`` the labels are class ids in ``[0, num_classes)`` with ``num_classes`` static.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from jaxtrain.metrics._common import (
    backend,
    host_array,
    host_labels,
    label_index,
    output,
    row_weights,
    scatter_add,
    traced_labels,
)

_SCORE_AVERAGES = ("binary", "micro", "macro", "weighted", None)


def accuracy(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    normalize: bool = True,
    sample_weight: ArrayLike | None = None,
) -> Any:
    """Fraction (or with ``normalize=False`` the weighted number) of correct predictions;
    = ``sklearn.metrics.accuracy_score``. A float eagerly, a scalar array traced."""
    xp = backend(y_true, y_pred, sample_weight)
    where = "accuracy"
    if xp is np:
        _, true_index, pred_index = host_labels(y_true, y_pred, None, None, where)
        correct = true_index == pred_index
    else:
        y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
        if y_true.shape != y_pred.shape or y_true.ndim != 1:
            raise ValueError(f"{where}: y_true and y_pred must both have shape [n].")
        correct = y_true == y_pred
    weight = None
    if sample_weight is not None:
        weight = row_weights(xp, sample_weight, None, correct.shape[0], where)
    dtype = np.float64 if xp is np else jnp.result_type(float)
    hits = correct.astype(dtype)
    if weight is None:
        value = xp.mean(hits) if normalize else xp.sum(hits)
    else:
        total = xp.sum(hits * weight)
        value = total / xp.sum(weight) if normalize else total
    return output(xp, value)


def precision(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    labels: Sequence | None = None,
    pos_label: Any = 1,
    average: str | None = "binary",
    sample_weight: ArrayLike | None = None,
    zero_division: str | float = "warn",
    num_classes: int | None = None,
) -> Any:
    """Precision ``tp / (tp + fp)``; = ``sklearn.metrics.precision_score`` (same arguments).

    See :func:`f1` for ``labels``, ``pos_label``, ``average``, ``zero_division`` and
    ``num_classes``. A float eagerly (an array per class for ``average=None``)."""
    return _score(
        "precision",
        y_true,
        y_pred,
        labels,
        pos_label,
        average,
        sample_weight,
        zero_division,
        num_classes,
    )


def recall(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    labels: Sequence | None = None,
    pos_label: Any = 1,
    average: str | None = "binary",
    sample_weight: ArrayLike | None = None,
    zero_division: str | float = "warn",
    num_classes: int | None = None,
) -> Any:
    """Recall ``tp / (tp + fn)``; = ``sklearn.metrics.recall_score`` (same arguments).

    See :func:`f1` for the arguments."""
    return _score(
        "recall",
        y_true,
        y_pred,
        labels,
        pos_label,
        average,
        sample_weight,
        zero_division,
        num_classes,
    )


def f1(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    labels: Sequence | None = None,
    pos_label: Any = 1,
    average: str | None = "binary",
    sample_weight: ArrayLike | None = None,
    zero_division: str | float = "warn",
    num_classes: int | None = None,
) -> Any:
    """F1 ``2 tp / (2 tp + fp + fn)``; = ``sklearn.metrics.f1_score`` (same arguments).

    Args:
      y_true, y_pred: [n] labels (class ids under jit).
      labels: the classes to score (and their order for ``average=None``); default: the
        labels present in either input (under jit: ``range(num_classes)``, of which the
        macro average takes the classes present, as scikit-learn).
      pos_label: the class scored by ``average="binary"``.
      average: ``"binary"`` (scikit-learn's default: the score of ``pos_label``; the data
        must hold at most two classes), ``"micro"``, ``"macro"``, ``"weighted"`` (by support)
        or None (one score per class).
      sample_weight: optional [n] weights.
      zero_division: the value of 0/0 (a class never predicted, say): ``"warn"`` (0.0, as
        scikit-learn's default, without the warning), 0.0, 1.0 or NaN (NaN scores are then
        left out of the averages).
      num_classes: K, a static Python int; required under ``jax.jit`` (unless ``labels``).
    """
    return _score(
        "f1", y_true, y_pred, labels, pos_label, average, sample_weight, zero_division, num_classes
    )


def _score(
    metric, y_true, y_pred, labels, pos_label, average, sample_weight, zero_division, num_classes
):
    if average not in _SCORE_AVERAGES:
        raise ValueError(f"{metric}: average must be one of {_SCORE_AVERAGES}; got {average!r}.")
    if zero_division == "warn":
        zero_division = 0.0
    if not (
        isinstance(zero_division, int | float)
        and (zero_division in (0, 1) or np.isnan(zero_division))
    ):
        raise ValueError(
            f"{metric}: zero_division must be 'warn', 0.0, 1.0 or nan; got {zero_division!r}."
        )
    xp = backend(y_true, y_pred, sample_weight)
    if xp is np:
        classes, true_index, pred_index = host_labels(y_true, y_pred, None, None, metric)
        if average == "binary":
            if len(classes) > 2:
                raise ValueError(
                    f"{metric}: the labels hold {len(classes)} classes ({classes[:5].tolist()} "
                    "...) but average='binary'; choose average='micro', 'macro', 'weighted' or "
                    "None."
                )
            if pos_label not in classes.tolist() and len(classes) >= 2:
                raise ValueError(
                    f"{metric}: pos_label={pos_label!r} is not a label of the data "
                    f"({classes.tolist()})."
                )
            chosen = np.asarray([pos_label])
        else:
            chosen = classes if labels is None else np.asarray(labels)
        # Score the chosen classes; other labels count only as misses of the chosen ones.
        true_index = label_index(chosen, host_array(y_true, "y_true", metric))
        pred_index = label_index(chosen, host_array(y_pred, "y_pred", metric))
        k = len(chosen)
    else:
        if average == "binary":
            labels = [pos_label]
        k, true_index, pred_index = traced_labels(y_true, y_pred, labels, num_classes, metric)
    weight = row_weights(xp, sample_weight, None, true_index.shape[0], metric)
    zero = xp.zeros((), weight.dtype)
    hit = (true_index == pred_index) & (true_index >= 0)
    tp = scatter_add(xp, k, xp.where(hit, true_index, 0), xp.where(hit, weight, zero))
    true_sum = scatter_add(
        xp, k, xp.where(true_index >= 0, true_index, 0), xp.where(true_index >= 0, weight, zero)
    )
    pred_sum = scatter_add(
        xp, k, xp.where(pred_index >= 0, pred_index, 0), xp.where(pred_index >= 0, weight, zero)
    )
    if average == "micro":
        tp, true_sum, pred_sum = (xp.sum(a, keepdims=True) for a in (tp, true_sum, pred_sum))
    dtype = np.float64 if xp is np else jnp.result_type(float)
    tp, true_sum, pred_sum = (a.astype(dtype) for a in (tp, true_sum, pred_sum))
    if metric == "precision":
        values = _zero_division(xp, tp, pred_sum, zero_division)
    elif metric == "recall":
        values = _zero_division(xp, tp, true_sum, zero_division)
    else:
        values = _zero_division(xp, 2.0 * tp, true_sum + pred_sum, zero_division)
    if average is None:
        return values if xp is not np else np.asarray(values)
    if xp is not np and labels is None and average == "macro":
        # Traced: scikit-learn's classes are those present in either input.
        present = (true_sum + pred_sum) > 0
        weights = present.astype(dtype)
    else:
        weights = true_sum if average == "weighted" else xp.ones_like(values)
    return output(xp, _nan_average(xp, values, weights))


def _zero_division(xp: ModuleType, numerator: Any, denominator: Any, zero_division: float) -> Any:
    zero = denominator == 0
    return xp.where(zero, zero_division, numerator / xp.where(zero, 1.0, denominator))


def _nan_average(xp: ModuleType, values: Any, weights: Any) -> Any:
    """scikit-learn's ``_nanaverage``: NaN scores left out; all-zero weights count equally."""
    keep = ~xp.isnan(values)
    weights = xp.where(keep, weights, 0.0)
    uniform = keep.astype(values.dtype)
    weights = xp.where(xp.sum(weights) > 0, weights, uniform)
    total = xp.sum(weights)
    summed = xp.sum(xp.where(keep, values, 0.0) * weights)
    return xp.where(total > 0, summed / xp.where(total > 0, total, 1.0), np.nan)


__all__ = ["accuracy", "f1", "precision", "recall"]
