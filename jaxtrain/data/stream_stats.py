"""Statistics of a split fitted by one streaming pass: moments per feature, labels, hashes.

:func:`pass_over` reads a :class:`~jaxtrain.data.streaming.StreamSplit` in chunks through
grain (``MapDataset.source`` over the chunks, ``data.workers`` processes), and each chunk is
summarised where it is read: per-feature :class:`Moments` (count, mean, M2, min, max of the
finite values, merged with Chan et al.'s pairwise update, float64), the labels, a 64-bit hash
of each example's raw bytes, and counts of NaN (missing) and infinite (invalid) values. Only
the summaries travel, so memory stays one chunk per worker however large the split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import grain
import numpy as np

from jaxtrain.data.prepare import _MIN_SCALE, Normalizer
from jaxtrain.data.streaming import CHUNK, StreamSplit


@dataclass(frozen=True)
class Moments:
    """Per-feature statistics of the finite values seen: f64[features] each, and the number
    of rows seen (``rows``, finite or not)."""

    rows: int
    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        """Moments of ``x`` [n, ..., features], reduced over every axis but the last."""
        x = np.asarray(x, np.float64)
        x = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x[:, None]
        finite = np.isfinite(x)
        count = finite.sum(axis=0).astype(np.float64)
        safe = np.where(finite, x, 0.0)
        mean = np.divide(safe.sum(axis=0), count, out=np.zeros(x.shape[1]), where=count > 0)
        m2 = (np.where(finite, x - mean, 0.0) ** 2).sum(axis=0)
        low = np.where(finite, x, np.inf).min(axis=0)
        high = np.where(finite, x, -np.inf).max(axis=0)
        return cls(len(x), count, mean, m2, low, high)

    def merge(self, other: Moments) -> Moments:
        """The moments of both parts together (Chan, Golub & LeVeque's pairwise update)."""
        count = self.count + other.count
        delta = other.mean - self.mean
        share = np.divide(other.count, count, out=np.zeros_like(count), where=count > 0)
        mean = self.mean + delta * share
        m2 = self.m2 + other.m2 + delta**2 * self.count * share
        return Moments(
            self.rows + other.rows,
            count,
            mean,
            m2,
            np.minimum(self.low, other.low),
            np.maximum(self.high, other.high),
        )


@dataclass(frozen=True)
class ChunkSummary:
    """What one chunk of a split leaves behind (see the module docstring)."""

    labels: np.ndarray
    hashes: np.ndarray | None
    moments: Moments | None
    missing: np.ndarray  # i64[features]: NaN values per feature (rows of the chunk, summed)
    infinite: np.ndarray  # i64[features]


class _Chunks:
    """A grain data source whose record ``i`` is the summary of chunk ``i`` of a split."""

    def __init__(self, split: StreamSplit, moments: bool, hashes: bool, size: int = CHUNK):
        self.split, self.moments, self.hashes, self.size = split, moments, hashes, size

    def __len__(self) -> int:
        return -(-len(self.split) // self.size)

    def __getitem__(self, index: int) -> ChunkSummary:
        inputs, labels = self.split.read(slice(index * self.size, (index + 1) * self.size))
        flat = inputs.reshape(len(inputs), -1) if inputs.ndim > 1 else inputs[:, None]
        features = inputs.shape[-1] if inputs.ndim > 1 else 1
        if np.issubdtype(inputs.dtype, np.floating):
            per = inputs.reshape(-1, features)
            missing = np.isnan(per).sum(axis=0).astype(np.int64)
            infinite = np.isinf(per).sum(axis=0).astype(np.int64)
        else:
            missing = infinite = np.zeros(features, np.int64)
        digests = None
        if self.hashes:
            rows = np.ascontiguousarray(flat)
            digests = np.array(
                [
                    int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
                    for row in rows
                ],
                dtype=np.uint64,
            )
        moments = Moments.of(inputs) if self.moments else None
        return ChunkSummary(labels, digests, moments, missing, infinite)


def pass_over(split: StreamSplit, *, moments: bool, hashes: bool, workers: int = 0) -> ChunkSummary:
    """One pass over ``split``: the labels and hashes of every example (in order), the
    merged moments (with ``moments``), and the NaN/inf counts per feature."""
    source = _Chunks(split, moments, hashes)
    dataset = grain.MapDataset.source(source).to_iter_dataset(
        grain.ReadOptions(num_threads=1 if workers else 2, prefetch_buffer_size=2)
    )
    if workers:
        from jaxtrain.data.pipeline import absl_flags_parsed

        absl_flags_parsed()
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    labels, digests, merged, missing, infinite = [], [], None, 0, 0
    for summary in dataset:
        labels.append(summary.labels)
        if summary.hashes is not None:
            digests.append(summary.hashes)
        if summary.moments is not None:
            merged = summary.moments if merged is None else merged.merge(summary.moments)
        missing = missing + summary.missing
        infinite = infinite + summary.infinite
    return ChunkSummary(
        np.concatenate(labels) if labels else np.zeros(0, np.int32),
        np.concatenate(digests) if digests else None,
        merged,
        np.asarray(missing),
        np.asarray(infinite),
    )


def normalizer_from_moments(
    moments: Moments, method: str, fill: np.ndarray | None = None
) -> Normalizer:
    """The :func:`~jaxtrain.data.prepare.fit_normalizer` of the training inputs after their
    missing values were replaced by ``fill`` (per feature), from the moments alone.

    ``standard``: mean and population standard deviation; a value filled with the mean adds
    nothing to M2 but counts in n. ``minmax``: the range, widened to the fill value where
    something was filled. A scale below 1e-6 becomes 1, as in ``fit_normalizer``.
    """
    features = len(moments.count)
    filled = moments.rows - moments.count  # values replaced per feature
    if method == "none":
        shift, scale = np.zeros(features), np.ones(features)
    elif method == "standard":
        total = max(moments.rows, 1)
        mean, m2 = moments.mean, moments.m2
        if fill is not None:  # pooled with `filled` copies of the fill value
            delta = fill - moments.mean
            mean = moments.mean + delta * filled / total
            m2 = moments.m2 + delta**2 * moments.count * filled / total
        shift, scale = mean, np.sqrt(m2 / total)
    elif method == "minmax":
        low, high = moments.low, moments.high
        if fill is not None:
            low = np.where(filled > 0, np.minimum(low, fill), low)
            high = np.where(filled > 0, np.maximum(high, fill), high)
        shift, scale = low, high - low
    else:
        raise ValueError(f"unknown normalisation {method!r}; expected none, standard or minmax")
    scale = np.where(scale < _MIN_SCALE, 1.0, scale)
    return Normalizer(method, shift.astype(np.float32), scale.astype(np.float32))
