"""Linear and logistic regression: one dense layer, its L2 penalty, and the closed form fit.

The penalty is scaled so that a mean loss plus ``l2 * l2_penalty(params)`` has the same
minimiser as scikit-learn's estimators (``n`` is the number of training examples):

=============================================  =================================================
scikit-learn                                   jaxtrain loss (same minimiser)
=============================================  =================================================
``Ridge(alpha)``:                              ``Linear(k)``, ``0.5 * mean((x @ W + b - y)**2)``
``||y - Xw - b||^2 + alpha ||w||^2``           ``+ l2 * l2_penalty``, ``l2 = alpha / n``
``LinearRegression()``                         the same with ``l2 = 0``
``LogisticRegression(C)``, K > 2 classes       ``Linear(K)``, mean softmax cross-entropy
(multinomial, ``coef_`` is ``[K, d]``)         ``+ l2 * l2_penalty``, ``l2 = 1 / (C * n)``;
                                               ``kernel == coef_.T``, ``bias == intercept_``
``LogisticRegression(C)``, binary              ``Linear(1)``, mean sigmoid cross-entropy of
(one logit, ``coef_`` is ``[1, d]``)           ``logit = x @ W + b`` ``+ l2 * l2_penalty``,
                                               ``l2 = 1 / (C * n)``; ``kernel == coef_.T``
the same, as two softmax logits                ``Linear(2)``, mean softmax cross-entropy
                                               ``+ l2 * l2_penalty``, ``l2 = 2 / (C * n)``;
                                               ``kernel[:, 1] - kernel[:, 0] == coef_[0]`` and
                                               ``bias[1] - bias[0] == intercept_[0]``
=============================================  =================================================

Why: Ridge minimises ``sum_i (y_i - f_i)^2 + alpha ||w||^2``; dividing by ``2n`` gives
``0.5 * mean (y - f)^2 + (alpha / n) * 0.5 ||w||^2``. LogisticRegression minimises
``C * sum_i loss_i + 0.5 ||w||^2``; dividing by ``C n`` gives ``mean loss + (1 / (C n)) * 0.5
||w||^2``. With two softmax logits only the difference ``d = w1 - w0`` matters; at the optimum
``w1 = -w0 = d / 2``, so the penalty ``0.5 (||w0||^2 + ||w1||^2) = 0.25 ||d||^2`` is half of the
sigmoid form's ``0.5 ||d||^2``, hence the factor 2. Intercepts are never penalised, in both.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from numpy.typing import ArrayLike


class Linear(nn.Module):
    """One dense layer on the flattened input: linear or logistic regression.

    Input ``x: f32[batch, ...]`` (flattened to ``[batch, d]``); output ``f32[batch,
    num_outputs]``: predictions (regression, one column per target) or logits (classification:
    one logit for a sigmoid, or one per class for a softmax). Parameters ``kernel: f32[d,
    num_outputs]`` and ``bias: f32[num_outputs]``, the layout ``fit_least_squares`` returns.
    ``train`` is accepted for the common model signature and changes nothing.
    """

    num_outputs: int

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        del train
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_outputs, name="dense")(x)


def l2_penalty(params: Any) -> jax.Array:
    """``0.5 * sum`` of the squares of every ``kernel`` leaf in ``params`` (biases excluded).

    Works on any Flax parameter tree (``variables["params"]`` or the variables themselves).
    See the module docstring for the weight ``l2`` that matches scikit-learn's ``alpha``/``C``.
    """
    leaves = jax.tree_util.tree_leaves_with_path(params)
    squares = [
        jnp.sum(jnp.square(leaf))
        for path, leaf in leaves
        if path and getattr(path[-1], "key", None) == "kernel"
    ]
    if not squares:
        return jnp.zeros((), jnp.float32)
    return 0.5 * sum(squares)


def fit_least_squares(
    x: ArrayLike, y: ArrayLike, l2: ArrayLike = 0.0, fit_intercept: bool = True
) -> dict[str, jax.Array]:
    """Closed-form least squares / ridge regression; pure and jittable.

    Minimises ``||y - x @ kernel - bias||^2 + l2 * ||kernel||^2`` (sum over examples and
    targets), i.e. ``l2`` is scikit-learn's ``Ridge(alpha=l2)``; ``l2=0`` is
    ``LinearRegression()`` (the minimum-norm solution if ``x`` is rank deficient, like its
    ``lstsq``). With ``fit_intercept`` ``x`` and ``y`` are centred first and ``bias = mean(y) -
    mean(x) @ kernel`` (the bias is not penalised); otherwise ``bias`` is 0.

    The normal equations ``(X^T X + l2 I) w = X^T y`` are solved through the SVD ``X = U S V^T``
    of the centred data, ``w = V diag(s / (s^2 + l2)) U^T y``, which never forms ``X^T X`` (so
    the condition number is not squared); singular values below ``eps * max(n, d) * s_max``
    are dropped, as ``numpy.linalg.lstsq`` does.

    Under ``jax.jit`` mark ``fit_intercept`` static (``static_argnames="fit_intercept"``).

    Args:
      x: f32[n, ...] inputs, flattened to ``[n, d]``.
      y: f32[n] (one target) or f32[n, k] targets.
      l2: Ridge's ``alpha`` (>= 0), a scalar; may be traced (vmap over it for a path).
      fit_intercept: whether to fit ``bias``.

    Returns:
      ``{"kernel": f32[d, k], "bias": f32[k]}`` (``k = 1`` for 1-D ``y``): the parameters of
      ``Linear(k)``, usable as ``Linear(k).apply({"params": {"dense": fitted}}, x)``.
    """
    x = jnp.asarray(x)
    x = x.reshape((x.shape[0], -1))
    y = jnp.asarray(y)
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"fit_least_squares: y must have shape [n] or [n, k] with n = {x.shape[0]} "
            f"examples like x; got {y.shape}."
        )
    dtype = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    x = x.astype(dtype)
    y = (y[:, None] if y.ndim == 1 else y).astype(dtype)
    if fit_intercept:
        x_mean, y_mean = jnp.mean(x, axis=0), jnp.mean(y, axis=0)
        x, y = x - x_mean, y - y_mean
    u, s, vt = jnp.linalg.svd(x, full_matrices=False)
    cutoff = jnp.finfo(dtype).eps * max(x.shape) * jnp.max(s, initial=0.0)
    safe = jnp.where(s > cutoff, s, 1.0)
    scale = jnp.where(s > cutoff, safe / (safe * safe + jnp.asarray(l2, dtype)), 0.0)
    kernel = vt.T @ (scale[:, None] * (u.T @ y))
    if fit_intercept:
        bias = y_mean - x_mean @ kernel
    else:
        bias = jnp.zeros(y.shape[1], dtype)
    return {"kernel": kernel, "bias": bias}
