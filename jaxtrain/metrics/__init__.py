"""Metrics: pure reductions (jittable where shapes allow) that equal scikit-learn's and
fairlearn's on the same inputs, plus bootstrap confidence intervals as one vmap."""

from jaxtrain.metrics.bootstrap import bootstrap_ci, bootstrap_ci_weighted, bootstrap_indices
from jaxtrain.metrics.classification import classification_metrics, confusion_matrix
from jaxtrain.metrics.fairness import (
    apply_thresholds,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    group_confusion,
    group_metrics,
    group_rates,
    group_thresholds,
    reweighing_weights,
)
from jaxtrain.metrics.probabilistic import (
    calibration_bins,
    expected_calibration_error,
    log_loss,
    reliability_diagram,
    top_k_accuracy,
)
from jaxtrain.metrics.ranking import (
    average_precision,
    precision_recall_curve,
    roc_auc,
    roc_auc_ovr,
    roc_curve,
)
from jaxtrain.metrics.regression import mae, mse, r2, rmse

__all__ = [
    "apply_thresholds",
    "average_precision",
    "bootstrap_ci",
    "bootstrap_ci_weighted",
    "bootstrap_indices",
    "calibration_bins",
    "classification_metrics",
    "confusion_matrix",
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equalized_odds_ratio",
    "expected_calibration_error",
    "group_confusion",
    "group_metrics",
    "group_rates",
    "group_thresholds",
    "log_loss",
    "mae",
    "mse",
    "precision_recall_curve",
    "r2",
    "reliability_diagram",
    "reweighing_weights",
    "rmse",
    "roc_auc",
    "roc_auc_ovr",
    "roc_curve",
    "top_k_accuracy",
]
