"""Evaluation of a state on a whole split: jitted per-batch sums, host-side metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxtrain.data import ArraySplit, eval_batches
from jaxtrain.train.tasks import Task, classification


def evaluate(
    eval_step: Callable,
    state: Any,
    split: ArraySplit,
    batch_size: int,
    task: Task | None = None,
) -> dict[str, Any]:
    """The task's held-out metrics over ``split`` (default task: classification).

    ``eval_step`` is the jitted result of ``make_eval_step``; batch sums stay on the device
    and are fetched once, so counts (e.g. the confusion matrix) are exact.
    """
    totals = None
    for batch in eval_batches(split, batch_size):
        sums = eval_step(state, batch)
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    return (task or classification(0)).finalize(jax.device_get(totals))


def predict(predict_step: Callable, state: Any, split: ArraySplit, batch_size: int) -> np.ndarray:
    """The model's outputs on every example of ``split``, in order, as one host array.

    ``predict_step(state, inputs) -> outputs`` is jitted by the caller; batches are padded to
    ``batch_size`` (one compiled program) and the padding rows are dropped here.
    """
    chunks = []
    for batch in eval_batches(split, batch_size):
        outputs = np.asarray(jax.device_get(predict_step(state, batch["inputs"])))
        chunks.append(outputs[batch["mask"]])
    return np.concatenate(chunks)


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar entries of a metrics dict (drops per-class lists and the confusion matrix)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float | np.number)}
