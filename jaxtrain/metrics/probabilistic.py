"""Metrics of predicted probabilities: log loss, top-k accuracy and calibration.

``log_loss`` and ``top_k_accuracy`` equal scikit-learn's ``log_loss`` and
``top_k_accuracy_score`` (ties, ``sample_weight``, ``normalize`` and ``labels`` included) on
the same inputs; ``calibration_bins`` of binary probabilities equals
``sklearn.calibration.calibration_curve(strategy="uniform")`` on its non-empty bins. Eagerly
they check their inputs (a label outside the classes, NaN, probabilities outside [0, 1],
mismatched lengths: ``ValueError``) and compute in float64 NumPy; traced (under ``jax.jit``,
``n_bins`` and ``k`` static) they are ``jax.numpy`` and a label outside ``[0, K)`` makes the
result NaN. ``reliability_diagram`` draws a PNG on the host.

The classes are the columns of the probability matrix, ``0 .. K-1``, or the K values of
``labels``. (scikit-learn infers them from ``y_true``; with every class present in
``y_true`` that is the same thing, else pass it ``labels=range(K)``.)
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from jaxtrain.metrics._common import (
    backend,
    check_finite,
    check_lengths,
    check_weights,
    class_ids,
    float_dtype,
    host_array,
    output,
    scatter_add,
    static_int,
)


def _scores(xp: ModuleType, values: Any, name: str, where: str) -> Any:
    """Scores as floats: checked host float64 eagerly, the traced dtype (>= f32) else."""
    if xp is np:
        values = check_finite(where, name, host_array(values, name, where))
        return values.astype(np.float64)
    values = jnp.asarray(values)
    return values.astype(float_dtype(xp, values))


def _labels(
    xp: ModuleType,
    y_true: Any,
    num_classes: int,
    labels: Any,
    n: int,
    where: str,
    scores_name: str = "y_proba",
) -> tuple[Any, Any]:
    """(int ids [n], bool valid [n]): checked eagerly (all valid), masked when traced."""
    if xp is np:
        y = host_array(y_true, "y_true", where)
        check_lengths(where, **{"y_true": y, scores_name: np.empty(n)})
        ids = class_ids(where, y, num_classes, labels)
        return ids, np.ones(n, bool)
    y = jnp.asarray(y_true)
    if y.shape != (n,):
        raise ValueError(
            f"{where}: y_true must have shape [{n}] (one label per row); got {y.shape}."
        )
    if labels is not None:
        classes = jnp.asarray(labels)
        match = y[:, None] == classes[None, :]
        return jnp.argmax(match, axis=1), jnp.any(match, axis=1)
    y = y.astype(jnp.int32)
    return y, (y >= 0) & (y < num_classes)


def _probabilities(xp: ModuleType, y_proba: Any, where: str) -> Any:
    """[n, K] probabilities (a 1-D [n] is P(class 1), expanded to [1 - p, p])."""
    dtype_eps = None
    if xp is np:
        raw = host_array(y_proba, "y_proba", where)
        if raw.dtype.kind == "f":
            dtype_eps = np.finfo(raw.dtype).eps
    p = _scores(xp, y_proba, "y_proba", where)
    if p.ndim == 1:
        p = xp.stack([1 - p, p], axis=1)
    if p.ndim != 2:
        raise ValueError(f"{where}: y_proba must have shape [n, K] or [n]; got {p.shape}.")
    if xp is np:
        check_lengths(where, y_proba=p)
        if p.max() > 1 or p.min() < 0:
            bad = p.max() if p.max() > 1 else p.min()
            raise ValueError(f"{where}: y_proba holds {bad}, outside [0, 1]; pass probabilities.")
    eps = dtype_eps if dtype_eps is not None else xp.finfo(p.dtype).eps
    return p, eps


def _average(xp: ModuleType, values: Any, weight: Any, normalize: bool) -> Any:
    if weight is None:
        return xp.mean(values) if normalize else xp.sum(values)
    total = xp.sum(values * weight)
    return total / xp.sum(weight) if normalize else total


def _weights(xp: ModuleType, sample_weight: Any, n: int, dtype: Any, where: str) -> Any:
    if sample_weight is None:
        return None
    if xp is np:
        return check_weights(where, sample_weight, n)
    weight = jnp.asarray(sample_weight, dtype)
    if weight.shape != (n,):
        raise ValueError(f"{where}: sample_weight must have shape [{n}]; got {weight.shape}.")
    return weight


def _poison(xp: ModuleType, value: Any, valid: Any) -> Any:
    """``value``, or NaN when some label was outside the classes (traced only)."""
    if xp is np:
        return value
    return jnp.where(jnp.all(valid), value, jnp.nan)


def log_loss(
    y_true: ArrayLike,
    y_proba: ArrayLike,
    *,
    normalize: bool = True,
    sample_weight: ArrayLike | None = None,
    labels: ArrayLike | None = None,
) -> Any:
    """Mean negative log-likelihood; = ``sklearn.metrics.log_loss``.

    Args:
      y_true: [n] class ids in ``[0, K)`` (0/1 for binary), or the values of ``labels``.
      y_proba: f[n, K] class probabilities, or f[n] the probability of class 1 (binary,
        expanded to ``[1 - p, p]`` as scikit-learn does).
      normalize: the mean (True) or the sum (False) of the per-row losses.
      sample_weight: optional f[n] row weights.
      labels: optional K class values, in the order of the columns.

    Returns:
      A float (eager) or scalar array (traced). As in scikit-learn (1.5 and later),
      probabilities are clipped to ``[eps, 1 - eps]``, ``eps`` the machine epsilon of their
      dtype (so a confident mistake costs ``-log(eps)``, not infinity); rows are NOT
      renormalised (scikit-learn only warns when they do not sum to 1). Eagerly a label
      outside the classes, a probability outside [0, 1] or NaN is a ValueError (before, an
      unknown label silently cost nothing); traced, such a label makes the result NaN.
    """
    xp = backend(y_true, y_proba, sample_weight)
    p, eps = _probabilities(xp, y_proba, "log_loss")
    n, num_classes = p.shape
    ids, valid = _labels(xp, y_true, num_classes, labels, n, "log_loss")
    weight = _weights(xp, sample_weight, n, p.dtype, "log_loss")
    safe = xp.where(valid, ids, 0)
    chosen = xp.take_along_axis(p, safe[:, None], axis=1)[:, 0]
    losses = -xp.log(xp.clip(chosen, eps, 1 - eps))
    return output(xp, _poison(xp, _average(xp, losses, weight, normalize), valid))


def top_k_accuracy(
    y_true: ArrayLike,
    y_score: ArrayLike,
    k: int = 2,
    *,
    normalize: bool = True,
    sample_weight: ArrayLike | None = None,
    labels: ArrayLike | None = None,
) -> Any:
    """Fraction of rows whose true class is among the k best scores; = ``top_k_accuracy_score``.

    Args:
      y_true: [n] class ids in ``[0, K)``, or the values of ``labels``.
      y_score: f[n, K] class scores; or f[n] binary scores, where (as in scikit-learn) a
        row is a hit for ``k == 1`` when ``(score > threshold) == y_true``, the threshold being
        0.5 if every score lies in [0, 1] and 0 otherwise, and always a hit for ``k >= 2``.
      k: a Python int >= 1 (static under jit); scikit-learn's default 2.
      normalize, sample_weight, labels: as in scikit-learn (``normalize=False``: the
        (weighted) number of hits).

    Returns:
      A float (eager) or scalar array (traced). Ties as in scikit-learn, whose order is a
      stable ascending argsort read backwards: among equal scores the class with the larger
      index ranks first. So the true class ``c`` is a hit when
      ``#{j: s_j > s_c} + #{j > c: s_j == s_c} < k``. For two classes scikit-learn only takes
      1-D scores; pass ``y_score[:, 1]`` to agree with it.
    """
    k = static_int(k, "k", "top_k_accuracy")
    xp = backend(y_true, y_score, sample_weight)
    scores = _scores(xp, y_score, "y_score", "top_k_accuracy")
    if scores.ndim not in (1, 2):
        raise ValueError(f"top_k_accuracy: y_score must be [n, K] or [n]; got {scores.shape}.")
    n = scores.shape[0]
    if xp is np:
        check_lengths("top_k_accuracy", y_score=scores)
    num_classes = 2 if scores.ndim == 1 else scores.shape[1]
    ids, valid = _labels(xp, y_true, num_classes, labels, n, "top_k_accuracy", "y_score")
    weight = _weights(xp, sample_weight, n, scores.dtype, "top_k_accuracy")
    if scores.ndim == 1:
        if k >= 2:
            hits = xp.ones(n, bool)
        else:
            probability = (xp.min(scores) >= 0) & (xp.max(scores) <= 1)
            threshold = xp.where(probability, 0.5, 0.0).astype(scores.dtype)
            hits = (scores > threshold) == (ids != 0)
    else:
        safe = xp.where(valid, ids, 0)
        true_score = xp.take_along_axis(scores, safe[:, None], axis=1)
        classes = xp.arange(num_classes)
        ahead = (scores > true_score) | ((scores == true_score) & (classes > safe[:, None]))
        hits = xp.sum(ahead, axis=1) < k
    value = _average(xp, hits.astype(scores.dtype), weight, normalize)
    return output(xp, _poison(xp, value, valid))


def _bin_edges(n_bins: int, dtype: np.dtype) -> np.ndarray:
    """Inner edges of ``n_bins`` equal-width bins on [0, 1], in ``dtype``.

    scikit-learn compares float32 probabilities with float64 edges; each edge is rounded DOWN
    to ``dtype`` so that ``p > edge`` gives the same answer in ``dtype`` as in float64.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    rounded = edges.astype(dtype)
    above = rounded.astype(np.float64) > edges
    rounded[above] = np.nextafter(rounded[above], np.asarray(-np.inf, dtype))
    return rounded


def calibration_bins(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 15) -> dict[str, Any]:
    """Per-bin accuracy, mean confidence and count over equal-width confidence bins.

    Args:
      y_true: [n] class ids in ``[0, K)`` (0/1 for 1-D ``y_prob``).
      y_prob: f[n, K] class probabilities: the confidence is the top probability and the
        outcome whether its class (the argmax, first on ties) is the true class (top-label
        calibration). Or f[n], the probability of class 1: confidence ``p``, outcome
        ``y_true == 1`` (the reliability of a binary classifier's positive-class probability).
      n_bins: number of bins (static). Bin ``0`` is ``[0, 1/M]`` and bin ``m`` is ``(m/M,
        (m+1)/M]``: right-closed, the rule of scikit-learn's ``calibration_curve``.

    Returns:
      ``{"accuracy": f[M], "confidence": f[M], "count": int[M]}`` (NumPy eagerly): the mean
      outcome and mean confidence of each bin, and its size; an empty bin has accuracy and
      confidence 0. For 1-D ``y_prob``, the non-empty bins' ``accuracy`` and ``confidence``
      are ``calibration_curve(y_true, y_prob, n_bins=M, strategy="uniform")``'s ``prob_true``
      and ``prob_pred``. Traced, a label outside the classes makes every entry NaN.
    """
    n_bins = static_int(n_bins, "n_bins", "calibration_bins")
    xp, confidence, outcome, valid = _confidence_outcome(y_true, y_prob, "calibration_bins")
    bins = _assign_bins(xp, confidence, n_bins)
    count = scatter_add(xp, n_bins, bins, xp.ones(bins.shape, xp.int32))
    outcome_sum = scatter_add(xp, n_bins, bins, outcome)
    confidence_sum = scatter_add(xp, n_bins, bins, confidence)
    safe = xp.maximum(count, 1).astype(confidence.dtype)
    return {
        "accuracy": _poison(xp, xp.where(count > 0, outcome_sum / safe, 0.0), valid),
        "confidence": _poison(xp, xp.where(count > 0, confidence_sum / safe, 0.0), valid),
        "count": count,
    }


def expected_calibration_error(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 15) -> Any:
    """Expected calibration error: ``sum_m (count_m / n) |accuracy_m - confidence_m|``.

    The bins and the confidence are those of ``calibration_bins`` (top-label confidence for
    ``[n, K]`` probabilities, equal-width right-closed bins over [0, 1]; 15 bins as in Guo et
    al. 2017). A float in [0, 1]; 0 for perfect calibration.
    """
    n_bins = static_int(n_bins, "n_bins", "expected_calibration_error")
    xp, confidence, outcome, valid = _confidence_outcome(
        y_true, y_prob, "expected_calibration_error"
    )
    bins = _assign_bins(xp, confidence, n_bins)
    gap = scatter_add(xp, n_bins, bins, outcome - confidence)
    return output(xp, _poison(xp, xp.sum(xp.abs(gap)) / confidence.shape[0], valid))


def _confidence_outcome(y_true: ArrayLike, y_prob: ArrayLike, name: str):
    """(xp, confidence f[n], outcome f[n], valid bool[n])."""
    xp = backend(y_true, y_prob)
    p = _scores(xp, y_prob, "y_prob", name)
    if p.ndim not in (1, 2):
        raise ValueError(f"{name}: y_prob must have shape [n, K] or [n]; got {p.shape}.")
    if xp is np:
        check_lengths(name, y_prob=p)
        if p.max() > 1 or p.min() < 0:
            bad = p.max() if p.max() > 1 else p.min()
            raise ValueError(f"{name}: y_prob holds {bad}, outside [0, 1]; pass probabilities.")
    num_classes = 2 if p.ndim == 1 else p.shape[1]
    ids, valid = _labels(xp, y_true, num_classes, None, p.shape[0], name, "y_prob")
    if p.ndim == 1:
        return xp, p, (ids == 1).astype(p.dtype), valid
    correct = xp.argmax(p, axis=1) == ids
    return xp, xp.max(p, axis=1), correct.astype(p.dtype), valid


def _assign_bins(xp: ModuleType, confidence: Any, n_bins: int) -> Any:
    edges = xp.asarray(_bin_edges(n_bins, np.dtype(confidence.dtype)))
    return xp.searchsorted(edges, confidence, side="left").astype(xp.int32)


def reliability_diagram(
    y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 15, path: str | Path = "reliability.png"
) -> Path:
    """Draw a reliability diagram (per-bin accuracy against confidence) as a PNG; host only.

    Bars show each bin's accuracy, a red outline its mean confidence (the gap to the diagonal
    is miscalibration), and a lower panel the bin counts; the title gives the ECE. Bins as in
    ``calibration_bins``. Returns the path written (parent folders are created).
    """
    y_true, y_prob = np.asarray(jax.device_get(y_true)), np.asarray(jax.device_get(y_prob))
    bins = calibration_bins(y_true, y_prob, n_bins)
    ece = float(expected_calibration_error(y_true, y_prob, n_bins))
    width = 1.0 / n_bins
    centres = (np.arange(n_bins) + 0.5) * width
    filled = bins["count"] > 0
    fig = Figure(figsize=(5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.bar(centres[filled], bins["accuracy"][filled], width, edgecolor="black", label="accuracy")
    top.bar(
        centres[filled],
        bins["confidence"][filled] - bins["accuracy"][filled],
        width,
        bottom=bins["accuracy"][filled],
        color="none",
        edgecolor="tab:red",
        hatch="//",
        label="gap to confidence",
    )
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"Reliability (ECE = {ece:.4f})")
    top.legend(loc="upper left")
    bottom.bar(centres, bins["count"], width, color="tab:gray", edgecolor="black")
    bottom.set(xlabel="confidence", ylabel="count")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=120)
    return path


__all__ = [
    "calibration_bins",
    "expected_calibration_error",
    "log_loss",
    "reliability_diagram",
    "top_k_accuracy",
]
