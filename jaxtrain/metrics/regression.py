"""Regression metrics, pure and jittable; equal to scikit-learn's on the same predictions.

``mse``, ``rmse``, ``mae`` and ``r2`` are ``mean_squared_error``, ``root_mean_squared_error``,
``mean_absolute_error`` and ``r2_score`` (including ``sample_weight`` and the ``multioutput``
options), in the inputs' float dtype (float32 unless x64 is enabled).

Shapes: ``y_true`` and ``y_pred`` are both f32[n] (one target) or both f32[n, k]. Errors are
first averaged over examples per target; ``multioutput="uniform_average"`` (the default) then
averages the k target scores, ``"raw_values"`` returns them (f32[k], k = 1 for 1-D inputs, as in
scikit-learn).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpy.typing import ArrayLike

_MULTIOUTPUT = ("uniform_average", "raw_values")


def _inputs(
    y_true: ArrayLike, y_pred: ArrayLike, sample_weight: ArrayLike | None, name: str
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    y_true, y_pred = jnp.asarray(y_true), jnp.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim not in (1, 2):
        raise ValueError(
            f"{name}: y_true and y_pred must have the same shape, [n] or [n, k]; got "
            f"{y_true.shape} and {y_pred.shape}."
        )
    dtype = jnp.result_type(y_true.dtype, y_pred.dtype, jnp.float32)
    y_true, y_pred = y_true.astype(dtype), y_pred.astype(dtype)
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred[:, None]
    if sample_weight is not None:
        sample_weight = jnp.asarray(sample_weight, dtype)
        if sample_weight.shape != y_true.shape[:1]:
            raise ValueError(
                f"{name}: sample_weight must have shape [{y_true.shape[0]}]; got "
                f"{sample_weight.shape}."
            )
    return y_true, y_pred, sample_weight


def _per_output_mean(values: jax.Array, sample_weight: jax.Array | None) -> jax.Array:
    """Mean over examples (axis 0), weighted like ``np.average``."""
    if sample_weight is None:
        return jnp.mean(values, axis=0)
    return jnp.sum(values * sample_weight[:, None], axis=0) / jnp.sum(sample_weight)


def _reduce(scores: jax.Array, multioutput: str, name: str) -> jax.Array:
    if multioutput == "raw_values":
        return scores
    if multioutput == "uniform_average":
        return jnp.mean(scores)
    raise ValueError(f"{name}: multioutput must be one of {_MULTIOUTPUT}; got {multioutput!r}.")


def mse(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None = None,
    multioutput: str = "uniform_average",
) -> jax.Array:
    """Mean squared error; = ``sklearn.metrics.mean_squared_error``."""
    y_true, y_pred, w = _inputs(y_true, y_pred, sample_weight, "mse")
    errors = _per_output_mean(jnp.square(y_true - y_pred), w)
    return _reduce(errors, multioutput, "mse")


def rmse(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None = None,
    multioutput: str = "uniform_average",
) -> jax.Array:
    """Root mean squared error; = ``sklearn.metrics.root_mean_squared_error``.

    The root is taken per target before averaging targets, as scikit-learn does (so the
    multi-output value is not ``sqrt(mse(...))``).
    """
    y_true, y_pred, w = _inputs(y_true, y_pred, sample_weight, "rmse")
    errors = jnp.sqrt(_per_output_mean(jnp.square(y_true - y_pred), w))
    return _reduce(errors, multioutput, "rmse")


def mae(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None = None,
    multioutput: str = "uniform_average",
) -> jax.Array:
    """Mean absolute error; = ``sklearn.metrics.mean_absolute_error``."""
    y_true, y_pred, w = _inputs(y_true, y_pred, sample_weight, "mae")
    errors = _per_output_mean(jnp.abs(y_true - y_pred), w)
    return _reduce(errors, multioutput, "mae")


def r2(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sample_weight: ArrayLike | None = None,
    multioutput: str = "uniform_average",
) -> jax.Array:
    """Coefficient of determination; = ``sklearn.metrics.r2_score`` (``force_finite=True``).

    Per target ``1 - SS_res / SS_tot`` with ``SS_tot`` about the (weighted) mean of
    ``y_true``. A constant target (``SS_tot == 0``) scores 1.0 if predicted exactly and 0.0
    otherwise, scikit-learn's finite stand-ins for NaN and -inf. ``multioutput`` may also be
    ``"variance_weighted"``: targets weighted by their ``SS_tot``.
    """
    y_true, y_pred, w = _inputs(y_true, y_pred, sample_weight, "r2")
    weight = jnp.ones(y_true.shape[:1], y_true.dtype) if w is None else w
    mean = _per_output_mean(y_true, w)
    residual = jnp.sum(weight[:, None] * jnp.square(y_true - y_pred), axis=0)
    total = jnp.sum(weight[:, None] * jnp.square(y_true - mean), axis=0)
    safe = jnp.where(total != 0, total, 1.0)
    scores = jnp.where(total != 0, 1 - residual / safe, jnp.where(residual == 0, 1.0, 0.0))
    if multioutput == "variance_weighted":
        # sklearn: uniform weights when every target is constant.
        return jnp.where(
            jnp.any(total != 0),
            jnp.sum(scores * total) / jnp.where(jnp.sum(total) != 0, jnp.sum(total), 1.0),
            jnp.mean(scores),
        )
    return _reduce(scores, multioutput, "r2")


__all__ = ["mae", "mse", "r2", "rmse"]
