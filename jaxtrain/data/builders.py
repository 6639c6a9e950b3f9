"""Local TFDS builders for data that ships offline (scikit-learn's bundled datasets).

Each builder writes ``array_record`` files, so it builds and reads back through
``tfds.data_source`` without TensorFlow. Nothing is downloaded: the examples come from the
copies scikit-learn installs with itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

_SKLEARN_HOMEPAGE = "https://scikit-learn.org/stable/datasets/toy_dataset.html"


class JaxtrainDigits(tfds.core.GeneratorBasedBuilder):
    """UCI optical digits as bundled by scikit-learn: 1,797 grey 8x8 images, values 0..16."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "From sklearn.datasets.load_digits."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="8x8 images of handwritten digits (0-16 grey levels), 10 classes.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
                }
            ),
            supervised_keys=("image", "label"),
            homepage=_SKLEARN_HOMEPAGE,
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # nothing to download
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        for index, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
            yield index, {"image": image.astype(np.uint8)[..., None], "label": int(label)}


class JaxtrainBreastCancer(tfds.core.GeneratorBasedBuilder):
    """Wisconsin diagnostic breast cancer as bundled by scikit-learn: 569 rows, 30 features."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "From sklearn.datasets.load_breast_cancer."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="30 real-valued cell-nucleus features; malignant (0) or benign (1).",
            features=tfds.features.FeaturesDict(
                {
                    "features": tfds.features.Tensor(shape=(30,), dtype=np.float32),
                    "label": tfds.features.ClassLabel(names=["malignant", "benign"]),
                }
            ),
            supervised_keys=("features", "label"),
            homepage=_SKLEARN_HOMEPAGE,
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        for index, (row, label) in enumerate(zip(data.data, data.target, strict=True)):
            yield index, {"features": row.astype(np.float32), "label": int(label)}


# The bundled datasets, by the name a config uses. One place, one dict.
LOCAL_BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "digits": JaxtrainDigits,
    "breast_cancer": JaxtrainBreastCancer,
}
