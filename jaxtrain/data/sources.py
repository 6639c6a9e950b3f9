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
import threading
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

    inputs: numeric [n, ...] (uint8 images, float32 features, int32 token windows);
    labels: int32 [n] classes, float32 [n] regression targets or int32 [n, T] next tokens;
    weights: optional f32 [n] per-example loss weights (class weights, reweighing).
    """

    inputs: np.ndarray
    labels: np.ndarray
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, rows=slice(None)) -> dict[str, np.ndarray]:
        """The examples at ``rows`` (indices or a slice; default all) as a batch dict:
        ``inputs``, ``labels`` and, when the split has them, ``weights``."""
        batch = {"inputs": self.inputs[rows], "labels": self.labels[rows]}
        if self.weights is not None:
            batch["weights"] = self.weights[rows]
        return batch


@dataclass(frozen=True)
class RawDataset:
    """Every split a source provides, the class names of its label feature (regression: the
    target's name; text: none) and the task the labels imply."""

    name: str
    splits: dict[str, ArraySplit]
    class_names: tuple[str, ...]
    task: str = "classification"  # or "regression", "language_model"


def default_data_dir() -> Path:
    """``$JAXTRAIN_DATA_DIR``, else ``~/.cache/jaxtrain/tensorflow_datasets``."""
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "jaxtrain" / "tensorflow_datasets"


def check_available(name: str, data_dir: str | os.PathLike | None = None) -> None:
    """Raise DatasetError unless ``name`` is bundled or a prepared TFDS dataset. Cheap, no I/O
    beyond looking at the data directory; call it before any run directory is written."""
    if _local(name) is not None:
        return
    _catalog_builder(name, _resolve_dir(data_dir))


def load_tfds(name: str, data_dir: str | os.PathLike | None = None) -> RawDataset:
    """Read every split of ``name`` into memory (building a bundled dataset on first use).

    The task follows from the features: a ClassLabel label is classification, a real-valued
    label regression, and a dataset with a ``text`` feature and no supervised keys is text
    for language modelling (see :func:`text_split`).
    """
    builder = _builder(name, _resolve_dir(data_dir))
    try:
        source = builder.as_data_source()
    except Exception as err:  # noqa: BLE001 - TFDS raises several types here; all are fatal
        raise DatasetError(
            f"data.name: {name} in {builder.data_dir} cannot be read as a data source ({err}); "
            "prepare it with file_format='array_record'"
        ) from None
    records = {split: r.__getitems__(list(range(len(r)))) for split, r in source.items()}
    if builder.info.supervised_keys is None:
        if "text" not in builder.info.features:
            raise DatasetError(
                f"data.name: {name} has neither supervised keys nor a 'text' feature"
            )
        splits = {
            split: text_split([ex["text"] for ex in examples])
            for split, examples in records.items()
        }
        return RawDataset(name, splits, (), task="language_model")
    input_key, label_key = builder.info.supervised_keys
    label_feature = builder.info.features[label_key]
    class_names = tuple(getattr(label_feature, "names", None) or [])
    if class_names:
        task, label_dtype = "classification", np.int32
    elif np.issubdtype(np.dtype(label_feature.np_dtype), np.floating):
        task, label_dtype, class_names = "regression", np.float32, (label_key,)
    else:
        raise DatasetError(
            f"data.name: {name}: label feature {label_key!r} is neither a ClassLabel "
            "(classification) nor real-valued (regression)"
        )
    splits = {
        split: ArraySplit(
            inputs=np.stack([np.asarray(ex[input_key]) for ex in examples]),
            labels=np.asarray([ex[label_key] for ex in examples], dtype=label_dtype),
        )
        for split, examples in records.items()
    }
    return RawDataset(name=name, splits=splits, class_names=class_names, task=task)


def load_feature(name: str, data_dir: str | os.PathLike | None, feature: str) -> np.ndarray:
    """One feature of every example of TFDS dataset ``name``, its splits concatenated in the
    order train, validation, test (the order the preparation stage numbers rows in)."""
    builder = _builder(name, _resolve_dir(data_dir))
    if feature not in builder.info.features:
        known = ", ".join(sorted(builder.info.features))
        raise DatasetError(
            f"fairness.sensitive_feature: {name} has no feature {feature!r} ({known})"
        )
    source = builder.as_data_source()
    parts = [
        np.asarray(
            [ex[feature] for ex in source[split].__getitems__(list(range(len(source[split]))))]
        )
        for split in ("train", "validation", "test")
        if split in source
    ]
    return np.concatenate(parts)


def text_split(documents: list[bytes | str]) -> ArraySplit:
    """Documents as one byte stream: inputs u8[N] (the UTF-8 bytes, in order) and labels
    i32[N] (the index of the document each byte belongs to), so splits can cut between
    documents and never inside one."""
    encoded = [d.encode("utf-8") if isinstance(d, str) else bytes(d) for d in documents]
    stream = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    owners = np.repeat(np.arange(len(encoded), dtype=np.int32), [len(d) for d in encoded])
    return ArraySplit(stream, owners)


def load_text_file(path: str | os.PathLike) -> RawDataset:
    """A UTF-8 text file as one ``train`` split of documents (paragraphs: blank-line separated,
    each keeping its trailing blank line so the stream is the file's bytes unchanged)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"data.path: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"data.path: {path} cannot be read as UTF-8 text ({err})") from None
    if not text.strip():
        raise DatasetError(f"data.path: {path} holds no text")
    paragraphs = text.split("\n\n")
    documents = [p + "\n\n" for p in paragraphs[:-1]] + [paragraphs[-1]]
    return RawDataset(path.stem, {"train": text_split(documents)}, (), task="language_model")


def _resolve_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def _local(name: str) -> tuple[type, str | None] | None:
    """``(builder class, config name or None)`` of a bundled ``name`` or ``name/config``."""
    base, _, config = name.partition("/")
    if base not in LOCAL_BUILDERS:
        return None
    return LOCAL_BUILDERS[base], config or None


def _builder(name: str, data_dir: Path):
    local = _local(name)
    if local is None:
        return _catalog_builder(name, data_dir)
    import tensorflow_datasets as tfds

    cls, config = local
    options = {"config": config} if config else {}
    with _quiet_tfds():  # an unbuilt dataset is expected here, not worth a warning
        try:
            builder = cls(data_dir=str(data_dir), file_format="array_record", **options)
        except ValueError as err:  # an unknown config name
            raise DatasetError(f"data.name: {name}: {err}") from None
        if not builder.is_prepared():
            print(
                f"jaxtrain: building bundled dataset {name!r} in {data_dir} (first use)",
                file=sys.stderr,
            )
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
    return builder


_QUIET = threading.RLock()


@contextlib.contextmanager
def _quiet_tfds():
    """Silence TFDS's build chatter: stdout and absl warnings for the block, and its progress
    bars for good (TFDS has no way to ask whether they were on)."""
    import tensorflow_datasets as tfds

    # redirect_stdout swaps the process-wide sys.stdout: one quiet block at a time, so two
    # threads preparing data cannot leave it pointing at a dead buffer.
    with _QUIET:
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
        with _quiet_tfds():  # absl warns about variant folders of unprepared names
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
