"""Bootstrap confidence intervals of any jittable metric: one ``jax.vmap`` over resamples.

A bootstrap is a transformation of the metric, not a loop: draw ``R`` index arrays (each a
sample of ``n`` rows with replacement), then ``jax.vmap`` the metric over them, so all
resamples run as one XLA program. The interval is the percentile interval: the
``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled values, with
NumPy's default (``"linear"``) interpolation done in the same float operations as
``np.quantile(values, q)`` for a Python float ``q``, so it equals a NumPy loop over the same
indices exactly.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import jax
import jax.numpy as jnp
from numpy.typing import ArrayLike


def bootstrap_indices(key: jax.Array, n: int, n_resamples: int = 1000) -> jax.Array:
    """``i32[n_resamples, n]`` row indices, drawn uniformly with replacement from ``[0, n)``."""
    return jax.random.randint(key, (operator.index(n_resamples), operator.index(n)), 0, n)


def bootstrap_ci(
    metric_fn: Callable[..., ArrayLike],
    *arrays: ArrayLike,
    key: jax.Array,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Point estimate and percentile bootstrap interval of ``metric_fn(*arrays)``.

    Args:
      metric_fn: a jittable function of the arrays returning a scalar (e.g.
        ``lambda y, p: jnp.mean(y == p)``, or ``roc_auc``).
      *arrays: arrays sharing their leading axis ``n`` (the examples); each resample takes
        the same rows from all of them.
      key: a PRNG key; the rows are ``bootstrap_indices(key, n, n_resamples)``.
      n_resamples: R, the number of resamples (static).
      confidence: the interval's coverage in (0, 1) (static).

    Returns:
      ``(point, low, high)``: ``metric_fn(*arrays)`` and the interval's bounds. The whole call
      jits (``jax.jit(partial(bootstrap_ci, fn), static_argnames=("n_resamples",
      "confidence"))``). Resamples whose metric is NaN (an AUC with one class, say) make the
      bounds NaN.
    """
    arrays = tuple(jnp.asarray(a) for a in arrays)
    n = _common_length(arrays)
    indices = bootstrap_indices(key, n, n_resamples)
    values = jax.vmap(lambda rows: metric_fn(*(a[rows] for a in arrays)))(indices)
    low, high = _percentile_interval(values, confidence)
    return jnp.asarray(metric_fn(*arrays)), low, high


def bootstrap_ci_weighted(
    metric_fn: Callable[..., ArrayLike],
    *arrays: ArrayLike,
    key: jax.Array,
    mask: ArrayLike | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The bootstrap of a weighted metric, over the rows where ``mask`` is True.

    For padded batches (static shapes with a varying number of real rows). A resample draws
    ``n_valid = sum(mask)`` rows with replacement from the valid rows and is handed to the
    metric as counts: ``metric_fn(*arrays, weights)`` with ``weights: f32[n]`` how often each
    row was drawn (0 for padding). The point estimate is ``metric_fn(*arrays, mask)``.

    Args:
      metric_fn: jittable ``metric_fn(*arrays, weights) -> scalar``, e.g.
        ``lambda y, p, w: jnp.sum(w * (y == p)) / jnp.sum(w)``.
      *arrays: arrays with leading axis ``n``.
      key: a PRNG key. With no mask the draws are ``bootstrap_indices(key, n, n_resamples)``,
        so the result equals ``bootstrap_ci`` of the unweighted metric (up to float rounding
        of weighted sums).
      mask: optional bool[n]; rows where it is False are ignored.
      n_resamples, confidence: as in ``bootstrap_ci``.

    Returns:
      ``(point, low, high)``, percentile interval as in ``bootstrap_ci``.
    """
    arrays = tuple(jnp.asarray(a) for a in arrays)
    n = _common_length(arrays)
    valid = jnp.ones(n, bool) if mask is None else jnp.asarray(mask).astype(bool)
    if valid.shape != (n,):
        raise ValueError(f"bootstrap_ci_weighted: mask must have shape [{n}]; got {valid.shape}.")
    n_valid = jnp.sum(valid, dtype=jnp.int32)
    # Valid rows first (stable), then draw positions in [0, n_valid) and keep n_valid draws.
    valid_rows = jnp.argsort(~valid, stable=True)
    draws = jax.random.randint(key, (operator.index(n_resamples), n), 0, jnp.maximum(n_valid, 1))
    kept = (jnp.arange(n) < n_valid).astype(jnp.float32)

    def weights_of(positions: jax.Array) -> jax.Array:
        return jnp.zeros(n, jnp.float32).at[valid_rows[positions]].add(kept)

    values = jax.vmap(lambda p: metric_fn(*arrays, weights_of(p)))(draws)
    low, high = _percentile_interval(values, confidence)
    return jnp.asarray(metric_fn(*arrays, valid.astype(jnp.float32))), low, high


def _common_length(arrays: tuple[jax.Array, ...]) -> int:
    if not arrays:
        raise ValueError("bootstrap: pass at least one array to resample.")
    lengths = {a.shape[0] if a.ndim else None for a in arrays}
    if len(lengths) != 1 or None in lengths:
        raise ValueError(
            "bootstrap: every array must have the same leading (example) axis; got shapes "
            f"{[a.shape for a in arrays]}."
        )
    (n,) = lengths
    if n == 0:
        raise ValueError("bootstrap: the arrays hold no examples.")
    return n


def _percentile_interval(values: jax.Array, confidence: float) -> tuple[jax.Array, jax.Array]:
    if not 0 < confidence < 1:
        raise ValueError(f"bootstrap: confidence must lie in (0, 1); got {confidence}.")
    if values.ndim != 1:
        raise ValueError(
            f"bootstrap: metric_fn must return a scalar; it returned shape {values.shape[1:]}."
        )
    ordered = jnp.sort(values)
    alpha = (1 - confidence) / 2
    return _quantile(ordered, alpha), _quantile(ordered, 1 - alpha)


def _quantile(ordered: jax.Array, q: float) -> jax.Array:
    """``np.quantile(values, q)`` (method "linear", Python float ``q``) of sorted values.

    The position and weight are Python floats computed as NumPy does; the interpolation
    repeats ``numpy.lib._function_base_impl._lerp`` in the values' dtype.
    """
    count = ordered.shape[0]
    virtual = (count - 1) * q  # NumPy's "linear" virtual index
    previous = min(max(math.floor(virtual), 0), count - 1)
    following = min(max(previous + 1, 0), count - 1)
    gamma = virtual - math.floor(virtual)
    a, b = ordered[previous], ordered[following]
    if gamma >= 0.5:
        return b - (b - a) * (1 - gamma)
    return a + (b - a) * gamma


__all__ = ["bootstrap_ci", "bootstrap_ci_weighted", "bootstrap_indices"]
