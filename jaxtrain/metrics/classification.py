"""Classification metrics: the confusion matrix, and every score from summed counts.

``confusion_matrix`` equals scikit-learn's (``labels``, ``sample_weight``, ``normalize``);
the single scores with scikit-learn's arguments (``accuracy``, ``precision``, ``recall``,
``f1``) are in :mod:`jaxtrain.metrics.scores`.
Eagerly the labels may be any values (the classes are inferred from the data, sorted, as
scikit-learn does), inputs are checked (``ValueError``) and the arithmetic is float64 NumPy.
Under ``jax.jit``/``vmap`` the labels are class ids and ``num_classes`` (a static Python int)
says how many there are; ids outside ``[0, num_classes)`` are not counted.

The split suits an evaluation: ``confusion_matrix`` is a pure reduction that lives inside a
jitted (or pmapped, or scanned) eval step; its counts add up, so the matrices of all batches
and devices are simply summed. ``classification_metrics`` then turns the summed counts into
every score at once, on the host, in float64 NumPy, doing the same float operations in the
same order as scikit-learn, so every value equals ``accuracy_score`` and
``precision_recall_fscore_support`` (default ``labels=None``, ``zero_division="warn"``) on the
concatenated predictions, to the last digit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from jaxtrain.metrics._common import backend, host_labels, row_weights, scatter_add, traced_labels

_AVERAGES = ("macro", "micro", "weighted")
_NORMALIZE = ("true", "pred", "all", None)


def confusion_matrix(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    labels: Sequence | None = None,
    sample_weight: ArrayLike | None = None,
    normalize: str | None = None,
    num_classes: int | None = None,
    mask: ArrayLike | None = None,
) -> Any:
    """Count (true class, predicted class) pairs; = ``sklearn.metrics.confusion_matrix``.

    Args:
      y_true, y_pred: [n] labels (class ids under jit).
      labels: the K classes, in the order of the rows and columns; pairs with a label
        outside them are not counted (as scikit-learn). Default: ``range(num_classes)``, or
        eagerly the sorted labels present in either input.
      sample_weight: optional [n] weights; integer or boolean weights keep integer counts
        (as scikit-learn).
      normalize: ``"true"`` (rows sum to 1), ``"pred"`` (columns), ``"all"`` or None.
      num_classes: K, a Python int; required under ``jax.jit`` unless ``labels`` is given
        (``jax.jit(confusion_matrix, static_argnames="num_classes")``).
      mask: optional bool[n] (or 0/1 numbers); rows where it is False are padding and are
        not counted (jaxtrain's padded eval batches).

    Returns:
      [K, K] counts, entry ``[i, j]`` the (weighted) number of examples of true class ``i``
      predicted as class ``j`` (rows true, columns predicted): int32 traced, int64 NumPy
      eagerly (float with float weights or ``normalize``). Matrices of several batches or
      devices add up: sum them (on the host, in int64, beyond 2**31 examples) and pass the
      sum to ``classification_metrics``.
    """
    if normalize not in _NORMALIZE:
        raise ValueError(
            f"confusion_matrix: normalize must be one of {_NORMALIZE}; got {normalize!r}."
        )
    xp = backend(y_true, y_pred, sample_weight, mask)
    where = "confusion_matrix"
    if xp is np:
        classes, true_index, pred_index = host_labels(y_true, y_pred, labels, num_classes, where)
        k = len(classes)
        if labels is not None and not (true_index >= 0).any():
            raise ValueError(f"{where}: none of labels {classes.tolist()} is in y_true.")
    else:
        k, true_index, pred_index = traced_labels(y_true, y_pred, labels, num_classes, where)
    weight = row_weights(xp, sample_weight, mask, true_index.shape[0], where)
    counted = (true_index >= 0) & (pred_index >= 0)
    # Integer scatter-add: exact on every backend (a float one-hot matmul may run in reduced
    # precision on accelerators). Uncounted rows add 0 at index 0.
    cell = xp.where(counted, true_index * k + pred_index, 0)
    values = xp.where(counted, weight, xp.zeros((), weight.dtype))
    counts = scatter_add(xp, k * k, cell, values).reshape(k, k)
    if normalize is None:
        return counts
    counts = counts.astype(np.float64 if xp is np else jnp.result_type(float))
    if normalize == "true":
        total = counts.sum(axis=1, keepdims=True)
    elif normalize == "pred":
        total = counts.sum(axis=0, keepdims=True)
    else:
        total = counts.sum()
    return xp.where(total > 0, counts / xp.where(total > 0, total, 1), 0.0)


def classification_metrics(confusion: ArrayLike) -> dict[str, Any]:
    """Accuracy, precision, recall and F1 (per class and averaged) from a confusion matrix.

    Args:
      confusion: int[K, K] counts, rows true class and columns predicted class (NumPy or JAX;
        typically the sum of ``confusion_matrix`` over all batches). Float arrays are accepted
        if every entry is a whole number.

    Returns:
      A dict of Python values, equal to scikit-learn's on the predictions behind the counts:

      - ``accuracy``: float.
      - ``precision_{avg}``, ``recall_{avg}``, ``f1_{avg}`` for avg in macro, micro, weighted:
        floats. As in scikit-learn with ``labels=None``, the averages run over the classes
        present in the true labels or in the predictions; a class absent from both is left out.
      - when K == 2 also ``precision_binary``, ``recall_binary``, ``f1_binary``: floats, the
        scores of class 1 (``pos_label=1``); 0.0 if class 1 never appears.
      - ``per_class``: ``{"precision", "recall", "f1": list[float], "support": list[int]}``,
        each of length K (every class, present or not).
      - ``confusion_matrix``: list[list[int]], the counts.
      - ``count``: int, the number of examples.

      A ratio whose denominator is 0 (a class never predicted, say) is 0.0, which is
      scikit-learn's value for its default ``zero_division="warn"``.

    Raises:
      ValueError: if the matrix is not square, has negative or fractional entries, or counts
        no example at all.
    """
    counts = _as_counts(confusion)
    num_classes = counts.shape[0]
    count = int(counts.sum())
    if count == 0:
        raise ValueError(
            "classification_metrics: the confusion matrix counts no examples (total 0), so no "
            "metric is defined. Was the evaluation set empty, or every row masked out?"
        )

    tp = np.diagonal(counts).copy()  # int64[K]
    true_sum = counts.sum(axis=1)  # int64[K], the support
    pred_sum = counts.sum(axis=0)  # int64[K]
    precision, recall, f1 = _prf(tp, true_sum, pred_sum)

    # sklearn builds its labels from the data: classes seen in y_true or y_pred.
    present = (true_sum + pred_sum) > 0
    result: dict[str, Any] = {"accuracy": float(np.float64(tp.sum()) / np.float64(count))}
    for avg in _AVERAGES:
        if avg == "micro":
            scores = _prf(tp[present].sum(keepdims=True), np.array([count]), np.array([count]))
            values = [float(s[0]) for s in scores]
        else:
            weights = true_sum[present] if avg == "weighted" else None
            values = [
                float(np.average(s[present], weights=weights)) for s in (precision, recall, f1)
            ]
        for name, value in zip(("precision", "recall", "f1"), values, strict=True):
            result[f"{name}_{avg}"] = value
    if num_classes == 2:
        result["precision_binary"] = float(precision[1])
        result["recall_binary"] = float(recall[1])
        result["f1_binary"] = float(f1[1])
    result["per_class"] = {
        "precision": [float(v) for v in precision],
        "recall": [float(v) for v in recall],
        "f1": [float(v) for v in f1],
        "support": [int(v) for v in true_sum],
    }
    result["confusion_matrix"] = counts.tolist()
    result["count"] = count
    return result


def _prf(
    tp: np.ndarray, true_sum: np.ndarray, pred_sum: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 as f64[K] from int[K] counts, in sklearn's float operations."""
    precision = _divide(tp.astype(np.float64), pred_sum)
    recall = _divide(tp.astype(np.float64), true_sum)
    # sklearn: (1 + beta**2) * tp / (beta**2 * true_sum + pred_sum), beta = 1.
    f1 = _divide(2.0 * tp.astype(np.float64), true_sum.astype(np.float64) + pred_sum)
    return precision, recall, f1


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """f64 numerator / denominator, with 0.0 where the denominator is 0 (sklearn's default)."""
    zero = denominator == 0
    result = numerator / np.where(zero, 1, denominator).astype(np.float64)
    result[zero] = 0.0
    return result


def _as_counts(confusion: ArrayLike) -> np.ndarray:
    """Validate a confusion matrix and return it as int64[K, K]."""
    array = np.asarray(confusion)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise ValueError(
            "classification_metrics: confusion must be a square [num_classes, num_classes] "
            f"matrix; got shape {array.shape}."
        )
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        counts = array.astype(np.int64)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(
                "classification_metrics: confusion must hold whole-number counts; got "
                "fractional, NaN or infinite entries."
            )
        counts = array.astype(np.int64)
    else:
        raise ValueError(
            f"classification_metrics: confusion must hold integer counts; got dtype {array.dtype}."
        )
    if np.any(counts < 0):
        raise ValueError("classification_metrics: confusion has negative counts.")
    return counts
