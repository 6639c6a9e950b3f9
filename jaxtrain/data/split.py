"""Held-out splits and k-folds: stratified by label, random or grouped, seeded, pure numpy."""

from __future__ import annotations

from collections.abc import Iterator

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
    names = _part_names(fractions)
    total = sum(fractions.values())
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


def _part_names(fractions: dict[str, float]) -> list[str]:
    if "train" in fractions:
        raise ValueError("'train' receives the remainder; do not give it a fraction")
    total = sum(fractions.values())
    if not 0 <= total < 1:
        raise ValueError(f"split fractions must sum to less than 1, got {total}")
    return [*fractions, "train"]


def random_split(n: int, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """:func:`stratified_split` with a single stratum: a seeded random partition of n."""
    return stratified_split(np.zeros(n, np.int32), fractions, seed)


def grouped_split(
    groups: np.ndarray, fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Partition example indices so that no group sits in two parts.

    groups: [n] group keys (any hashable values). The distinct groups are shuffled with
    ``seed`` and laid end to end by size; a group goes to the part in which its midpoint
    falls, so each part receives about its fraction of the examples (exactly up to one
    group). Returns sorted int64 index arrays per part (``"train"`` gets the remainder).
    """
    names = _part_names(fractions)
    keys, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(keys))
    ends = np.cumsum(counts[order]) / len(groups)
    middles = ends - counts[order] / (2 * len(groups))
    bounds = np.cumsum([*fractions.values(), 1.0])
    part_of_group = np.empty(len(keys), np.int64)
    part_of_group[order] = np.minimum(
        np.searchsorted(bounds, middles, side="right"), len(names) - 1
    )
    part = part_of_group[inverse.reshape(-1)]
    return {name: np.flatnonzero(part == k) for k, name in enumerate(names)}


def fold_ids(
    n: int,
    k: int,
    seed: int,
    labels: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """The fold (0..k-1) of each of n examples, as int32 [n].

    Plain: a seeded shuffle dealt round-robin. With ``labels`` (int [n]), stratified: each
    class is shuffled and dealt round-robin, continuing where the previous class stopped, so
    fold sizes differ by at most one and every fold holds its share of every class. With
    ``groups``, grouped: groups (shuffled, then largest first) each go whole to the fold with
    the fewest examples so far.
    """
    if k < 2 or k > n:
        raise ValueError(f"k-fold needs 2 <= k <= n examples, got k={k}, n={n}")
    rng = np.random.default_rng(seed)
    folds = np.empty(n, np.int32)
    if groups is not None:
        keys, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        if len(keys) < k:
            raise ValueError(f"grouped k-fold needs at least k={k} groups, got {len(keys)}")
        order = rng.permutation(len(keys))
        order = order[np.argsort(-counts[order], kind="stable")]
        sizes = np.zeros(k, np.int64)
        fold_of_group = np.empty(len(keys), np.int32)
        for g in order:
            fold_of_group[g] = int(np.argmin(sizes))
            sizes[fold_of_group[g]] += counts[g]
        return fold_of_group[inverse.reshape(-1)]
    strata = np.zeros(n, np.int32) if labels is None else np.asarray(labels)
    dealt = 0
    for cls in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == cls))
        folds[members] = (dealt + np.arange(len(members))) % k
        dealt += len(members)
    return folds


def kfold_indices(
    n: int,
    k: int,
    seed: int,
    labels: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (train, held_out) sorted index arrays for each of the k folds of
    :func:`fold_ids` (stratified with ``labels``, grouped with ``groups``)."""
    folds = fold_ids(n, k, seed, labels, groups)
    for fold in range(k):
        yield np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
