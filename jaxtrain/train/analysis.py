"""The evidence about a finished model on held-out data, beyond the additive metrics.

From the model's outputs on a split (logits for classes, values for regression): ranking and
probabilistic metrics (ROC-AUC, PR-AUC, log loss, top-k accuracy, calibration error with a
reliability diagram) and bootstrap confidence intervals of the headline metrics, each
interval one vmap over resamples. Pure functions from ``jaxtrain.metrics``; this module only
picks which apply to the task and collects them for ``metrics.json`` and the report.

Classification intervals resample by weights (``bootstrap_ci_weighted``: each resample is
how often each row was drawn, the very draws of ``bootstrap_ci``), so the scores are sorted
once per class and not once per resample: the same interval, about 20x faster on a
5,000-row test split (scripts/bench_analysis.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.metrics import (
    average_precision,
    bootstrap_ci,
    bootstrap_ci_weighted,
    expected_calibration_error,
    log_loss,
    mae,
    r2,
    reliability_diagram,
    rmse,
    roc_auc,
    roc_auc_ovr,
    top_k_accuracy,
)

BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95


def _interval(metric, *arrays, key) -> tuple[jax.Array, jax.Array, jax.Array]:
    return bootstrap_ci(
        metric, *arrays, key=key, n_resamples=BOOTSTRAP_RESAMPLES, confidence=CONFIDENCE
    )


def _weighted_interval(metric, *arrays, key) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``metric(*arrays, weights)`` over resamples given as row counts (see the module)."""
    return bootstrap_ci_weighted(
        metric, *arrays, key=key, n_resamples=BOOTSTRAP_RESAMPLES, confidence=CONFIDENCE
    )


def _as_interval(values) -> dict[str, float]:
    point, low, high = values
    return {"value": float(point), "low": float(low), "high": float(high)}


@jax.jit
def _classification_numbers(logits: jax.Array, labels: jax.Array, key: jax.Array) -> dict:
    """Every number of :func:`classification_analysis` in one compiled program (one compile
    per shape, kept by the compilation cache, instead of thousands of eager dispatches)."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    num_classes = probs.shape[-1]
    accuracy = lambda y, p, w: jnp.sum(w * (jnp.argmax(p, -1) == y)) / jnp.sum(w)  # noqa: E731
    result = {
        "log_loss": log_loss(labels, probs),
        "ece": expected_calibration_error(labels, probs),
    }
    if num_classes == 2:
        auc = lambda y, p, w: roc_auc(y, p[:, 1], sample_weight=w)  # noqa: E731
        result["roc_auc"] = roc_auc(labels, probs[:, 1])
        result["pr_auc"] = average_precision(labels, probs[:, 1])
    else:
        auc = lambda y, p, w: roc_auc_ovr(y, p, sample_weight=w)  # noqa: E731
        result["roc_auc_ovr_macro"] = roc_auc_ovr(labels, probs)
        result["pr_auc_ovr_macro"] = average_precision(labels, probs)
        for k in (2, 5):
            if k < num_classes:
                result[f"top_{k}_accuracy"] = top_k_accuracy(labels, probs, k)
    result["probabilities"] = probs
    result["intervals"] = {
        "accuracy": _weighted_interval(accuracy, labels, probs, key=key),
        "roc_auc": _weighted_interval(auc, labels, probs, key=jax.random.fold_in(key, 1)),
    }
    return result


def classification_analysis(
    logits: np.ndarray, labels: np.ndarray, seed: int, plot_path: Path | None = None
) -> dict[str, Any]:
    """logits f32[n, K], labels i32[n] -> ranking, probabilistic and calibration metrics, and
    95% bootstrap intervals of accuracy (and ROC-AUC). Writes the reliability diagram to
    ``plot_path`` when given. AUCs of a class absent from ``labels`` are NaN."""
    labels = np.asarray(labels, np.int32)
    numbers = jax.device_get(
        _classification_numbers(
            jnp.asarray(logits, jnp.float32), jnp.asarray(labels), jax.random.key(seed)
        )
    )
    intervals, probs = numbers.pop("intervals"), numbers.pop("probabilities")
    result: dict[str, Any] = {name: float(value) for name, value in numbers.items()}
    result["intervals"] = {name: _as_interval(values) for name, values in intervals.items()}
    if plot_path is not None:
        result["reliability_diagram"] = reliability_diagram(labels, probs, path=plot_path).name
    return result


def regression_analysis(values: np.ndarray, targets: np.ndarray, seed: int) -> dict[str, Any]:
    """values f32[n, k], targets f32[n] or [n, k] (both in the data's units) -> 95% bootstrap
    intervals of R², RMSE and MAE."""
    values = jnp.asarray(values, jnp.float32)
    targets = jnp.asarray(targets, jnp.float32).reshape(values.shape)
    key = jax.random.key(seed)
    return {
        "intervals": {
            name: _as_interval(values)
            for name, values in jax.device_get(_regression_numbers(targets, values, key)).items()
        }
    }


@jax.jit
def _regression_numbers(targets: jax.Array, values: jax.Array, key: jax.Array) -> dict:
    metrics = {"r2": r2, "rmse": rmse, "mae": mae}
    return {
        name: _interval(lambda y, p, f=fn: f(y, p), targets, values, key=jax.random.fold_in(key, i))
        for i, (name, fn) in enumerate(metrics.items())
    }
