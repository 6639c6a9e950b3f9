"""Splits read lazily, a batch at a time: the streaming path for data larger than memory.

A :class:`StreamSplit` stands where an in-memory :class:`~jaxtrain.data.sources.ArraySplit`
stands (``len``, ``batch(rows)``, ``inputs``, ``labels``), but holds only the keys of its
records in a *reader*: a picklable object with ``len(reader)`` and
``reader.read(keys) -> (inputs, labels)`` that fetches those records from disk (a TFDS
``array_record`` data source: :class:`TfdsReader`; files of a text corpus:
:class:`jaxtrain.data.corpus.CorpusReader`). Nothing is read until a batch is asked for, so
a split costs memory for its keys (8 bytes per example) and, for classes, its labels.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jaxtrain.data.prepare import Normalizer

CHUNK = 1024  # examples per read when a whole split is passed over (statistics, labels)


@dataclass(frozen=True)
class HostTransform:
    """What the host does to raw inputs before the model sees them: missing values
    (NaN) become ``fill`` (per feature of the last axis), then ``normalizer`` maps them to
    float32. Picklable: it runs in grain workers."""

    normalizer: Normalizer
    fill: np.ndarray | None = None

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        if self.fill is not None and np.issubdtype(inputs.dtype, np.floating):
            inputs = np.where(np.isnan(inputs), self.fill.astype(inputs.dtype), inputs)
        return self.normalizer(inputs)


class TfdsReader:
    """Random access to one split of a prepared TFDS dataset (``array_record``).

    ``read(keys)`` returns ``(inputs [k, ...], labels [k])`` of the records at ``keys``, in
    that order, with one batched ``__getitems__``. Pickling sends the dataset's name and
    directory, not the open files: each grain worker opens the data source itself.
    """

    def __init__(
        self,
        name: str,
        data_dir: str | os.PathLike,
        split: str,
        keys: tuple[str, str],
        label_dtype: Any,
        source: Any = None,
    ):
        self.name, self.data_dir, self.split = name, str(data_dir), split
        self.input_key, self.label_key = keys
        self.label_dtype = np.dtype(label_dtype)
        self._source = source
        self._length = len(source) if source is not None else None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_source"] = None  # reopened by name in the worker
        return state

    @property
    def source(self):
        if self._source is None:
            from jaxtrain.data.sources import _builder

            self._source = _builder(self.name, Path(self.data_dir)).as_data_source(self.split)
        return self._source

    def __len__(self) -> int:
        if self._length is None:
            self._length = len(self.source)
        return self._length

    def read(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        examples = self.source.__getitems__([int(k) for k in keys])
        inputs = np.stack([np.asarray(ex[self.input_key]) for ex in examples])
        labels = np.asarray([ex[self.label_key] for ex in examples], dtype=self.label_dtype)
        return inputs, labels


@dataclass(frozen=True, eq=False)
class StreamSplit:
    """One split read lazily from ``reader``: example ``i`` is record ``keys[i]``.

    ``batch(rows)`` reads the examples at ``rows`` (indices or a slice) and returns the batch
    dict the model sees: ``inputs`` through ``transform`` (float32; raw dtype when
    ``transform`` is None or with ``raw=True``) and ``labels``. ``input_shape``/``raw_dtype``
    describe one raw example. With ``label_cache`` (classes, regression targets) the labels
    are small and kept in memory once read (:attr:`labels`); text labels stay lazy.
    """

    reader: Any
    keys: np.ndarray
    input_shape: tuple[int, ...]
    raw_dtype: Any
    transform: HostTransform | None = None
    label_cache: bool = True
    _cached: dict = field(default_factory=dict, repr=False)
    weights = None  # per-example loss weights are an in-memory feature

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, rows=slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Raw ``(inputs, labels)`` of the examples at ``rows``."""
        keys = self.keys[rows]
        if np.ndim(keys) == 0:
            raise TypeError("StreamSplit rows must be a slice or an array of indices")
        return self.reader.read(np.asarray(keys))

    def batch(self, rows=slice(None), *, raw: bool = False) -> dict[str, np.ndarray]:
        inputs, labels = self.read(rows)
        if self.transform is not None and not raw:
            inputs = self.transform(inputs)
        return {"inputs": inputs, "labels": labels}

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the inputs :meth:`batch` returns."""
        return np.dtype(np.float32) if self.transform is not None else np.dtype(self.raw_dtype)

    @property
    def inputs(self) -> LazyColumn:
        return LazyColumn(self, "inputs", (len(self), *self.input_shape), self.dtype)

    @property
    def labels(self):
        if not self.label_cache:
            inputs_like = self.reader.read(np.asarray(self.keys[:1]))[1]
            return LazyColumn(
                self, "labels", (len(self), *inputs_like.shape[1:]), inputs_like.dtype
            )
        if "labels" not in self._cached:
            chunks = [self.read(slice(s, s + CHUNK))[1] for s in range(0, len(self), CHUNK)]
            self._cached["labels"] = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
        return self._cached["labels"]

    def chunks(self, size: int = CHUNK, *, raw: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """The whole split in order, ``size`` examples at a time (raw inputs by default)."""
        for start in range(0, len(self), size):
            yield self.batch(slice(start, start + size), raw=raw)


@dataclass(frozen=True)
class LazyColumn:
    """``inputs`` or ``labels`` of a :class:`StreamSplit` as an array-like: ``shape``,
    ``dtype``, ``len`` and indexing by int, slice or index array read only those examples;
    ``np.asarray(column)`` reads the whole split (avoid it on large data)."""

    split: StreamSplit
    key: str
    shape: tuple[int, ...]
    dtype: Any

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, int | np.integer):
            return self.split.batch([int(index)])[self.key][0]
        return self.split.batch(index)[self.key]

    def __array__(self, dtype=None, copy=None):
        del copy
        parts = [batch[self.key] for batch in self.split.chunks(raw=False)]
        whole = np.concatenate(parts) if parts else np.zeros(self.shape, self.dtype)
        return whole if dtype is None else whole.astype(dtype)


def is_streamed(split: Any) -> bool:
    return isinstance(split, StreamSplit)
