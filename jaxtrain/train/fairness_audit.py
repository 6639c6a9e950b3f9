"""A run's fairness audit: per-group metrics and gaps on the test split, before and after
per-group thresholds fitted on the validation split.

Host-side glue over the pure functions of :mod:`jaxtrain.metrics.fairness` (which equal
fairlearn's definitions). Binary tasks only; the positive class is label 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.data import ArraySplit, DatasetError, PreparedData
from jaxtrain.data.sources import load_feature
from jaxtrain.metrics.fairness import (
    apply_thresholds,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    group_metrics,
    group_thresholds,
    reweighing_weights,
)


def sensitive_groups(config: Any, data: PreparedData) -> dict[str, np.ndarray]:
    """Each split's group ids (i32[n]) from ``fairness.sensitive_feature`` of the source,
    joined through the rows the preparation stage kept. Raises DatasetError (naming the key)
    for a feature that is missing or not small non-negative integers, or a non-binary task."""
    key = "fairness.sensitive_feature"
    if data.task != "classification" or data.num_classes != 2:
        raise DatasetError(f"{key}: fairness metrics need a binary classification dataset")
    if config.data.path is not None or not data.rows:
        raise DatasetError(f"{key}: only TFDS datasets (data.name) carry a sensitive feature")
    values = load_feature(config.data.name, config.data.data_dir, config.fairness.sensitive_feature)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer) or values.min() < 0:
        raise DatasetError(f"{key}: {config.fairness.sensitive_feature} must hold group ids 0..G-1")
    return {name: values[rows].astype(np.int32) for name, rows in data.rows.items()}


def count_groups(groups: dict[str, np.ndarray]) -> int:
    """G: one more than the largest group id in any split."""
    return int(max(g.max() for g in groups.values())) + 1


def training_weights(config: Any, data: PreparedData, groups: dict | None) -> PreparedData:
    """``data`` whose training split carries per-example loss weights: the class weights of
    ``data.prepare.class_weights`` times, with ``fairness.mitigation: reweighing``, the
    Kamiran-Calders weights of (group, label) on the training split. Unchanged if neither."""
    train = data.splits["train"]
    weights = None
    if data.class_weights is not None:
        weights = np.asarray(data.class_weights, np.float32)[train.labels]
    fairness = config.fairness
    if fairness is not None and fairness.mitigation == "reweighing":
        num_groups = count_groups(groups)
        reweighed = np.asarray(
            reweighing_weights(train.labels, groups["train"], num_groups, data.num_classes)
        )
        weights = reweighed if weights is None else weights * reweighed
    if weights is None:
        return data
    weighted = ArraySplit(train.inputs, train.labels, weights.astype(np.float32))
    return dataclasses.replace(data, splits={**data.splits, "train": weighted})


def _positive_scores(logits: np.ndarray) -> jax.Array:
    return jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)[:, 1]


def _summary(labels, predictions, groups, num_groups: int) -> dict[str, Any]:
    per_group = {
        name: np.asarray(values).tolist()
        for name, values in group_metrics(labels, predictions, groups, num_groups).items()
    }
    args = (labels, predictions, groups, num_groups)
    return {
        "accuracy": float(np.mean(np.asarray(predictions) == np.asarray(labels))),
        "demographic_parity_difference": float(demographic_parity_difference(*args)),
        "demographic_parity_ratio": float(demographic_parity_ratio(*args)),
        "equalized_odds_difference": float(equalized_odds_difference(*args)),
        "by_group": per_group,
    }


def fairness_audit(
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    test_groups: np.ndarray,
    validation_logits: np.ndarray,
    validation_labels: np.ndarray,
    validation_groups: np.ndarray,
    *,
    num_groups: int,
    constraint: str,
) -> dict[str, Any]:
    """``{"model": ..., "thresholds": ..., "after_thresholds": ...}``: the model's own
    decisions (argmax) on the test split, the per-group thresholds fitted on validation for
    ``constraint`` (demographic_parity or equal_opportunity), and the test split under them.
    Each summary holds accuracy, the demographic parity difference and ratio, the equalized
    odds difference and per-group count, accuracy, selection rate, TPR and FPR."""
    labels = jnp.asarray(test_labels, jnp.int32)
    groups = jnp.asarray(test_groups, jnp.int32)
    model = _summary(labels, jnp.argmax(test_logits, -1), groups, num_groups)
    thresholds = group_thresholds(
        _positive_scores(validation_logits),
        jnp.asarray(validation_labels, jnp.int32),
        jnp.asarray(validation_groups, jnp.int32),
        num_groups,
        constraint=constraint,
    )
    adjusted = apply_thresholds(_positive_scores(test_logits), groups, thresholds)
    return {
        "constraint": constraint,
        "model": model,
        "thresholds": np.asarray(thresholds).tolist(),
        "after_thresholds": _summary(labels, adjusted, groups, num_groups),
    }


def audit_lines(audit: dict[str, Any], mitigation: str) -> list[str]:
    """The report's fairness section: one row per decision rule, then per-group rates."""
    rows = [("model (argmax)", audit["model"])]
    rows.append((f"per-group thresholds ({audit['constraint']})", audit["after_thresholds"]))
    lines = [
        f"Mitigation in training: {mitigation}. Thresholds fitted on the validation split: "
        + ", ".join(f"group {g}: {t:.2f}" for g, t in enumerate(audit["thresholds"])),
        "",
        "| decisions | accuracy | DP difference | DP ratio | EO difference |",
        "|---|---|---|---|---|",
    ]
    for name, summary in rows:
        lines.append(
            f"| {name} | {summary['accuracy']:.4f} | "
            f"{summary['demographic_parity_difference']:.4f} | "
            f"{summary['demographic_parity_ratio']:.4f} | "
            f"{summary['equalized_odds_difference']:.4f} |"
        )
    lines += [
        "",
        "| group | count | accuracy | selection rate | TPR | FPR |",
        "|---|---|---|---|---|---|",
    ]
    by_group = audit["model"]["by_group"]
    for g, count in enumerate(by_group["count"]):
        lines.append(
            f"| {g} | {count} | {by_group['accuracy'][g]:.4f} | "
            f"{by_group['selection_rate'][g]:.4f} | {by_group['true_positive_rate'][g]:.4f} | "
            f"{by_group['false_positive_rate'][g]:.4f} |"
        )
    return lines
