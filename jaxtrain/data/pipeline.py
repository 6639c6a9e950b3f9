"""Batches for training (grain, seeded per-epoch shuffles, checkpointable) and evaluation."""

from __future__ import annotations

from collections.abc import Iterator

import grain
import numpy as np

from jaxtrain.data.sources import ArraySplit

Batch = dict[str, np.ndarray]


class _Gather:
    """Batch of example indices -> the batch of examples (one vectorised numpy take)."""

    def __init__(self, split: ArraySplit):
        self._split = split

    def __call__(self, indices: np.ndarray) -> Batch:
        batch = {"inputs": self._split.inputs[indices], "labels": self._split.labels[indices]}
        if self._split.weights is not None:
            batch["weights"] = self._split.weights[indices]
        return batch


def train_batches(split: ArraySplit, batch_size: int, epochs: int, seed: int) -> grain.MapDataset:
    """The whole training stream: ``epochs`` passes, each in a new seeded order, batched.

    Yields dicts ``{"inputs": f32[batch_size, ...], "labels": i32[batch_size]}`` (plus
    ``"weights": f32[batch_size]`` when the split carries per-example loss weights);
    ``len(result) == epochs * len(split) // batch_size`` (the final partial batch is dropped,
    a batch may span two epochs). Iterators over it save and restore their position with
    ``get_state``/``set_state`` (or Orbax through ``grain.checkpoint``), and the order depends
    only on ``seed``, so a resumed run sees exactly the batches an uninterrupted one would.
    """
    if batch_size > len(split):
        raise ValueError(
            f"data.batch_size={batch_size} is larger than the training split ({len(split)})"
        )
    # Shuffle and batch indices, then gather each batch with one numpy take: the same grain
    # pipeline and iterator state as shuffling examples, at a fraction of the per-example cost.
    return (
        grain.MapDataset.range(len(split))
        .shuffle(seed=seed)
        .repeat(epochs)
        .batch(batch_size, drop_remainder=True, batch_fn=np.asarray)
        .map(_Gather(split))
    )


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
