"""What a model is trained to do: the loss, the per-step metrics and the held-out metrics.

A :class:`Task` keeps the step generic: the same ``train_step`` trains a classifier, a
regressor or a language model, because everything that depends on the kind of target lives
here. Each piece is pure: ``loss`` and ``batch_metrics`` run inside the jitted step,
``eval_sums`` returns sums that add up exactly over padded batches, and ``finalize`` turns
the fetched sums into metrics on the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxtrain.metrics import classification_metrics, confusion_matrix
from jaxtrain.train.losses import softmax_cross_entropy

Array = jax.Array


@dataclass(frozen=True)
class Task:
    """A kind of target.

    ``loss(outputs, targets) -> f32[b]``: per-example loss (the step averages it);
    ``batch_metrics(outputs, targets) -> {name: f32[]}``: logged during training;
    ``eval_sums(outputs, targets, mask) -> {name: array}``: additive over batches;
    ``finalize(sums) -> {name: value}``: host-side metrics, always including ``loss``.
    ``minimised`` names the metrics where lower is better (for checkpoint ranking).
    """

    name: str
    loss: Callable[[Array, Array], Array]
    batch_metrics: Callable[[Array, Array], dict[str, Array]]
    eval_sums: Callable[[Array, Array, Array], dict[str, Array]]
    finalize: Callable[[Mapping[str, Any]], dict[str, Any]]
    monitors: tuple[str, ...]
    minimised: frozenset[str]


def classification(num_classes: int, label_smoothing: float = 0.0) -> Task:
    """Labels i32[b], logits f32[b, num_classes]; metrics exact against scikit-learn.

    ``label_smoothing`` eps trains on targets ``(1 - eps) * one_hot + eps / K``; held-out
    losses are always the plain cross-entropy.
    """

    def loss(logits, labels):
        return softmax_cross_entropy(logits, labels)

    def training_loss(logits, labels):
        if not label_smoothing:
            return loss(logits, labels)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
        return optax.softmax_cross_entropy(logits, targets)

    def batch_metrics(logits, labels):
        return {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

    def eval_sums(logits, labels, mask):
        return {
            "loss_sum": jnp.sum(jnp.where(mask, loss(logits, labels), 0.0)),
            "count": jnp.sum(mask.astype(jnp.int32)),
            "confusion": confusion_matrix(
                labels, jnp.argmax(logits, -1), num_classes=num_classes, mask=mask
            ),
        }

    def finalize(sums):
        metrics = classification_metrics(np.asarray(sums["confusion"]))
        metrics["loss"] = float(sums["loss_sum"]) / int(sums["count"])
        return metrics

    return Task(
        "classification",
        training_loss,
        batch_metrics,
        eval_sums,
        finalize,
        monitors=("accuracy", "loss", "f1_macro"),
        minimised=frozenset({"loss"}),
    )


def _as_columns(targets: Array) -> Array:
    return targets[:, None] if targets.ndim == 1 else targets


RESOLUTION = 1e-5  # relative: what float32 sums of z and z^2 over many batches still resolve


def regression(
    num_outputs: int, target_shift: float | np.ndarray = 0.0, target_scale: float | np.ndarray = 1.0
) -> Task:
    """Targets f32[b] (or f32[b, k]), outputs f32[b, k]; the loss is the mean squared error.

    Targets are trained on standardised (``(y - target_shift) / target_scale``, fitted on the
    training split); held-out metrics are in the data's own units. They follow scikit-learn
    with ``multioutput='uniform_average'``: ``mse``, ``rmse`` (the square root of each
    output's MSE, averaged), ``mae`` and ``r2``.

    The held-out sums stay in the standardised units, i.e. centred on the training mean and
    scaled by the training spread, and are scaled back on the host in float64. So the total
    sum of squares ``sum(z^2) - (sum z)^2 / n`` never subtracts two huge float32 numbers: in
    the data's units (targets of 300 +- 0.5) that difference lost every digit but one, and r2
    came out 0.704 for scikit-learn's 0.726. A held-out split whose targets vary by less than
    ``RESOLUTION`` (relative) of their squares counts as constant: r2 is 0.0, or 1.0 when
    predicted exactly, scikit-learn's values for a constant target.
    """
    del num_outputs  # the outputs carry it
    scale64 = np.asarray(target_scale, np.float64)

    def loss(outputs, targets):
        return jnp.mean((outputs - _as_columns(targets)) ** 2, axis=-1)

    def batch_metrics(outputs, targets):
        return {"mae": jnp.mean(jnp.abs(outputs - _as_columns(targets)))}

    def eval_sums(outputs, targets, mask):
        targets = _as_columns(targets)
        weight = mask.astype(jnp.float32)[:, None]
        error = outputs - targets
        return {
            "count": jnp.sum(mask.astype(jnp.int32)),
            "squared_error": jnp.sum(weight * error**2, axis=0),
            "absolute_error": jnp.sum(weight * jnp.abs(error), axis=0),
            "target_sum": jnp.sum(weight * targets, axis=0),
            "target_squares": jnp.sum(weight * targets**2, axis=0),
        }

    def finalize(sums):
        # float64 on the host; every sum is in standardised units (see the docstring).
        n = int(sums["count"])
        scale = np.broadcast_to(scale64, np.shape(sums["squared_error"]))
        sse = np.asarray(sums["squared_error"], np.float64) * scale**2
        target_sum = np.asarray(sums["target_sum"], np.float64)
        squares = np.asarray(sums["target_squares"], np.float64)
        spread = squares - target_sum**2 / n
        # A spread the float32 sums cannot resolve (below 1e-5 of sum(z^2): a constant split,
        # or one whose targets all sit far from the training mean) is a constant target's 0.
        total = np.where(spread > RESOLUTION * squares, spread, 0.0) * scale**2
        # scikit-learn's r2_score: 1 when both are zero, 0 when only the variance is.
        r2 = np.where(total > 0, 1.0 - sse / np.where(total > 0, total, 1.0), 0.0)
        r2 = np.where((total <= 0) & (sse == 0), 1.0, r2)
        mse = sse / n
        absolute = np.asarray(sums["absolute_error"], np.float64) * scale
        return {
            "loss": float(mse.mean()),
            "mse": float(mse.mean()),
            "rmse": float(np.sqrt(mse).mean()),
            "mae": float((absolute / n).mean()),
            "r2": float(r2.mean()),
            "count": n,
        }

    return Task(
        "regression",
        loss,
        batch_metrics,
        eval_sums,
        finalize,
        monitors=("loss", "mse", "rmse", "mae", "r2"),
        minimised=frozenset({"loss", "mse", "rmse", "mae"}),
    )


def language_model(vocab_size: int) -> Task:
    """Tokens: inputs i32[b, T], targets i32[b, T] (the next token), logits f32[b, T, V].

    The loss is the mean next-token cross-entropy in nats; for byte tokens
    ``bits_per_byte = loss / ln 2``. Held-out metrics average over every token of the split.
    """

    def loss(logits, targets):
        return softmax_cross_entropy(logits, targets).mean(axis=-1)

    def batch_metrics(logits, targets):
        return {
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == targets),
            "bits_per_byte": softmax_cross_entropy(logits, targets).mean() / math.log(2),
        }

    def eval_sums(logits, targets, mask):
        weight = mask[:, None] & jnp.ones(targets.shape, bool)
        token_loss = softmax_cross_entropy(logits, targets)
        return {
            "loss_sum": jnp.sum(jnp.where(weight, token_loss, 0.0)),
            "tokens": jnp.sum(weight.astype(jnp.int32)),
            "correct": jnp.sum(weight & (jnp.argmax(logits, -1) == targets)),
        }

    def finalize(sums):
        tokens = int(sums["tokens"])
        loss_value = float(sums["loss_sum"]) / tokens
        return {
            "loss": loss_value,
            "bits_per_byte": loss_value / math.log(2),
            "perplexity": math.exp(loss_value),
            "accuracy": int(sums["correct"]) / tokens,
            "tokens": tokens,
        }

    del vocab_size  # the logits carry it; kept in the signature for symmetry with the others
    return Task(
        "language_model",
        loss,
        batch_metrics,
        eval_sums,
        finalize,
        monitors=("loss", "bits_per_byte", "accuracy"),
        minimised=frozenset({"loss", "bits_per_byte"}),
    )


def task_for(data: Any, label_smoothing: float = 0.0) -> Task:
    """The task of a :class:`~jaxtrain.data.PreparedData` (its kind, outputs, target scale);
    ``label_smoothing`` applies to classification's training loss."""
    if data.task == "regression":
        scaler = data.target_normalizer
        return regression(data.num_outputs, scaler.shift, scaler.scale)
    if data.task == "classification":
        return classification(data.num_outputs, label_smoothing)
    return language_model(data.num_outputs)


def resolve_monitor(task: Task, requested: str | None) -> tuple[str, str]:
    """``(metric, "min"|"max")`` ranking checkpoints: ``requested`` if the task reports it,
    else accuracy for classification and loss otherwise. ValueError names the config key."""
    monitor = requested or ("accuracy" if task.name == "classification" else "loss")
    if monitor not in task.monitors:
        raise ValueError(
            f"train.checkpoint.monitor: {monitor!r} is not a {task.name} metric; "
            f"choose one of {', '.join(task.monitors)}"
        )
    return monitor, "min" if monitor in task.minimised else "max"
