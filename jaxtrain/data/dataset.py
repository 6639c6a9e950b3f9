"""From a data config to normalised train/validation/test splits in memory."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxtrain.config import DataConfig
from jaxtrain.data.prepare import Normalizer, fit_normalizer
from jaxtrain.data.sources import ArraySplit, DatasetError, load_tfds
from jaxtrain.data.split import stratified_split

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class PreparedData:
    """The three splits (float32 inputs, int32 labels) plus what produced them.

    ``split_origin`` tells, per split, whether it is the source's own split or carved out of
    the source's training split by :func:`stratified_split`.
    """

    name: str
    splits: dict[str, ArraySplit]
    class_names: tuple[str, ...]
    normalizer: Normalizer
    split_origin: dict[str, str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. (8, 8, 1) or (30,)."""
        return tuple(self.splits["train"].inputs.shape[1:])

    def sizes(self) -> dict[str, int]:
        return {name: len(split) for name, split in self.splits.items()}


def prepare_data(config: DataConfig, normalizer: Normalizer | None = None) -> PreparedData:
    """Load ``config.name``, make the held-out splits, fit normalisation on train only.

    A source's own ``validation``/``test`` splits are used as they are; whichever is missing is
    carved from its ``train`` split, stratified by label with ``config.seed``. A ``normalizer``
    stored with a run is applied instead of refitting (evaluation and resume reuse it).
    """
    raw = load_tfds(config.name, config.data_dir)
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
    source_train = raw.splits["train"]
    parts = stratified_split(source_train.labels, carve, seed=config.seed)
    splits = {name: split for name, split in raw.splits.items() if name in SPLITS}
    for name, indices in parts.items():
        splits[name] = ArraySplit(source_train.inputs[indices], source_train.labels[indices])
    for name in SPLITS:
        if len(splits.get(name, ())) == 0:
            raise DatasetError(
                f"data: the {name} split of {config.name} is empty; "
                "raise data.validation_fraction / data.test_fraction or use more data"
            )
    if normalizer is None:
        normalizer = fit_normalizer(splits["train"].inputs, config.normalize)
    normalized = {
        name: ArraySplit(normalizer(splits[name].inputs), splits[name].labels.astype(np.int32))
        for name in SPLITS
    }
    origin = {name: ("carved from train" if name in carve else "source") for name in SPLITS}
    return PreparedData(config.name, normalized, raw.class_names, normalizer, origin)
