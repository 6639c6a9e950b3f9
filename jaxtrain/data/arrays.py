"""Data held in Python or in NumPy files, as the sources the one preparation path reads.

:func:`as_source` turns what a user has into a :class:`~jaxtrain.data.sources.RawDataset`
(arrays) or :class:`Frames` (a table, read with the ``data:`` table keys):

- ``(inputs, labels)`` arrays, or a dict ``{"inputs": ..., "labels": ...}`` (or ``x``/``y``):
  one source split, ``train``; validation and test are carved from it as for any source;
- a dict of splits ``{"train": ..., "validation": ..., "test": ...}`` (``val`` for
  validation), each in any of these forms: the source's own fixed splits;
- a TFDS or grain random-access source (``len`` and indexing, as ``tfds.data_source`` and
  ``grain.MapDataset`` give), of records that are ``(inputs, label)`` pairs or dicts with
  ``inputs``/``labels``, ``x``/``y``, ``image``/``label`` or ``features``/``label``: read
  into memory (large sources belong to the streaming path);
- a pandas DataFrame (or a dict of them by split): a table;
- a :class:`~jaxtrain.data.sources.RawDataset` as it is.

Labels decide the task unless ``data.task`` says: floats are regression targets; integers,
booleans and text are classes, named by their text (``class_names``: the values present,
sorted as numbers when they are numbers; ``data.class_names`` fixes the set).

:func:`load_arrays` reads a ``.npz`` file (``np.load`` with ``allow_pickle=False``: no pickle
is ever loaded) holding ``inputs``/``labels`` or ``x``/``y``, optionally per split
(``x_train``, ``y_train``, ``x_test``, ... with ``validation`` or ``val``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxtrain.data.labels import infer_class_names, label_ids
from jaxtrain.data.sources import ArraySplit, DatasetError, RawDataset

SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
PAIRS = (("inputs", "labels"), ("x", "y"), ("image", "label"), ("features", "label"))
FORMS = (
    "(inputs, labels) arrays, a dict with inputs/labels (or x/y), a dict of splits "
    "(train, validation, test), a TFDS or grain random-access source, or a pandas DataFrame"
)
NPZ_FORMS = (
    "inputs and labels (or x and y), optionally per split: x_train, y_train, x_validation "
    "(or x_val), y_validation, x_test, y_test"
)


@dataclass(frozen=True)
class Frames:
    """A table given as pandas DataFrames, by source split (``train`` at least)."""

    frames: dict[str, Any]


def as_source(
    data: Any,
    name: str = "arrays",
    *,
    task: str | None = None,
    class_names: tuple[str, ...] | None = None,
    where: str = "data",
) -> RawDataset | Frames:
    """``data`` in any of the forms of the module docstring as a RawDataset or Frames.

    ``task`` / ``class_names``: ``data.task`` / ``data.class_names`` (or what a run stored).
    Errors are one-line :class:`DatasetError` naming ``where`` and the forms accepted."""
    if isinstance(data, RawDataset):
        return data
    if _is_frame(data):
        return Frames({"train": data})
    if isinstance(data, Mapping) and data and set(data) <= set(SPLIT_NAMES):
        parts = {SPLIT_NAMES[k]: v for k, v in data.items()}
        if "train" not in parts:
            raise DatasetError(f"{where}: the splits {sorted(data)} have no 'train' split")
        if all(_is_frame(v) for v in parts.values()):
            return Frames(parts)
        pairs = {split: _pair(value, f"{where}[{split!r}]") for split, value in parts.items()}
    else:
        pairs = {"train": _pair(data, where)}
    return from_arrays(pairs, name, task=task, class_names=class_names, where=where)


def from_arrays(
    pairs: dict[str, tuple[np.ndarray, np.ndarray]],
    name: str = "arrays",
    *,
    task: str | None = None,
    class_names: tuple[str, ...] | None = None,
    where: str = "data",
) -> RawDataset:
    """``{split: (inputs [n, ...], labels [n] or [n, k])}`` as a RawDataset (classes as ids
    ``0..K-1`` of ``class_names``, -1 for a label outside them; regression float32)."""
    for split, (inputs, labels) in pairs.items():
        if inputs.dtype == object or not (
            np.issubdtype(inputs.dtype, np.number) or inputs.dtype == bool
        ):
            raise DatasetError(
                f"{where}: the {split} inputs are {inputs.dtype}, not numbers; encode them "
                "first (or give a table, whose text columns are encoded as categories)"
            )
        if inputs.ndim == 0 or len(inputs) != len(labels):
            raise DatasetError(
                f"{where}: the {split} split has {len(inputs) if inputs.ndim else 0} inputs "
                f"but {len(labels)} labels (one label per example, the first axis)"
            )
        if len(inputs) == 0:
            raise DatasetError(f"{where}: the {split} split is empty")
    every = np.concatenate([np.asarray(labels).reshape(len(labels), -1)[:, 0]
                            for _, labels in pairs.values()])  # fmt: skip
    task = task or _task_of(every)
    splits = {}
    if task == "regression":
        names = class_names or ("target",)
        for split, (inputs, labels) in pairs.items():
            if not np.issubdtype(labels.dtype, np.number):
                raise DatasetError(
                    f"{where}: regression needs number labels; the {split} labels are "
                    f"{labels.dtype}"
                )
            splits[split] = ArraySplit(inputs, labels.astype(np.float32))
        return RawDataset(name, splits, tuple(names), task="regression")
    if task != "classification":
        raise DatasetError(f"data.task: {task!r} is not classification or regression")
    names = tuple(class_names) if class_names else infer_class_names(every)
    if not names:
        raise DatasetError(f"{where}: the labels hold no class")
    for split, (inputs, labels) in pairs.items():
        if labels.ndim != 1:
            raise DatasetError(
                f"{where}: class labels are one per example, [n]; the {split} labels have "
                f"shape {labels.shape} (float labels [n, k] are regression targets)"
            )
        splits[split] = ArraySplit(inputs, label_ids(labels, names))
    return RawDataset(name, splits, names, task="classification")


def load_arrays(
    path: str | Path,
    name: str,
    *,
    task: str | None = None,
    class_names: tuple[str, ...] | None = None,
    split_paths: Mapping[str, str | None] | None = None,
) -> RawDataset:
    """A ``.npz`` file (and the files of fixed ``split_paths``, e.g. ``{"test": ...}``) as a
    RawDataset; see the module docstring for the arrays it may hold."""
    pairs = _npz_pairs(path, allow_splits=True)
    for split, other in (split_paths or {}).items():
        if other is None:
            continue
        found = _npz_pairs(other, allow_splits=False)
        if split in pairs:
            raise DatasetError(
                f"data.{split}_path: {path} already holds a {split} split; give it once"
            )
        pairs[split] = found["train"]
    return from_arrays(pairs, name, task=task, class_names=class_names, where=f"data.path {path}")


def _npz_pairs(path: str | Path, allow_splits: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    path = Path(path).expanduser()
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise DatasetError(f"data.path: {path} does not exist") from None
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DatasetError(
                f"data.path: {path} holds object arrays, which only pickle can load, and "
                "jaxtrain never unpickles; save numbers or fixed-width text (np.str_)"
            ) from None
        raise DatasetError(f"data.path: {path} is not a .npz archive ({err})") from None
    except (OSError, EOFError) as err:
        raise DatasetError(f"data.path: {path} is not a .npz archive ({err})") from None
    for inputs_key, labels_key in (("inputs", "labels"), ("x", "y")):
        if inputs_key in arrays and labels_key in arrays:
            return {"train": (arrays[inputs_key], arrays[labels_key])}
    pairs = {}
    if allow_splits:
        for suffix, split in SPLIT_NAMES.items():
            for inputs_key, labels_key in (("inputs", "labels"), ("x", "y")):
                x, y = f"{inputs_key}_{suffix}", f"{labels_key}_{suffix}"
                if x in arrays and y in arrays:
                    pairs[split] = (arrays[x], arrays[y])
    if "train" not in pairs:
        raise DatasetError(
            f"data.path: {path} holds {sorted(arrays) or 'no arrays'}; expected {NPZ_FORMS}"
        )
    return pairs


def _pair(value: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, labels) from a pair, a dict of arrays, or a random-access source."""
    if isinstance(value, tuple | list) and len(value) == 2:
        return np.asarray(value[0]), np.asarray(value[1])
    if isinstance(value, Mapping):
        for inputs_key, labels_key in PAIRS:
            if inputs_key in value and labels_key in value:
                return np.asarray(value[inputs_key]), np.asarray(value[labels_key])
        raise DatasetError(f"{where}: a dict with keys {sorted(map(str, value))}; expected {FORMS}")
    if hasattr(value, "__len__") and hasattr(value, "__getitem__"):
        return _records(value, where)
    raise DatasetError(f"{where}: a {type(value).__name__}; expected {FORMS}")


def _records(source: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Every record of a random-access source, stacked."""
    n = len(source)
    if n == 0:
        raise DatasetError(f"{where}: the source is empty")
    getitems = getattr(source, "__getitems__", None)
    records = list(getitems(list(range(n)))) if getitems else [source[i] for i in range(n)]
    first = records[0]
    if isinstance(first, Mapping):
        pair = next((p for p in PAIRS if p[0] in first and p[1] in first), None)
        if pair is None:
            raise DatasetError(
                f"{where}: its records have keys {sorted(map(str, first))}; expected "
                "inputs/labels, x/y, image/label or features/label (or (inputs, label) pairs)"
            )
        inputs = [np.asarray(r[pair[0]]) for r in records]
        labels = [np.asarray(r[pair[1]]) for r in records]
    elif isinstance(first, tuple | list) and len(first) == 2:
        inputs = [np.asarray(r[0]) for r in records]
        labels = [np.asarray(r[1]) for r in records]
    else:
        raise DatasetError(
            f"{where}: its records are {type(first).__name__}; expected dicts or "
            "(inputs, label) pairs"
        )
    return np.stack(inputs), np.stack(labels)


def _task_of(labels: np.ndarray) -> str:
    """Floats are regression targets; anything else (ints, bools, text) classes."""
    return "regression" if np.issubdtype(labels.dtype, np.floating) else "classification"


def _is_frame(value: Any) -> bool:
    pandas = sys.modules.get("pandas")  # a DataFrame means pandas is imported already
    return pandas is not None and isinstance(value, pandas.DataFrame)
