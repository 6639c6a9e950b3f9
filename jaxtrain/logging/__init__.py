"""Run outputs: metrics to JSONL and TensorBoard, plots as PNG, and a markdown report."""

from jaxtrain.logging.plots import plot_confusion_matrix, plot_learning_curves
from jaxtrain.logging.report import write_report
from jaxtrain.logging.writers import MetricWriter, read_metrics, truncate_after

__all__ = [
    "MetricWriter",
    "plot_confusion_matrix",
    "plot_learning_curves",
    "read_metrics",
    "truncate_after",
    "write_report",
]
