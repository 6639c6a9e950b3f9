"""From a data config to normalised train/validation/test splits in memory."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxtrain.config import DataConfig
from jaxtrain.data.prepare import Normalizer, fit_normalizer
from jaxtrain.data.sources import ArraySplit, DatasetError, RawDataset, load_text_file, load_tfds
from jaxtrain.data.split import stratified_split

SPLITS = ("train", "validation", "test")
BYTE_VOCABULARY = 256  # text is modelled as UTF-8 bytes: no tokenizer to download


@dataclass(frozen=True)
class PreparedData:
    """The three splits plus what produced them.

    ``task`` is ``classification`` (float32 inputs, int32 labels), ``regression`` (float32
    inputs, float32 targets standardised by ``target_normalizer``) or ``language_model``
    (int32 byte windows [n, T] as inputs, the next bytes [n, T] as labels). ``split_origin``
    tells, per split, whether it is the source's own split or carved from its training split.
    """

    name: str
    splits: dict[str, ArraySplit]
    class_names: tuple[str, ...]
    normalizer: Normalizer
    split_origin: dict[str, str]
    task: str = "classification"
    target_normalizer: Normalizer | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_outputs(self) -> int:
        """Model outputs per example (per position for text): classes, targets or 256 bytes."""
        if self.task == "language_model":
            return BYTE_VOCABULARY
        if self.task == "regression":
            labels = self.splits["train"].labels
            return 1 if labels.ndim == 1 else int(labels.shape[1])
        return self.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. (8, 8, 1), (30,) or (sequence_length,)."""
        return tuple(self.splits["train"].inputs.shape[1:])

    def sizes(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}

    def stats(self) -> dict:
        """The statistics fitted on the training split, as JSON (see :meth:`with_stats`)."""
        targets = self.target_normalizer.to_dict() if self.target_normalizer else None
        return {"inputs": self.normalizer.to_dict(), "targets": targets}


def fitted_stats(stats: dict | None) -> tuple[Normalizer | None, Normalizer | None]:
    """(inputs, targets) normalisers from :meth:`PreparedData.stats` JSON (or the older
    inputs-only form)."""
    if not stats:
        return None, None
    if "inputs" not in stats:
        return Normalizer.from_dict(stats), None
    targets = stats.get("targets")
    return Normalizer.from_dict(stats["inputs"]), targets and Normalizer.from_dict(targets)


def load_source(config: DataConfig) -> RawDataset:
    """The raw dataset ``config`` names: a text file at ``path``, else a TFDS dataset."""
    if config.path is not None:
        return load_text_file(config.path)
    return load_tfds(config.name, config.data_dir)


def prepare_data(
    config: DataConfig, normalizer: Normalizer | None = None, stats: dict | None = None
) -> PreparedData:
    """Load the data, make the held-out splits, fit normalisation on train only.

    A source's own ``validation``/``test`` splits are used as they are; whichever is missing is
    carved from its ``train`` split with ``config.seed``: stratified by label for classes, at
    random for regression, and for text by whole documents (shuffled, then cut by size), so
    no document sits in two splits. Statistics stored with a run (``stats``, or just the
    inputs' ``normalizer``) are applied instead of refitting: evaluation and resume reuse them.
    """
    raw = load_source(config)
    stored_inputs, stored_targets = fitted_stats(stats)
    normalizer = normalizer or stored_inputs
    if "train" not in raw.splits:
        raise DatasetError(f"data.name: {config.name} has no 'train' split ({sorted(raw.splits)})")
    carve = {
        name: fraction
        for name, fraction in (
            ("validation", config.validation_fraction),
            ("test", config.test_fraction),
        )
        if name not in raw.splits
    }
    if raw.task == "language_model":
        splits = _text_splits(raw, carve, config)
    else:
        source_train = raw.splits["train"]
        strata = source_train.labels if raw.task == "classification" else None
        if strata is None:  # one stratum: a plain seeded random split
            strata = np.zeros(len(source_train), np.int32)
        parts = stratified_split(strata, carve, seed=config.seed)
        splits = {name: split for name, split in raw.splits.items() if name in SPLITS}
        for name, indices in parts.items():
            splits[name] = ArraySplit(source_train.inputs[indices], source_train.labels[indices])
    for name in SPLITS:
        if len(splits.get(name, ())) == 0:
            raise DatasetError(
                f"data: the {name} split of {config.name} is empty; "
                "raise data.validation_fraction / data.test_fraction or use more data"
            )
    origin = {name: ("carved from train" if name in carve else "source") for name in SPLITS}
    if raw.task == "language_model":
        none = Normalizer("none", np.zeros(0, np.float32), np.ones(0, np.float32))
        return PreparedData(config.name, splits, (), none, origin, raw.task)
    if normalizer is None:
        normalizer = fit_normalizer(splits["train"].inputs, config.normalize)
    targets = None
    if raw.task == "regression":
        targets = stored_targets or fit_normalizer(_columns(splits["train"].labels), "standard")
    normalized = {
        name: ArraySplit(
            normalizer(splits[name].inputs),
            splits[name].labels.astype(np.int32)
            if targets is None
            else _uncolumns(targets(_columns(splits[name].labels)), splits[name].labels),
        )
        for name in SPLITS
    }
    return PreparedData(
        config.name, normalized, raw.class_names, normalizer, origin, raw.task, targets
    )


def _columns(labels: np.ndarray) -> np.ndarray:
    return labels[:, None] if labels.ndim == 1 else labels


def _uncolumns(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    return values[:, 0] if like.ndim == 1 else values


def _text_splits(raw: RawDataset, carve: dict[str, float], config: DataConfig) -> dict:
    """Byte streams -> shuffled whole documents -> cut by size -> next-byte windows."""
    streams = {name: raw.splits[name] for name in SPLITS if name in raw.splits}
    if carve:
        source = raw.splits["train"]
        documents = np.split(source.inputs, np.flatnonzero(np.diff(source.labels)) + 1)
        order = np.random.default_rng(config.seed).permutation(len(documents))
        sizes = np.cumsum([len(documents[i]) for i in order]) / len(source.inputs)
        bounds, start = {}, 0.0
        for name, fraction in carve.items():
            bounds[name] = (start, start + fraction)
            start += fraction
        bounds["train"] = (start, 1.0 + 1e-9)
        # A document belongs to the part in which its midpoint (by size) falls.
        middles = sizes - np.array([len(documents[i]) for i in order]) / (2 * len(source.inputs))
        for name, (low, high) in bounds.items():
            chosen = [documents[i] for i, m in zip(order, middles, strict=True) if low <= m < high]
            stream = np.concatenate(chosen) if chosen else np.zeros(0, np.uint8)
            streams[name] = ArraySplit(stream, np.zeros(len(stream), np.int32))
    return {
        name: byte_windows(split.inputs, config.sequence_length) for name, split in streams.items()
    }


def byte_windows(stream: np.ndarray, length: int) -> ArraySplit:
    """A byte stream u8[N] -> inputs i32[n, length] and labels i32[n, length] (the next byte).

    Windows step by ``length`` and overlap by one byte, so every byte after the first is a
    target exactly once; ``n = (N - 1) // length`` (the tail that fills no window is dropped).
    """
    n = max(0, (len(stream) - 1) // length)
    if n == 0:
        empty = np.zeros((0, length), np.int32)
        return ArraySplit(empty, empty)
    starts = np.arange(n)[:, None] * length + np.arange(length + 1)[None, :]
    windows = stream[starts].astype(np.int32)
    return ArraySplit(windows[:, :-1], windows[:, 1:])
