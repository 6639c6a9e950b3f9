"""Metrics of predicted probabilities: log loss, top-k accuracy and calibration.

``log_loss`` and ``top_k_accuracy`` equal scikit-learn's ``log_loss`` and
``top_k_accuracy_score`` (ties included) on the same inputs; ``calibration_bins`` of binary
probabilities equals ``sklearn.calibration.calibration_curve(strategy="uniform")`` on its
non-empty bins. All are pure and jittable (``n_bins`` and ``k`` static);
``reliability_diagram`` draws a PNG on the host.
"""

from __future__ import annotations

import operator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike


def _float(x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _check_labels(y_true: ArrayLike, n: int, name: str) -> jax.Array:
    y = jnp.asarray(y_true)
    if y.shape != (n,):
        raise ValueError(
            f"{name}: y_true must have shape [{n}] (one label per row); got {y.shape}."
        )
    return y


def log_loss(y_true: ArrayLike, probs: ArrayLike) -> jax.Array:
    """Mean negative log-likelihood; = ``sklearn.metrics.log_loss``.

    Args:
      y_true: i32[n] class ids in ``[0, K)`` (0/1 for binary).
      probs: f32[n, K] class probabilities, or f32[n] the probability of class 1 (binary,
        expanded to ``[1 - p, p]`` as scikit-learn does).

    Returns:
      A float scalar. As in scikit-learn (1.5 and later), probabilities are clipped to
      ``[eps, 1 - eps]`` with ``eps`` the machine epsilon of their dtype (so a confident
      mistake costs ``-log(eps)``, not infinity), and rows are NOT renormalised (scikit-learn
      only warns when they do not sum to 1). Score ``probs`` in the dtype you compare in:
      scikit-learn keeps float32 inputs float32. Compare with ``labels=range(K)`` when some
      class is absent from ``y_true``. Unlike scikit-learn, values outside [0, 1] are not
      checked (they cannot be, under jit).
    """
    probs = _float(probs)
    if probs.ndim == 1:
        probs = jnp.stack([1 - probs, probs], axis=1)
    if probs.ndim != 2:
        raise ValueError(f"log_loss: probs must have shape [n, K] or [n]; got {probs.shape}.")
    y = _check_labels(y_true, probs.shape[0], "log_loss")
    eps = jnp.finfo(probs.dtype).eps
    probs = jnp.clip(probs, eps, 1 - eps)
    onehot = y[:, None] == jnp.arange(probs.shape[1])
    return jnp.mean(-jnp.sum(jnp.where(onehot, jnp.log(probs), 0.0), axis=1))


def top_k_accuracy(y_true: ArrayLike, scores: ArrayLike, k: int) -> jax.Array:
    """Fraction of rows whose true class is among the k best scores; = ``top_k_accuracy_score``.

    Args:
      y_true: i32[n] class ids in ``[0, K)``.
      scores: f32[n, K] class scores; or f32[n] binary scores, where (as in scikit-learn) a
        row is a hit for ``k == 1`` when ``(score > threshold) == y_true``, the threshold being
        0.5 if every score lies in [0, 1] and 0 otherwise, and always a hit for ``k >= 2``.
      k: a Python int >= 1 (static under jit).

    Returns:
      A float scalar. Ties as in scikit-learn, whose order is a stable ascending argsort read
      backwards: among equal scores the class with the larger index ranks first. So the true
      class ``c`` is a hit when ``#{j: s_j > s_c} + #{j > c: s_j == s_c} < k``. For two classes
      scikit-learn only takes 1-D scores; pass ``scores[:, 1]`` to agree with it.
    """
    k = operator.index(k)
    if k < 1:
        raise ValueError(f"top_k_accuracy: k must be >= 1; got {k}.")
    scores = _float(scores)
    y = _check_labels(y_true, scores.shape[0], "top_k_accuracy")
    if scores.ndim == 1:
        if k >= 2:
            return jnp.ones((), scores.dtype)
        probability = (jnp.min(scores) >= 0) & (jnp.max(scores) <= 1)
        threshold = jnp.where(probability, 0.5, 0.0).astype(scores.dtype)
        hits = (scores > threshold) == (y != 0)
        return jnp.mean(hits.astype(scores.dtype))
    if scores.ndim != 2:
        raise ValueError(f"top_k_accuracy: scores must be [n, K] or [n]; got {scores.shape}.")
    true_score = jnp.take_along_axis(scores, y[:, None], axis=1)
    classes = jnp.arange(scores.shape[1])
    ahead = (scores > true_score) | ((scores == true_score) & (classes > y[:, None]))
    hits = jnp.sum(ahead, axis=1) < k
    return jnp.mean(hits.astype(scores.dtype))


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


def calibration_bins(y_true: ArrayLike, probs: ArrayLike, n_bins: int = 15) -> dict[str, jax.Array]:
    """Per-bin accuracy, mean confidence and count over equal-width confidence bins.

    Args:
      y_true: i32[n] class ids.
      probs: f32[n, K] class probabilities: the confidence is the top probability and the
        outcome whether its class (the argmax, first on ties) is the true class (top-label
        calibration). Or f32[n], the probability of class 1: confidence ``p``, outcome
        ``y_true == 1`` (the reliability of a binary classifier's positive-class probability).
      n_bins: number of bins (static). Bin ``0`` is ``[0, 1/M]`` and bin ``m`` is ``(m/M,
        (m+1)/M]``: right-closed, the rule of scikit-learn's ``calibration_curve``.

    Returns:
      ``{"accuracy": f32[M], "confidence": f32[M], "count": i32[M]}``: the mean outcome and
      mean confidence of each bin, and its size; an empty bin has accuracy and confidence 0.
      For 1-D ``probs``, the non-empty bins' ``accuracy`` and ``confidence`` are
      ``calibration_curve(y_true, probs, n_bins=M, strategy="uniform")``'s ``prob_true`` and
      ``prob_pred``.
    """
    confidence, outcome = _confidence_outcome(y_true, probs, "calibration_bins")
    n_bins = operator.index(n_bins)
    if n_bins < 1:
        raise ValueError(f"calibration_bins: n_bins must be >= 1; got {n_bins}.")
    bins = _assign_bins(confidence, n_bins)
    count = jnp.zeros(n_bins, jnp.int32).at[bins].add(1)
    outcome_sum = jnp.zeros(n_bins, confidence.dtype).at[bins].add(outcome)
    confidence_sum = jnp.zeros(n_bins, confidence.dtype).at[bins].add(confidence)
    safe = jnp.maximum(count, 1).astype(confidence.dtype)
    return {
        "accuracy": jnp.where(count > 0, outcome_sum / safe, 0.0),
        "confidence": jnp.where(count > 0, confidence_sum / safe, 0.0),
        "count": count,
    }


def expected_calibration_error(y_true: ArrayLike, probs: ArrayLike, n_bins: int = 15) -> jax.Array:
    """Expected calibration error: ``sum_m (count_m / n) |accuracy_m - confidence_m|``.

    The bins and the confidence are those of ``calibration_bins`` (top-label confidence for
    ``[n, K]`` probabilities, equal-width right-closed bins over [0, 1]; 15 bins as in Guo et
    al. 2017). A float scalar in [0, 1]; 0 for perfect calibration.
    """
    confidence, outcome = _confidence_outcome(y_true, probs, "expected_calibration_error")
    n_bins = operator.index(n_bins)
    if n_bins < 1:
        raise ValueError(f"expected_calibration_error: n_bins must be >= 1; got {n_bins}.")
    bins = _assign_bins(confidence, n_bins)
    gap = jnp.zeros(n_bins, confidence.dtype).at[bins].add(outcome - confidence)
    return jnp.sum(jnp.abs(gap)) / confidence.shape[0]


def _confidence_outcome(y_true: ArrayLike, probs: ArrayLike, name: str):
    probs = _float(probs)
    y = _check_labels(y_true, probs.shape[0], name)
    if probs.ndim == 1:
        return probs, (y == 1).astype(probs.dtype)
    if probs.ndim != 2:
        raise ValueError(f"{name}: probs must have shape [n, K] or [n]; got {probs.shape}.")
    correct = jnp.argmax(probs, axis=1) == y
    return jnp.max(probs, axis=1), correct.astype(probs.dtype)


def _assign_bins(confidence: jax.Array, n_bins: int) -> jax.Array:
    edges = jnp.asarray(_bin_edges(n_bins, np.dtype(confidence.dtype)))
    return jnp.searchsorted(edges, confidence, side="left").astype(jnp.int32)


def reliability_diagram(
    y_true: ArrayLike, probs: ArrayLike, n_bins: int = 15, path: str | Path = "reliability.png"
) -> Path:
    """Draw a reliability diagram (per-bin accuracy against confidence) as a PNG; host only.

    Bars show each bin's accuracy, a red outline its mean confidence (the gap to the diagonal
    is miscalibration), and a lower panel the bin counts; the title gives the ECE. Bins as in
    ``calibration_bins``. Returns the path written (parent folders are created).
    """
    bins = jax.device_get(calibration_bins(y_true, probs, n_bins))
    ece = float(expected_calibration_error(y_true, probs, n_bins))
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
