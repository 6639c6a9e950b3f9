"""Batches for training (grain, seeded per-epoch shuffles, checkpointable) and evaluation."""

from __future__ import annotations

from collections.abc import Iterator

import grain
import numpy as np

from jaxtrain.data.sources import ArraySplit  # noqa: F401  (documented type)

Batch = dict[str, np.ndarray]
AUGMENT_STREAM = 0xA06  # keeps host augmentation's generators apart from other seeded draws


class _Gather:
    """(position, batch of example indices) -> the batch of examples.

    One vectorised numpy take for a split in memory, one batched read for a streamed split
    (``raw``: its raw dtype, e.g. uint8 images, for the step to convert). With
    ``shard=(index, count)`` only that process's slice of each batch is gathered; with
    ``augment(inputs, rng)`` the inputs are augmented on the host with a generator seeded by
    ``(seed, position)``, so a batch is the same whichever worker makes it and after a
    resume; with ``devices`` each array is laid out ``[devices, rows / devices, ...]``.
    """

    def __init__(
        self,
        split,
        shard: tuple[int, int] = (0, 1),
        devices=None,
        *,
        raw: bool = False,
        augment=None,
        seed: int = 0,
    ):
        self._split = split
        self._shard = shard
        self._devices = devices
        self._raw = raw
        self._augment = augment
        self._seed = seed

    def __call__(self, indices: np.ndarray, position: int = 0) -> Batch:
        index, count = self._shard
        rows = len(indices) // count
        mine = indices[index * rows : (index + 1) * rows]
        batch = self._split.batch(mine, raw=True) if self._raw else self._split.batch(mine)
        if self._augment is not None:
            rng = np.random.default_rng((self._seed, AUGMENT_STREAM, position, index))
            batch = {**batch, "inputs": self._augment(batch["inputs"], rng)}
        if self._devices:
            batch = {
                key: value.reshape(self._devices, rows // self._devices, *value.shape[1:])
                for key, value in batch.items()
            }
        return batch


class _Positioned:
    """``(position, indices) -> gather(indices, position)`` for ``map_with_index``."""

    def __init__(self, gather: _Gather):
        self.gather = gather

    def __call__(self, position: int, indices: np.ndarray) -> Batch:
        return self.gather(indices, position=position)


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
    split,
    batch_size: int,
    epochs: int,
    seed: int,
    *,
    shard: tuple[int, int] = (0, 1),
    devices: int | None = None,
    raw: bool = False,
    augment=None,
) -> grain.MapDataset:
    """The whole training stream: ``epochs`` passes, each in a new seeded order, batched.

    ``split`` is an :class:`ArraySplit` in memory or a streamed
    :class:`~jaxtrain.data.streaming.StreamSplit` (read a batch at a time, ``raw``: in its
    stored dtype). Yields dicts ``{"inputs": [batch_size, ...], "labels": [batch_size]}``
    (plus ``"weights": f32[batch_size]`` when the split carries per-example loss weights);
    ``len(result) == epochs * len(split) // batch_size`` (the final partial batch is dropped,
    a batch may span two epochs). Iterators over it save and restore their position with
    ``get_state``/``set_state`` (or Orbax through ``grain.checkpoint``), and the order depends
    only on ``seed``, so a resumed run sees exactly the batches an uninterrupted one would.

    Data parallel layouts: ``shard=(process_index, process_count)`` yields only this
    process's ``batch_size / count`` rows of every global batch (multi-process runs: each
    process reads its own shard); ``devices`` reshapes every array to
    ``[devices, rows / devices, ...]`` (the ``pmap`` layout). ``augment(inputs, rng)``
    augments each batch on the host (see :class:`_Gather`).
    """
    # Shuffle and batch indices, then gather each batch at once: the same grain pipeline
    # and iterator state as shuffling examples (``MapDataset.source(split).shuffle(seed)``),
    # at a fraction of the per-example cost, and one batched read of only this process's rows.
    indices = train_index_batches(len(split), batch_size, epochs, seed)
    gather = _Gather(split, shard, devices, raw=raw, augment=augment, seed=seed)
    if augment is None:
        return indices.map(gather)
    return indices.map_with_index(_Positioned(gather))


def prefetched(
    batches: grain.MapDataset, *, workers: int = 0, prefetch: int = 2, put=None
) -> grain.IterDataset:
    """``batches`` made ahead of the step: by ``workers`` grain processes (0: a reading
    thread in this process), and ``prefetch`` of them moved by ``put`` (e.g. onto the device)
    in a background thread, so the next batch is ready (double buffering) while the step
    runs. The iterator's state is the position of the batch last *returned*, so a checkpoint
    taken between steps resumes on the exact next batch (with the same ``workers``)."""
    stream = batches.to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=max(prefetch, 1))
    )
    if workers:
        absl_flags_parsed()
        stream = stream.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2)
        )
    if prefetch:
        if put is not None:
            stream = stream.map(put)
        stream = grain.experimental.ThreadPrefetchIterDataset(stream, prefetch_buffer_size=prefetch)
    return stream


def absl_flags_parsed() -> None:
    """grain's worker processes read absl flags, which only an absl ``app.run`` parses; a
    CLI or a notebook has none, so take the defaults as parsed."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _as_int32(indices: list) -> np.ndarray:
    return np.asarray(indices, dtype=np.int32)


def eval_batches(split, batch_size: int) -> Iterator[Batch]:
    """Fixed-shape batches in order: the last one is zero-padded and ``mask`` marks real rows.

    Yields ``{"inputs": [batch_size, ...], "labels": [batch_size, ...], "mask": bool[batch_size]}``
    so one compiled evaluation step serves every batch and split. ``split`` may be streamed
    (each batch is read when it is needed).
    """
    n = len(split)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        pad = batch_size - (stop - start)
        batch = split.batch(slice(start, stop))
        inputs, labels = batch["inputs"], batch["labels"]
        mask = np.ones(stop - start, dtype=bool)
        if pad:
            inputs = np.concatenate([inputs, np.zeros((pad, *inputs.shape[1:]), inputs.dtype)])
            labels = np.concatenate([labels, np.zeros((pad, *labels.shape[1:]), labels.dtype)])
            mask = np.concatenate([mask, np.zeros(pad, dtype=bool)])
        yield {"inputs": inputs, "labels": labels, "mask": mask}
