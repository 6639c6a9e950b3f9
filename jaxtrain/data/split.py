"""Held-out splits: stratified by label, seeded, pure numpy."""

from __future__ import annotations

import numpy as np


def stratified_split(
    labels: np.ndarray, fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Partition example indices into named parts whose class mix matches ``labels``.

    labels: int [n]. ``fractions`` maps part name -> fraction of n (their sum < 1); the
    remainder goes to ``"train"``. Each class is shuffled with ``seed`` and cut in the given
    proportions with largest-remainder rounding, so every part receives its share of every
    class and the result depends only on (labels, fractions, seed). Returns sorted int64
    index arrays per part, disjoint and covering all n examples.
    """
    if "train" in fractions:
        raise ValueError("'train' receives the remainder; do not give it a fraction")
    total = sum(fractions.values())
    if not 0 <= total < 1:
        raise ValueError(f"split fractions must sum to less than 1, got {total}")
    names = [*fractions, "train"]
    shares = np.array([*fractions.values(), 1.0 - total])
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        counts = _largest_remainder(shares * len(members))
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for name, start, stop in zip(names, bounds[:-1], bounds[1:], strict=True):
            parts[name].append(members[start:stop])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def _largest_remainder(quotas: np.ndarray) -> np.ndarray:
    counts = np.floor(quotas).astype(np.int64)
    shortfall = int(round(quotas.sum())) - int(counts.sum())
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[:shortfall]] += 1
    return counts
