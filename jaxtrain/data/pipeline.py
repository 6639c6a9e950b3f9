"""Batches for training (grain, seeded per-epoch shuffles, checkpointable) and evaluation."""

from __future__ import annotations

from collections.abc import Iterator

import grain
import numpy as np

from jaxtrain.data.sources import ArraySplit

Batch = dict[str, np.ndarray]


class _Gather:
    """Batch of example indices -> the batch of examples (one vectorised numpy take).

    With ``shard=(index, count)`` only that process's slice of each batch is gathered; with
    ``devices`` each array is laid out ``[devices, rows / devices, ...]`` for ``pmap``.
    """

    def __init__(self, split: ArraySplit, shard: tuple[int, int] = (0, 1), devices=None):
        self._split = split
        self._shard = shard
        self._devices = devices

    def __call__(self, indices: np.ndarray) -> Batch:
        index, count = self._shard
        rows = len(indices) // count
        batch = self._split.batch(indices[index * rows : (index + 1) * rows])
        if self._devices:
            batch = {
                key: value.reshape(self._devices, rows // self._devices, *value.shape[1:])
                for key, value in batch.items()
            }
        return batch


def train_index_batches(
    num_examples: int, batch_size: int, epochs: int, seed: int
) -> grain.MapDataset:
    """The training stream as index batches ``i32[batch_size]`` (what :func:`train_batches`
    gathers): ``epochs`` passes, each in a new order that depends only on ``seed``, the final
    partial batch dropped, a batch possibly spanning two epochs. Iterators over it have the
    same positions (``get_state``) as iterators over :func:`train_batches`, so a checkpoint
    of one restores into the other (a fused epoch gathers on the device instead)."""
    if batch_size > num_examples:
        raise ValueError(
            f"data.batch_size={batch_size} is larger than the training split ({num_examples})"
        )
    return (
        grain.MapDataset.range(num_examples)
        .shuffle(seed=seed)
        .repeat(epochs)
        .batch(batch_size, drop_remainder=True, batch_fn=_as_int32)
    )


def train_batches(
    split: ArraySplit,
    batch_size: int,
    epochs: int,
    seed: int,
    *,
    shard: tuple[int, int] = (0, 1),
    devices: int | None = None,
) -> grain.MapDataset:
    """The whole training stream: ``epochs`` passes, each in a new seeded order, batched.

    Yields dicts ``{"inputs": f32[batch_size, ...], "labels": i32[batch_size]}`` (plus
    ``"weights": f32[batch_size]`` when the split carries per-example loss weights);
    ``len(result) == epochs * len(split) // batch_size`` (the final partial batch is dropped,
    a batch may span two epochs). Iterators over it save and restore their position with
    ``get_state``/``set_state`` (or Orbax through ``grain.checkpoint``), and the order depends
    only on ``seed``, so a resumed run sees exactly the batches an uninterrupted one would.

    Data parallel layouts: ``shard=(process_index, process_count)`` yields only this
    process's ``batch_size / count`` rows of every global batch (multi-process runs: each
    process reads its own shard); ``devices`` reshapes every array to
    ``[devices, rows / devices, ...]`` (the ``pmap`` layout).
    """
    # Shuffle and batch indices, then gather each batch with one numpy take: the same grain
    # pipeline and iterator state as shuffling examples, at a fraction of the per-example cost.
    indices = train_index_batches(len(split), batch_size, epochs, seed)
    return indices.map(_Gather(split, shard, devices))


def _as_int32(indices: list) -> np.ndarray:
    return np.asarray(indices, dtype=np.int32)


def eval_batches(split: ArraySplit, batch_size: int) -> Iterator[Batch]:
    """Fixed-shape batches in order: the last one is zero-padded and ``mask`` marks real rows.

    Yields ``{"inputs": [batch_size, ...], "labels": [batch_size, ...], "mask": bool[batch_size]}``
    so one compiled evaluation step serves every batch and split.
    """
    n = len(split)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        pad = batch_size - (stop - start)
        inputs = split.inputs[start:stop]
        labels = split.labels[start:stop]
        mask = np.ones(stop - start, dtype=bool)
        if pad:
            inputs = np.concatenate([inputs, np.zeros((pad, *inputs.shape[1:]), inputs.dtype)])
            labels = np.concatenate([labels, np.zeros((pad, *labels.shape[1:]), labels.dtype)])
            mask = np.concatenate([mask, np.zeros(pad, dtype=bool)])
        yield {"inputs": inputs, "labels": labels, "mask": mask}
