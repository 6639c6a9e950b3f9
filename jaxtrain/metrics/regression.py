"""Regression metrics; equal to scikit-learn's on the same predictions.

``mse``, ``rmse``, ``mae`` and ``r2`` are ``mean_squared_error``, ``root_mean_squared_error``,
``mean_absolute_error`` and ``r2_score``, with scikit-learn's arguments (``sample_weight``,
``multioutput``, and ``force_finite`` for ``r2``). Eagerly they check their inputs and compute
in float64 NumPy (a Python float back); under ``jax.jit``/``vmap`` they are pure ``jax.numpy``
in the inputs' float dtype (see :mod:`jaxtrain.metrics._common`).

Shapes: ``y_true`` and ``y_pred`` are both [n] (one target) or both [n, k] ([n] and [n, 1]
mix). Errors are first averaged over examples per target; ``multioutput="uniform_average"``
(the default) then averages the k target scores, ``"raw_values"`` returns them ([k], k = 1 for
1-D inputs, as in scikit-learn), and an array of k numbers weighs them.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from jaxtrain.metrics._common import (
    backend,
    check_finite,
    check_lengths,
    check_weights,
    float_dtype,
    host_array,
    output,
)

_MULTIOUTPUT = ("raw_values", "uniform_average")


def _inputs(
    xp: ModuleType, y_true: Any, y_pred: Any, sample_weight: Any, name: str
) -> tuple[Any, Any, Any]:
    """(f[n, k], f[n, k], f[n] or None), checked when eager."""
    if xp is np:
        y_true = check_finite(name, "y_true", host_array(y_true, "y_true", name))
        y_pred = check_finite(name, "y_pred", host_array(y_pred, "y_pred", name))
        n = check_lengths(name, y_true=y_true, y_pred=y_pred)
        sample_weight = check_weights(name, sample_weight, n)
    else:
        y_true, y_pred = xp.asarray(y_true), xp.asarray(y_pred)
    dtype = float_dtype(xp, y_true, y_pred)
    if y_true.ndim == 1:
        y_true = y_true[:, None]
    if y_pred.ndim == 1:
        y_pred = y_pred[:, None]
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(
            f"{name}: y_true and y_pred must have the same shape, [n] or [n, k]; got "
            f"{y_true.shape} and {y_pred.shape}."
        )
    if sample_weight is not None:
        sample_weight = xp.asarray(sample_weight, dtype)
        if sample_weight.shape != y_true.shape[:1]:
            raise ValueError(
                f"{name}: sample_weight must have shape [{y_true.shape[0]}]; got "
                f"{sample_weight.shape}."
            )
    return y_true.astype(dtype), y_pred.astype(dtype), sample_weight


def _per_output_mean(xp: ModuleType, values: Any, sample_weight: Any) -> Any:
    """Mean over examples (axis 0), weighted like ``np.average``."""
    if sample_weight is None:
        return xp.mean(values, axis=0)
    return xp.sum(values * sample_weight[:, None], axis=0) / xp.sum(sample_weight)


def _reduce(xp: ModuleType, scores: Any, multioutput: Any, name: str) -> Any:
    if isinstance(multioutput, str):
        if multioutput == "raw_values":
            return output(xp, scores)
        if multioutput == "uniform_average":
            return output(xp, xp.mean(scores))
        raise ValueError(
            f"{name}: multioutput must be one of {_MULTIOUTPUT} or an array of "
            f"{scores.shape[0]} weights; got {multioutput!r}."
        )
    weights = xp.asarray(multioutput, scores.dtype)
    if weights.shape != scores.shape:
        raise ValueError(
            f"{name}: multioutput weights must have shape {scores.shape} (one per output); got "
            f"{weights.shape}."
        )
    return output(xp, xp.sum(scores * weights) / xp.sum(weights))


def mse(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None = None,
    multioutput: str | ArrayLike = "uniform_average",
) -> Any:
    """Mean squared error; = ``sklearn.metrics.mean_squared_error``."""
    xp = backend(y_true, y_pred, sample_weight)
    y_true, y_pred, w = _inputs(xp, y_true, y_pred, sample_weight, "mse")
    errors = _per_output_mean(xp, xp.square(y_true - y_pred), w)
    return _reduce(xp, errors, multioutput, "mse")


def rmse(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None = None,
    multioutput: str | ArrayLike = "uniform_average",
) -> Any:
    """Root mean squared error; = ``sklearn.metrics.root_mean_squared_error``.

    The root is taken per target before averaging targets, as scikit-learn does (so the
    multi-output value is not ``sqrt(mse(...))``).
    """
    xp = backend(y_true, y_pred, sample_weight)
    y_true, y_pred, w = _inputs(xp, y_true, y_pred, sample_weight, "rmse")
    errors = xp.sqrt(_per_output_mean(xp, xp.square(y_true - y_pred), w))
    return _reduce(xp, errors, multioutput, "rmse")


def mae(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None = None,
    multioutput: str | ArrayLike = "uniform_average",
) -> Any:
    """Mean absolute error; = ``sklearn.metrics.mean_absolute_error``."""
    xp = backend(y_true, y_pred, sample_weight)
    y_true, y_pred, w = _inputs(xp, y_true, y_pred, sample_weight, "mae")
    errors = _per_output_mean(xp, xp.abs(y_true - y_pred), w)
    return _reduce(xp, errors, multioutput, "mae")


def r2(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None = None,
    multioutput: str | ArrayLike = "uniform_average",
    force_finite: bool = True,
) -> Any:
    """Coefficient of determination; = ``sklearn.metrics.r2_score``.

    Per target ``1 - SS_res / SS_tot``, ``SS_tot`` about the (weighted) mean of ``y_true``.
    A target is *constant* when every row of non-zero weight holds the same value; its
    ``SS_tot`` is then exactly 0, whatever the rounding of its mean (float32 puts the mean of
    seven 3.0s at 3.0000002, which would make ``SS_tot`` 1e-12 and the score -1e12). As in
    scikit-learn: with ``force_finite=True`` (default) a perfect prediction (``SS_res == 0``)
    scores 1.0 and a constant target predicted imperfectly 0.0; with ``force_finite=False``
    these are NaN (0/0) and -inf. ``multioutput`` may also be ``"variance_weighted"``: targets
    weighted by their ``SS_tot`` (uniformly when every target is constant). Fewer than two
    rows give NaN (scikit-learn warns and returns NaN).
    """
    xp = backend(y_true, y_pred, sample_weight)
    y_true, y_pred, w = _inputs(xp, y_true, y_pred, sample_weight, "r2")
    if y_true.shape[0] < 2:
        return output(xp, xp.asarray(np.nan, y_true.dtype))
    weight = xp.ones(y_true.shape[:1], y_true.dtype) if w is None else w
    counted = (weight != 0)[:, None]
    constant = xp.max(xp.where(counted, y_true, -np.inf), axis=0) <= xp.min(
        xp.where(counted, y_true, np.inf), axis=0
    )
    mean = _per_output_mean(xp, y_true, w)
    residual = xp.sum(weight[:, None] * xp.square(y_true - y_pred), axis=0)
    total = xp.sum(weight[:, None] * xp.square(y_true - mean), axis=0)
    total = xp.where(constant, xp.zeros_like(total), total)
    scores = _assemble(xp, residual, total, force_finite)
    if isinstance(multioutput, str) and multioutput == "variance_weighted":
        # sklearn: uniform weights when every target is constant (all SS_tot are 0).
        any_spread = xp.any(total != 0)
        weights = xp.where(any_spread, total, xp.ones_like(total))
        with np.errstate(invalid="ignore"):  # -inf * 0 with force_finite=False: NaN, as sklearn
            return output(xp, xp.sum(scores * weights) / xp.sum(weights))
    return _reduce(xp, scores, multioutput, "r2")


def _assemble(xp: ModuleType, residual: Any, total: Any, force_finite: bool) -> Any:
    """Per-target scores from SS_res and SS_tot, with scikit-learn's special cases."""
    nonzero_total = total != 0
    if not force_finite:
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1 - residual / total
    safe = xp.where(nonzero_total, total, xp.ones_like(total))
    formula = 1 - residual / safe
    one, zero = xp.ones_like(total), xp.zeros_like(total)
    return xp.where(residual == 0, one, xp.where(nonzero_total, formula, zero))


__all__ = ["mae", "mse", "r2", "rmse"]
