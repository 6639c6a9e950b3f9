"""Poisson-sampled training batches (DP-SGD): every example joins a step independently.

Step ``t`` keeps example ``i`` with probability ``q``, decided by a generator seeded with
``(seed, t)`` alone, so the stream is a grain ``MapDataset`` with the same checkpointable
position as the ordinary one (a resumed run draws exactly the batches an uninterrupted one
would). Each batch is padded to ``slots`` rows with a ``mask``; a batch drawn larger than
``slots`` keeps a uniformly random ``slots`` of its examples (truncated Poisson sampling,
which the PLD accountant accounts exactly: see ``jaxtrain.privacy.accounting``).
"""

from __future__ import annotations

import math

import grain
import numpy as np

from jaxtrain.data.sources import ArraySplit


def default_slots(num_examples: int, rate: float) -> int:
    """The expected batch plus six standard deviations (a draw beyond it has probability
    below 1e-9), at most the whole split."""
    mean = num_examples * rate
    return min(num_examples, math.ceil(mean + 6 * math.sqrt(mean * (1 - rate)) + 1))


class _PoissonRows:
    """Step index -> ``{"inputs", "labels"[, "weights"], "mask"}`` padded to ``slots``."""

    def __init__(self, split: ArraySplit, rate: float, slots: int, seed: int):
        self.split, self.rate, self.slots, self.seed = split, rate, slots, seed

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, int(step)])
        chosen = np.flatnonzero(rng.random(len(self.split)) < self.rate)
        if len(chosen) > self.slots:
            chosen = np.sort(rng.choice(chosen, self.slots, replace=False))
        rows = np.zeros(self.slots, np.int64)
        rows[: len(chosen)] = chosen
        batch = self.split.batch(rows)
        batch["mask"] = np.arange(self.slots) < len(chosen)
        return batch


def poisson_batches(
    split: ArraySplit, rate: float, steps: int, slots: int, seed: int
) -> grain.MapDataset:
    """``steps`` Poisson-sampled batches of ``split`` (see the module docstring): dicts of
    ``inputs`` [slots, ...], ``labels`` [slots, ...], optionally ``weights`` and ``mask``
    bool[slots] marking the sampled rows."""
    if not 0 < rate <= 1:
        raise ValueError(f"sampling rate {rate} is outside (0, 1]")
    return grain.MapDataset.range(steps).map(_PoissonRows(split, rate, slots, seed))
