"""Metrics: pure reductions inside the step, scores on the host that equal scikit-learn's."""

from jaxtrain.metrics.classification import classification_metrics, confusion_matrix

__all__ = ["classification_metrics", "confusion_matrix"]
