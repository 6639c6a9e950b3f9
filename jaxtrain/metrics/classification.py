"""Classification metrics: confusion matrix, accuracy, precision, recall and F1.

Each equals scikit-learn's function of the same name (``confusion_matrix``,
``accuracy_score``, ``precision_score``, ``recall_score``, ``f1_score``) with its arguments
(``labels``, ``pos_label``, ``average``, ``sample_weight``, ``zero_division``, ``normalize``).
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
from types import ModuleType
from typing import Any

import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from jaxtrain.metrics._common import (
    backend,
    check_lengths,
    check_weights,
    host_array,
    output,
    scatter_add,
    static_int,
)

_AVERAGES = ("macro", "micro", "weighted")
_SCORE_AVERAGES = ("binary", "micro", "macro", "weighted", None)
_NORMALIZE = ("true", "pred", "all", None)


# --- labels -> class indices -------------------------------------------------------------------


def _host_labels(
    y_true: Any, y_pred: Any, labels: Any, num_classes: int | None, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(classes [K], true index [n], predicted index [n]); -1 where not a class. Eager."""
    y_true = host_array(y_true, "y_true", where)
    y_pred = host_array(y_pred, "y_pred", where)
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.ndim != 1:
            raise ValueError(
                f"{where}: {name} must have shape [n] (one label per row); got {y.shape}."
            )
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError(f"{where}: {name} holds NaN or infinite labels.")
    check_lengths(where, y_true=y_true, y_pred=y_pred)
    if labels is not None:
        classes = np.asarray(labels)
        if classes.ndim != 1 or len(classes) == 0:
            raise ValueError(f"{where}: labels must be a non-empty list of classes.")
        if len(np.unique(classes)) != len(classes):
            raise ValueError(f"{where}: labels lists a class twice: {classes.tolist()}.")
    elif num_classes is not None:
        classes = np.arange(static_int(num_classes, "num_classes", where))
    else:
        try:
            classes = np.unique(np.concatenate([y_true, y_pred]))
        except TypeError:
            raise ValueError(
                f"{where}: y_true and y_pred mix label types ({y_true.dtype}, {y_pred.dtype})."
            ) from None
    return classes, _index(classes, y_true), _index(classes, y_pred)


def _index(classes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of each value in ``classes``, -1 if absent."""
    order = np.argsort(classes, kind="stable")
    ordered = classes[order]
    try:
        position = np.clip(np.searchsorted(ordered, values), 0, len(classes) - 1)
        found = ordered[position] == values
    except TypeError:
        raise ValueError(
            "labels and the values in y_true / y_pred are of different types."
        ) from None
    return np.where(found, order[position], -1)


def _traced_labels(
    y_true: Any, y_pred: Any, labels: Any, num_classes: int | None, where: str
) -> tuple[int, Any, Any]:
    """(K, true index, predicted index); -1 where not a class. Under a transformation."""
    y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(
            f"{where}: y_true and y_pred must both have shape [n]; got {y_true.shape} and "
            f"{y_pred.shape}."
        )
    if labels is not None:
        classes = jnp.asarray(np.asarray(labels))
        index = lambda y: jnp.where(  # noqa: E731
            jnp.any(y[:, None] == classes, 1), jnp.argmax(y[:, None] == classes, 1), -1
        )
        return classes.shape[0], index(y_true), index(y_pred)
    if num_classes is None:
        raise TypeError(
            f"{where}: under jax.jit pass num_classes (a static Python int) or labels; the "
            "classes cannot be read from traced values."
        )
    k = static_int(num_classes, "num_classes", where)
    inside = lambda y: jnp.where((y >= 0) & (y < k), y, -1).astype(jnp.int32)  # noqa: E731
    return k, inside(y_true), inside(y_pred)


def _row_weights(xp: ModuleType, sample_weight: Any, mask: Any, n: int, where: str) -> Any:
    """Per-row weights: integers (exact counts) unless ``sample_weight`` is float."""
    if xp is np:
        weight = None
        if sample_weight is not None:
            raw = host_array(sample_weight, "sample_weight", where)
            weight = check_weights(where, raw, n)
            if raw.dtype.kind in "biu":
                weight = raw.astype(np.int64)
        if mask is not None:
            keep = host_array(mask, "mask", where)
            if keep.shape != (n,):
                raise ValueError(f"{where}: mask must have shape [{n}]; got {keep.shape}.")
            keep = keep.astype(bool)
            weight = keep.astype(np.int64) if weight is None else np.where(keep, weight, 0)
        return np.ones(n, np.int64) if weight is None else weight
    weight = jnp.ones(n, jnp.int32)
    if sample_weight is not None:
        weight = jnp.asarray(sample_weight)
        if not jnp.issubdtype(weight.dtype, jnp.floating):
            weight = weight.astype(jnp.int32)
    if mask is not None:
        keep = jnp.asarray(mask)
        if keep.shape != (n,):
            raise ValueError(f"{where}: mask must have shape {(n,)} like y_true; got {keep.shape}.")
        weight = jnp.where(keep.astype(bool), weight, jnp.zeros((), weight.dtype))
    if weight.shape != (n,):
        raise ValueError(f"{where}: sample_weight must have shape [{n}]; got {weight.shape}.")
    return weight


# --- confusion matrix and the scores -------------------------------------------------------------


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
        classes, true_index, pred_index = _host_labels(y_true, y_pred, labels, num_classes, where)
        k = len(classes)
        if labels is not None and not (true_index >= 0).any():
            raise ValueError(f"{where}: none of labels {classes.tolist()} is in y_true.")
    else:
        k, true_index, pred_index = _traced_labels(y_true, y_pred, labels, num_classes, where)
    weight = _row_weights(xp, sample_weight, mask, true_index.shape[0], where)
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
        _, true_index, pred_index = _host_labels(y_true, y_pred, None, None, where)
        correct = true_index == pred_index
    else:
        y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
        if y_true.shape != y_pred.shape or y_true.ndim != 1:
            raise ValueError(f"{where}: y_true and y_pred must both have shape [n].")
        correct = y_true == y_pred
    weight = None
    if sample_weight is not None:
        weight = _row_weights(xp, sample_weight, None, correct.shape[0], where)
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
        classes, true_index, pred_index = _host_labels(y_true, y_pred, None, None, metric)
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
        true_index = _index(chosen, host_array(y_true, "y_true", metric))
        pred_index = _index(chosen, host_array(y_pred, "y_pred", metric))
        k = len(chosen)
    else:
        if average == "binary":
            labels = [pos_label]
        k, true_index, pred_index = _traced_labels(y_true, y_pred, labels, num_classes, metric)
    weight = _row_weights(xp, sample_weight, None, true_index.shape[0], metric)
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
