"""The life cycle's raw data: scikit-learn's digits with planted defects, as a TFDS dataset.

``plant(seed)`` takes the 1,797 8x8 digits (grey levels 0..16, as float32 images so a pixel
can be missing) and, on disjoint sets of rows chosen with ``seed``, blanks 1-3 pixels (NaN),
flips the label to another class, and appends exact copies of rows (same image, same label).
``write_dataset`` writes the result as an ``array_record`` TFDS dataset named
``lifecycle_digits`` in a data directory, in row order (no shuffling), so the preparation
report's row numbers are the rows of ``plant``'s arrays; the configs read it with
``data.name: lifecycle_digits`` and ``data.data_dir`` set to that directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

NAME = "lifecycle_digits"
DEFECTS = {"missing": 36, "flipped": 72, "duplicates": 54}  # rows of 1,797: 2%, 4%, 3%


def plant(seed: int = 0) -> dict[str, Any]:
    """Images f32[n, 8, 8, 1] (NaN = missing pixel), labels i32[n], and the planted rows:
    ``missing`` and ``flipped`` (row numbers), ``duplicates`` (the copies' row numbers) and
    ``duplicate_of`` (their originals), ``true_labels`` of the flipped rows."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(labels))
    counts = list(DEFECTS.values())
    missing, flipped, originals = np.split(chosen[: sum(counts)], np.cumsum(counts)[:-1])
    missing, flipped, originals = np.sort(missing), np.sort(flipped), np.sort(originals)
    true_labels = labels[flipped].copy()
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    for row in missing:
        pixels = rng.choice(64, size=rng.integers(1, 4), replace=False)
        images[row].reshape(-1)[pixels] = np.nan
    copies = np.arange(len(labels), len(labels) + len(originals))
    images = np.concatenate([images, images[originals]])
    labels = np.concatenate([labels, labels[originals]])
    return {
        "images": images,
        "labels": labels,
        "missing": missing.tolist(),
        "flipped": flipped.tolist(),
        "true_labels": true_labels.tolist(),
        "duplicates": copies.tolist(),
        "duplicate_of": originals.tolist(),
    }


class LifecycleDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Digits with planted defects (see :func:`plant`); read back by name from its data
    directory (TFDS's read-only builder), so nothing needs to import this class."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "sklearn digits with planted missing pixels, flips, duplicates."}
    SEED = 0

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="8x8 digits (0-16, float32, NaN = missing) with planted defects.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.float32),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,  # row i of the file is row i of plant()
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        planted = plant(self.SEED)
        for index, (image, label) in enumerate(
            zip(planted["images"], planted["labels"], strict=True)
        ):
            yield index, {"image": image, "label": int(label)}


def write_dataset(data_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Write ``lifecycle_digits`` (planted with ``seed``) into ``data_dir``; return
    :func:`plant`'s ground truth (without the arrays)."""
    import contextlib
    import io
    import logging

    LifecycleDigits.SEED = seed
    builder = LifecycleDigits(data_dir=str(data_dir), file_format="array_record")
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    tfds.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
    finally:
        absl.setLevel(level)
    truth = plant(seed)
    return {k: v for k, v in truth.items() if k not in ("images", "labels")} | {
        "rows": len(truth["labels"])
    }
