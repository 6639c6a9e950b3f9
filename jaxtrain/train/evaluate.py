"""Evaluation of a state on a whole split: jitted per-batch sums, host-side metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxtrain.data import ArraySplit, eval_batches
from jaxtrain.metrics import classification_metrics


def evaluate(eval_step: Callable, state: Any, split: ArraySplit, batch_size: int) -> dict[str, Any]:
    """Every metric of :func:`classification_metrics` plus mean ``loss`` over ``split``.

    ``eval_step`` is the jitted result of ``make_eval_step``; batch sums stay on the device
    and are fetched once, so the confusion matrix (int) is exact.
    """
    totals = None
    for batch in eval_batches(split, batch_size):
        sums = eval_step(state, batch)
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    totals = jax.device_get(totals)
    metrics = classification_metrics(np.asarray(totals["confusion"]))
    metrics["loss"] = float(totals["loss_sum"]) / int(totals["count"])
    return metrics


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar entries of a metrics dict (drops per-class lists and the confusion matrix)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float | np.number)}
