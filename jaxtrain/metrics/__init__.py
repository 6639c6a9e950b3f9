"""Metrics with scikit-learn's (and fairlearn's) names for arguments and their conventions.

Every metric equals its scikit-learn (fairlearn) counterpart on the same inputs. Called
eagerly it checks its inputs (``ValueError`` for mismatched lengths, empty inputs, NaN,
labels outside the classes), infers class and group counts from the data, computes in
float64 NumPy (nothing is compiled, so no input length costs a compilation) and returns a
Python float (arrays for per-class values, matrices and curves). Under ``jax.jit``/``vmap``
the same functions are pure ``jax.numpy`` reductions (counts that set shapes static). See
:mod:`jaxtrain.metrics._common`. Bootstrap confidence intervals are one vmap.
"""

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
from jaxtrain.metrics.scores import accuracy, f1, precision, recall

__all__ = [
    "accuracy",
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
    "f1",
    "group_confusion",
    "group_metrics",
    "group_rates",
    "group_thresholds",
    "log_loss",
    "mae",
    "mse",
    "precision",
    "precision_recall_curve",
    "r2",
    "recall",
    "reliability_diagram",
    "reweighing_weights",
    "rmse",
    "roc_auc",
    "roc_auc_ovr",
    "roc_curve",
    "top_k_accuracy",
]
