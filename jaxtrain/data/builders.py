"""Local TFDS builders for data that ships offline (scikit-learn's bundled datasets, and
the documentation text Python installs with itself).

Each builder writes ``array_record`` files, so it builds and reads back through
``tfds.data_source`` without TensorFlow. Nothing is downloaded: the examples come from the
copies scikit-learn installs with itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxtrain.data.synthetic import JaxtrainBiasedCredit

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


class _SklearnTabular(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A table from scikit-learn's bundled copy: ``features`` f32[d] and a class or a target.

    Subclasses name the loader and describe the label: ``CLASS_NAMES`` for a classification
    label (a ClassLabel), or ``None`` for a real-valued regression ``target`` (f32).
    """

    VERSION = tfds.core.Version("1.0.0")
    LOADER: str
    NUM_FEATURES: int
    CLASS_NAMES: tuple[str, ...] | None
    DESCRIPTION: str

    def _info(self) -> tfds.core.DatasetInfo:
        if self.CLASS_NAMES is None:
            label = tfds.features.Tensor(shape=(), dtype=np.float32)
            label_key = "target"
        else:
            label = tfds.features.ClassLabel(names=list(self.CLASS_NAMES))
            label_key = "label"
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "features": tfds.features.Tensor(shape=(self.NUM_FEATURES,), dtype=np.float32),
                    label_key: label,
                }
            ),
            supervised_keys=("features", label_key),
            homepage=_SKLEARN_HOMEPAGE,
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        import sklearn.datasets

        data = getattr(sklearn.datasets, self.LOADER)()
        label_key = "target" if self.CLASS_NAMES is None else "label"
        for index, (row, label) in enumerate(zip(data.data, data.target, strict=True)):
            value = float(label) if self.CLASS_NAMES is None else int(label)
            yield index, {"features": row.astype(np.float32), label_key: value}


class JaxtrainBreastCancer(_SklearnTabular):
    """Wisconsin diagnostic breast cancer as bundled by scikit-learn: 569 rows, 30 features."""

    RELEASE_NOTES = {"1.0.0": "From sklearn.datasets.load_breast_cancer."}
    LOADER = "load_breast_cancer"
    NUM_FEATURES = 30
    CLASS_NAMES = ("malignant", "benign")
    DESCRIPTION = "30 real-valued cell-nucleus features; malignant (0) or benign (1)."


class JaxtrainWine(_SklearnTabular):
    """UCI wine recognition as bundled by scikit-learn: 178 rows, 13 features, 3 cultivars."""

    RELEASE_NOTES = {"1.0.0": "From sklearn.datasets.load_wine."}
    LOADER = "load_wine"
    NUM_FEATURES = 13
    CLASS_NAMES = ("class_0", "class_1", "class_2")
    DESCRIPTION = "13 chemical measurements of wines from three cultivars."


class JaxtrainIris(_SklearnTabular):
    """Fisher's iris as bundled by scikit-learn: 150 rows, 4 features, 3 species."""

    RELEASE_NOTES = {"1.0.0": "From sklearn.datasets.load_iris."}
    LOADER = "load_iris"
    NUM_FEATURES = 4
    CLASS_NAMES = ("setosa", "versicolor", "virginica")
    DESCRIPTION = "Sepal and petal length and width (cm) of three iris species."


class JaxtrainDiabetes(_SklearnTabular):
    """Diabetes progression as bundled by scikit-learn: 442 rows, 10 features, a real target."""

    RELEASE_NOTES = {"1.0.0": "From sklearn.datasets.load_diabetes (scaled features)."}
    LOADER = "load_diabetes"
    NUM_FEATURES = 10
    CLASS_NAMES = None
    DESCRIPTION = "Ten baseline variables; target: disease progression one year later."


class JaxtrainPydocText(tfds.core.GeneratorBasedBuilder):
    """English text every Python installation carries: the reference-manual topics that
    ``help()`` shows (``pydoc_data.topics``), one document per topic (about 465 KB)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "From pydoc_data.topics of the building Python."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Python reference documentation topics, plain text, UTF-8.",
            features=tfds.features.FeaturesDict(
                {"title": tfds.features.Text(), "text": tfds.features.Text()}
            ),
            homepage="https://docs.python.org/3/reference/",
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        from pydoc_data.topics import topics

        for index, title in enumerate(sorted(topics)):
            yield index, {"title": title, "text": topics[title]}


class JaxtrainStdlibDocstrings(tfds.core.GeneratorBasedBuilder):
    """A second English text every Python installation carries: the module docstrings of
    the standard library's top-level pure-Python modules (``Lib/*.py``, read with ``ast``,
    nothing imported), one document per module (about 120 KB on Python 3.11). A small,
    specialised corpus next to ``pydoc_text`` for fine-tuning a language model."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Module docstrings of the building Python's Lib/*.py."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Python standard-library module docstrings, plain text, UTF-8.",
            features=tfds.features.FeaturesDict(
                {"title": tfds.features.Text(), "text": tfds.features.Text()}
            ),
            homepage="https://docs.python.org/3/library/",
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        import ast
        import sysconfig
        from pathlib import Path

        index = 0
        for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, OSError):
                continue
            text = ast.get_docstring(tree)
            if text and text.strip():
                yield index, {"title": path.stem, "text": text.strip() + "\n\n"}
                index += 1


class JaxtrainSyntheticImages(tfds.core.ShardBasedBuilder):
    """Random uint8 32x32x3 images with a label each, made locally in any number: the data
    for measuring the streaming path (a dataset larger than memory) without a download.

    Configs: ``small`` (2,048 train + 512 test images, ~11 MB), ``medium`` (50,000 + 10,000,
    CIFAR-10's shape, ~230 MB) and ``3gb`` (850,000 + 10,000, ~3.2 GB on disk). Image
    ``i`` is drawn from ``np.random.default_rng((split_seed, block))`` with the other images
    of its block of 4,096; its label is the channel whose mean is largest, plus 3 times the
    quadrant (top/bottom, left/right) whose mean is largest, modulo 10: learnable, if not by
    much. Written shard by shard in order (``ShardBasedBuilder``: no shuffle buffer, so a
    split larger than memory is written without TensorFlow)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Random images, label from channel and quadrant means."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="small", description="2,048 + 512 images"),
        tfds.core.BuilderConfig(name="medium", description="50,000 + 10,000 images"),
        tfds.core.BuilderConfig(name="3gb", description="850,000 + 10,000 images"),
    ]
    SIZES = {"small": (2048, 512), "medium": (50_000, 10_000), "3gb": (850_000, 10_000)}
    SHAPE = (32, 32, 3)
    BLOCK = 4096  # images drawn per generator call
    SHARD_BLOCKS = 16  # blocks per shard (65,536 images, ~250 MB)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Random uint8 images for input-pipeline measurements.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=self.SHAPE, dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _shard_iterators_per_split(self, dl_manager: Any) -> dict[str, list]:
        del dl_manager
        sizes = dict(zip(("train", "test"), self.SIZES[self.builder_config.name], strict=True))
        shards = {}
        for split_seed, (split, count) in enumerate(sizes.items()):
            per_shard = self.BLOCK * self.SHARD_BLOCKS
            shards[split] = [
                _SyntheticShard(split_seed, start, min(start + per_shard, count), self.BLOCK)
                for start in range(0, count, per_shard)
            ]
        return shards


class _SyntheticShard:
    """Examples ``[start, stop)`` of a synthetic split, as ``(key, example)`` pairs."""

    def __init__(self, split_seed: int, start: int, stop: int, block: int):
        self.split_seed, self.start, self.stop, self.block = split_seed, start, stop, block

    def __call__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for first in range(self.start, self.stop, self.block):
            rng = np.random.default_rng((self.split_seed, first))
            count = min(self.block, self.stop - first)
            images = rng.integers(0, 256, (count, *JaxtrainSyntheticImages.SHAPE), np.uint8)
            for offset, image in enumerate(images):
                yield first + offset, {"image": image, "label": synthetic_label(image)}


def synthetic_label(image: np.ndarray) -> int:
    """The label of a synthetic image u8[32, 32, 3]: argmax channel mean + 3 * argmax quadrant
    mean (quadrants in reading order), modulo 10."""
    channel = int(np.argmax(image.reshape(-1, 3).mean(axis=0)))
    quadrants = [image[r : r + 16, c : c + 16].mean() for r in (0, 16) for c in (0, 16)]
    return (channel + 3 * int(np.argmax(quadrants))) % 10


# The bundled datasets, by the name a config uses. One place, one dict.
LOCAL_BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "digits": JaxtrainDigits,
    "breast_cancer": JaxtrainBreastCancer,
    "wine": JaxtrainWine,
    "iris": JaxtrainIris,
    "diabetes": JaxtrainDiabetes,
    "pydoc_text": JaxtrainPydocText,
    "stdlib_docstrings": JaxtrainStdlibDocstrings,
    "biased_credit": JaxtrainBiasedCredit,
    "synthetic_images": JaxtrainSyntheticImages,  # configs: small, medium, 3gb
}
