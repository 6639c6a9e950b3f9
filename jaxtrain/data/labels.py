"""Labels: the label set (class names <-> ids), validation, class balance and class weights."""

from __future__ import annotations

import numpy as np

MISSING_LABEL = -1  # an id for a label that is missing or outside the label set


def infer_class_names(labels: np.ndarray) -> tuple[str, ...]:
    """The distinct labels present, as text: sorted as numbers when they all are numbers
    (``2`` before ``10``), else as text. Missing labels (None, NaN, empty) are left out."""
    present = {_text(v) for v in labels if not _missing(v)}
    try:
        return tuple(sorted(present, key=float))
    except ValueError:
        return tuple(sorted(present))


def label_ids(labels: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """Raw labels (any objects) -> int32 [n] class ids, :data:`MISSING_LABEL` where a label is
    missing or not one of ``class_names`` (compared as text, so ``1`` matches ``"1"``)."""
    index = {name: k for k, name in enumerate(class_names)}
    return np.array(
        [MISSING_LABEL if _missing(v) else index.get(_text(v), MISSING_LABEL) for v in labels],
        np.int32,
    )


def regression_targets(labels: np.ndarray) -> np.ndarray:
    """Raw labels -> float64 [n] targets, NaN where a label is missing or not a number.

    float64 until they are standardised (float32 would round 100000.3 to 100000.3047)."""
    out = np.full(len(labels), np.nan, np.float64)
    for i, value in enumerate(labels):
        try:
            out[i] = float(value)
        except (TypeError, ValueError):
            pass
    return out


def class_balance(labels: np.ndarray, class_names: tuple[str, ...]) -> dict[str, int]:
    """Examples per class, by name: labels int [n] -> {name: count} (every class listed)."""
    counts = np.bincount(labels, minlength=len(class_names))
    return {name: int(c) for name, c in zip(class_names, counts, strict=True)}


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """scikit-learn's ``compute_class_weight("balanced")``: ``n / (K * count_k)`` as f32[K].

    labels: int [n] ids of the training split. A class with no training example gets weight 0
    (scikit-learn refuses such a class; here it simply never contributes to the loss).
    """
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


def _missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating) and np.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _text(value) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))  # a label column with a gap is read as floats: 1.0 is "1"
    return str(value).strip()
