"""Read whole datasets from TFDS: jaxtrain's bundled builders or prepared catalog datasets.

Nothing here downloads. A bundled dataset is built on first use from data installed with
scikit-learn; a catalog dataset must already be prepared (as ``array_record``) in the data
directory, otherwise a :class:`DatasetError` says how to prepare it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxtrain.data.builders import LOCAL_BUILDERS

DATA_DIR_ENV = "JAXTRAIN_DATA_DIR"


class DatasetError(ValueError):
    """A dataset the user asked for cannot be used; the message says what to do about it."""


@dataclass(frozen=True)
class ArraySplit:
    """One split held in host memory.

    inputs: numeric [n, ...] (uint8 images or float32 features); labels: int32 [n].
    """

    inputs: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class RawDataset:
    """Every split a source provides, with the class names of its label feature."""

    name: str
    splits: dict[str, ArraySplit]
    class_names: tuple[str, ...]


def default_data_dir() -> Path:
    """``$JAXTRAIN_DATA_DIR``, else ``~/.cache/jaxtrain/tensorflow_datasets``."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "jaxtrain" / "tensorflow_datasets"


def check_available(name: str, data_dir: str | os.PathLike | None = None) -> None:
    """Raise DatasetError unless ``name`` is bundled or a prepared TFDS dataset. Cheap, no I/O
    beyond looking at the data directory; call it before any run directory is written."""
    if name in LOCAL_BUILDERS:
        return
    _catalog_builder(name, _resolve_dir(data_dir))


def load_tfds(name: str, data_dir: str | os.PathLike | None = None) -> RawDataset:
    """Read every split of ``name`` into memory (building a bundled dataset on first use)."""
    builder = _builder(name, _resolve_dir(data_dir))
    input_key, label_key = builder.info.supervised_keys
    label_feature = builder.info.features[label_key]
    class_names = tuple(getattr(label_feature, "names", None) or [])
    if not class_names:
        raise DatasetError(f"data.name: {name}: label feature {label_key!r} is not a ClassLabel")
    try:
        source = builder.as_data_source()
    except Exception as err:  # noqa: BLE001 - TFDS raises several types here; all are fatal
        raise DatasetError(
            f"data.name: {name} in {builder.data_dir} cannot be read as a data source ({err}); "
            "prepare it with file_format='array_record'"
        ) from None
    splits = {}
    for split_name, records in source.items():
        examples = records.__getitems__(list(range(len(records))))
        splits[split_name] = ArraySplit(
            inputs=np.stack([np.asarray(ex[input_key]) for ex in examples]),
            labels=np.asarray([ex[label_key] for ex in examples], dtype=np.int32),
        )
    return RawDataset(name=name, splits=splits, class_names=class_names)


def _resolve_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def _builder(name: str, data_dir: Path):
    if name not in LOCAL_BUILDERS:
        return _catalog_builder(name, data_dir)
    import tensorflow_datasets as tfds

    with _quiet_tfds():  # an unbuilt dataset is expected here, not worth a warning
        builder = LOCAL_BUILDERS[name](data_dir=str(data_dir), file_format="array_record")
        if not builder.is_prepared():
            print(
                f"jaxtrain: building bundled dataset {name!r} in {data_dir} (first use)",
                file=sys.stderr,
            )
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
    return builder


@contextlib.contextmanager
def _quiet_tfds():
    """Silence TFDS's build chatter: stdout and absl warnings for the block, and its progress
    bars for good (TFDS has no way to ask whether they were on)."""
    import tensorflow_datasets as tfds

    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    tfds.disable_progress_bar()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        absl_logger.setLevel(level)


def _catalog_builder(name: str, data_dir: Path):
    import tensorflow_datasets as tfds

    bundled = ", ".join(sorted(LOCAL_BUILDERS))
    try:
        builder = tfds.builder(name, data_dir=str(data_dir), try_gcs=False)
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetError(
            f"data.name: unknown dataset {name!r}: not bundled with jaxtrain ({bundled}) "
            "and not in the TFDS catalog"
        ) from None
    except Exception as err:  # noqa: BLE001 - a catalog builder may need packages we lack
        raise DatasetError(
            f"data.name: the TFDS builder for {name!r} cannot be created here "
            f"({type(err).__name__}: {err})"
        ) from None
    if not builder.is_prepared():
        raise DatasetError(
            f"data.name: TFDS dataset {name!r} is not prepared in {data_dir}, and jaxtrain never "
            'downloads at run time. On a machine with network run: python -c "import '
            f"tensorflow_datasets as tfds; tfds.builder('{name}', data_dir='{data_dir}', "
            "file_format='array_record').download_and_prepare()\" and copy the folder "
            f"{data_dir / name} here (or set data.data_dir / ${DATA_DIR_ENV}). "
            f"Bundled offline datasets: {bundled}"
        )
    return builder
