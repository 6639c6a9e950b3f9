"""Tables: CSV/Parquet/NPY files, DataFrames (and array sources) as rows of raw features
before encoding, and the categorical encoding fitted on the training split."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from jaxtrain.data.sources import DatasetError, RawDataset

TABLE_SUFFIXES = (".csv", ".parquet", ".npy")
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Table:
    """Rows of one dataset as they were read, before imputation, encoding and normalisation.

    numeric: [n, d] float64 with NaN for a missing cell (file sources), or a source's own
    array [n, ...] (uint8 images, float32 features); categorical: object [n, c] of ``str``
    with ``None`` for a missing cell; labels: object [n] raw labels (files) or the source's
    int32/float32 labels; groups: [n] group keys or None; rows: int64 [n], each row's
    position in the source (the report names rows by it); origin: object [n], the source
    split each row came from.
    """

    numeric: np.ndarray
    categorical: np.ndarray
    numeric_names: tuple[str, ...]
    categorical_names: tuple[str, ...]
    labels: np.ndarray
    groups: np.ndarray | None
    rows: np.ndarray
    origin: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def take(self, keep: np.ndarray) -> Table:
        """The rows selected by ``keep`` (bool [n] mask or int indices), in order."""
        return replace(
            self,
            numeric=self.numeric[keep],
            categorical=self.categorical[keep],
            labels=self.labels[keep],
            groups=None if self.groups is None else self.groups[keep],
            rows=self.rows[keep],
            origin=self.origin[keep],
        )

    @property
    def is_columnar(self) -> bool:
        """Numeric features are named columns [n, d] (not images)."""
        return self.numeric.ndim == 2 and len(self.numeric_names) == self.numeric.shape[1]


def table_from_raw(raw: RawDataset) -> Table:
    """Every split of an array source as one table (its features become ``feature_<i>``
    columns when they are a flat vector; images stay whole)."""
    names = [name for name in ("train", "validation", "test") if name in raw.splits]
    inputs = np.concatenate([raw.splits[name].inputs for name in names])
    labels = np.concatenate([raw.splits[name].labels for name in names])
    origin = np.concatenate([np.full(len(raw.splits[name]), name, object) for name in names])
    n = len(labels)
    columns = tuple(f"feature_{i}" for i in range(inputs.shape[1])) if inputs.ndim == 2 else ()
    return Table(inputs, np.empty((n, 0), object), columns, (), labels, None, np.arange(n), origin)


def load_table(
    path: str | os.PathLike,
    label_column: str,
    feature_columns: tuple[str, ...] | None = None,
    categorical_columns: tuple[str, ...] | None = None,
    group_column: str | None = None,
    id_column: str | None = None,
    split_column: str | None = None,
    split_paths: dict[str, str | os.PathLike | None] | None = None,
) -> Table:
    """Read a ``.csv``, ``.parquet`` or ``.npy`` (a structured array: named columns) file
    into a :class:`Table`: every row of origin ``train``, or the split ``split_column`` names
    (``train``, ``validation``, ``test``); ``split_paths`` (``{"test": path}``) are files of
    the source's own fixed splits, with the same columns.

    Features are ``feature_columns`` or every column but the label, group, id and split
    columns; categorical ones are ``categorical_columns`` or the features that are not numbers
    (a column of mostly numbers with a few text cells is an error naming the first bad cell,
    not silently a category). Empty cells (and NA markers pandas recognises) are missing.
    Errors name the key and column.
    """
    frames = {"train": _read_frame(Path(path).expanduser())}
    for split, other in (split_paths or {}).items():
        if other is not None:
            frames[split] = _read_frame(Path(other).expanduser())
    return table_from_frames(
        frames,
        label_column,
        feature_columns,
        categorical_columns,
        group_column,
        id_column,
        split_column,
        source=str(path),
    )


def table_from_frames(
    frames: dict[str, object],
    label_column: str,
    feature_columns: tuple[str, ...] | None = None,
    categorical_columns: tuple[str, ...] | None = None,
    group_column: str | None = None,
    id_column: str | None = None,
    split_column: str | None = None,
    source: str = "the DataFrame",
) -> Table:
    """pandas DataFrames by source split (``train`` at least) as one :class:`Table` (see
    :func:`load_table`); rows are numbered in the order train, validation, test."""
    import pandas as pd

    order = [split for split in SPLITS if split in frames]
    frames = {split: frames[split].rename(columns=str) for split in order}  # a copy
    columns = list(frames["train"].columns)
    for split in order:
        if list(frames[split].columns) != columns:
            missing = sorted(set(columns) ^ set(frames[split].columns))
            raise DatasetError(
                f"data.{split}_path: its columns differ from data.path's ({missing})"
            )
    frame = pd.concat([frames[s] for s in order], ignore_index=True)
    origin = np.concatenate([np.full(len(frames[s]), s, object) for s in order])
    for key, column in (
        ("label_column", label_column),
        ("group_column", group_column),
        ("id_column", id_column),
        ("split_column", split_column),
    ):
        if column is not None and column not in columns:
            raise DatasetError(f"data.{key}: no column {column!r} in {source} (columns: {columns})")
    if split_column is not None:
        origin = _split_origin(frame[split_column], source)
    reserved = {label_column, group_column, id_column, split_column} - {None}
    if feature_columns is None:
        features = [c for c in columns if c not in reserved]
    else:
        features = list(feature_columns)
        for column in features:
            if column not in columns:
                raise DatasetError(f"data.feature_columns: no column {column!r} in {source}")
            if column in reserved:
                raise DatasetError(
                    f"data.feature_columns: {column!r} is the label, group, id or split column"
                )
    if not features:
        raise DatasetError(f"data.feature_columns: {source} has no feature columns")
    if categorical_columns is None:
        categorical = []
        for column in features:
            if _is_numeric(frame[column]):
                continue
            bad = _not_numbers(frame[column])
            if frame[column].notna().sum() - len(bad) > len(bad):  # mostly numbers: a bad cell
                raise DatasetError(
                    f"data.path: column {column!r} of {source} holds numbers but row "
                    f"{bad.index[0]} is {bad.iloc[0]!r} ({len(bad)} such cell(s)); fix the "
                    "file, or list the column in data.categorical_columns"
                )
            categorical.append(column)
    else:
        categorical = list(categorical_columns)
        for column in categorical:
            if column not in features:
                raise DatasetError(
                    f"data.categorical_columns: {column!r} is not a feature column ({features})"
                )
    numeric = [c for c in features if c not in categorical]
    for column in numeric:
        if not _is_numeric(frame[column]):
            bad = _not_numbers(frame[column])
            raise DatasetError(
                f"data.categorical_columns: column {column!r} holds text ({bad.iloc[0]!r} in "
                f"row {bad.index[0]}); list it in data.categorical_columns or fix the file"
            )
    n = len(frame)
    values = frame[numeric].to_numpy(np.float64, na_value=np.nan) if numeric else np.zeros((n, 0))
    return Table(
        numeric=values,
        categorical=_text_cells(frame, categorical),
        numeric_names=tuple(numeric),
        categorical_names=tuple(categorical),
        labels=frame[label_column].to_numpy(object, na_value=None),
        groups=None if group_column is None else frame[group_column].astype(str).to_numpy(),
        rows=np.arange(n),
        origin=origin,
    )


def _split_origin(column, source: str) -> np.ndarray:
    """Each row's split from ``data.split_column`` (``val`` is read as validation)."""
    names = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
    cells = [str(v).strip().lower() if v is not None else "" for v in column.tolist()]
    bad = [(i, c) for i, c in enumerate(cells) if c not in names]
    if bad:
        row, value = bad[0]
        raise DatasetError(
            f"data.split_column: row {row} of {source} says {value!r} ({len(bad)} such "
            "row(s)); expected train, validation or test"
        )
    origin = np.array([names[c] for c in cells], object)
    if not (origin == "train").any():
        raise DatasetError(f"data.split_column: no row of {source} is in the train split")
    return origin


def _read_frame(path: Path):
    import pandas as pd  # only file sources need pandas

    try:
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return pd.read_csv(path, skipinitialspace=True)
        if suffix == ".npy":
            return _npy_frame(path)
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise DatasetError(f"data.path: {path} does not exist") from None
    except DatasetError:
        raise
    except Exception as err:  # noqa: BLE001 - pandas/pyarrow raise many types; all are fatal
        raise DatasetError(
            f"data.path: {path} cannot be read ({type(err).__name__}: {err})"
        ) from None


def _npy_frame(path: Path):
    """A structured ``.npy`` array (named fields: the columns) as a DataFrame, no pickle."""
    import pandas as pd

    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DatasetError(
                f"data.path: {path} holds an object array, which only pickle can load, and "
                "jaxtrain never unpickles; save numbers or fixed-width text"
            ) from None
        raise
    if array.dtype.names is None:
        raise DatasetError(
            f"data.path: {path} is a plain {array.dtype} array of shape {array.shape}, without "
            "column names or labels: save a structured array (named columns, one of them the "
            "label_column), or inputs and labels together with numpy.savez (a .npz data.path)"
        )
    return pd.DataFrame({name: array[name] for name in array.dtype.names})


def _is_numeric(series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _not_numbers(series):
    import pandas as pd

    return series[pd.to_numeric(series, errors="coerce").isna() & series.notna()]


def _text_cells(frame, columns: list[str]) -> np.ndarray:
    cells = np.empty((len(frame), len(columns)), object)
    for j, column in enumerate(columns):
        for i, value in enumerate(frame[column].tolist()):
            missing = value is None or (isinstance(value, float) and np.isnan(value))
            cells[i, j] = None if missing or str(value).strip() == "" else str(value)
    return cells


# --- categorical encoding: categories fitted on the training split -------------------------


def fit_categories(table: Table) -> dict[str, list[str]]:
    """Per categorical column, its categories in the training split, sorted (JSON)."""
    return {
        name: sorted({v for v in table.categorical[:, j] if v is not None})
        for j, name in enumerate(table.categorical_names)
    }


def encode(
    table: Table, categories: dict[str, list[str]], encoding: str
) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """Numeric features then the encoded categorical ones.

    Returns (features [n, d'] float64 (without categorical columns: the source array
    unchanged, images included), their names, unknown: bool [n, c], cells holding a category
    outside ``categories``). ``one_hot`` adds one 0/1 column per category
    (``column=category``), an unknown category being all zeros; ``ordinal`` one column of
    category indices, an unknown category being -1.
    """
    unknown = np.zeros(table.categorical.shape, bool)
    if not table.categorical_names:
        return table.numeric, table.numeric_names, unknown
    blocks, names = [table.numeric.astype(np.float64)], list(table.numeric_names)
    for j, column in enumerate(table.categorical_names):
        known = categories[column]
        index = {c: k for k, c in enumerate(known)}
        codes = np.array([index.get(v, -1) for v in table.categorical[:, j]], np.int64)
        unknown[:, j] = codes < 0
        if encoding == "ordinal":
            blocks.append(codes[:, None].astype(np.float64))
            names.append(column)
        else:
            blocks.append((codes[:, None] == np.arange(len(known))[None, :]).astype(np.float64))
            names.extend(f"{column}={c}" for c in known)
    return np.concatenate(blocks, axis=1), tuple(names), unknown


def encode_splits(
    parts: dict[str, Table], categories: dict, encoding: str, unknown_categories: str
) -> tuple[dict[str, Table], dict[str, np.ndarray], tuple[str, ...], dict]:
    """:func:`encode` every split; a category unseen in training is ``ignore``d, ``drop``ped
    (its rows leave their split) or an ``error``. Returns the (possibly fewer) rows, their
    features, the feature names and the report record."""
    encoded, names, found, columns = {}, (), 0, {}
    for name, part in parts.items():
        features, names, unknown = encode(part, categories, encoding)
        rows = unknown.any(axis=1)
        found += int(rows.sum())
        for j, column in enumerate(part.categorical_names):
            if unknown[:, j].any():
                columns[f"{name}.{column}"] = int(unknown[:, j].sum())
                if unknown_categories == "error":
                    value = part.categorical[np.flatnonzero(unknown[:, j])[0], j]
                    raise DatasetError(
                        f"data.unknown_categories: column {column!r}: category {value!r} in "
                        f"the {name} split is not in the training split; set "
                        "data.unknown_categories to ignore or drop"
                    )
        if unknown_categories == "drop" and rows.any():
            parts = {**parts, name: part.take(~rows)}
            features = features[~rows]
        encoded[name] = features
    action = unknown_categories
    record = {
        "rule": "unknown_categories",
        "action": action,
        "found": found,
        "columns": columns,
        "rows_in": sum(len(p) for p in parts.values()) + (found if action == "drop" else 0),
        "rows_out": sum(len(p) for p in parts.values()),
    }
    return parts, encoded, names, record


# --- row identity: the bytes of each row's raw features ------------------------------------


def feature_hashes(table: Table, decimals: int | None = None) -> np.ndarray:
    """One 16-byte BLAKE2 digest per row of its raw features (numbers' bytes, then the text
    cells), labels, groups and ids left out: equal digests mean equal examples.

    With ``decimals``, numbers are rounded to that many decimals and text is stripped and
    lower-cased first, so rows equal up to rounding and spelling share a digest.
    """
    numeric = table.numeric.reshape(len(table), -1)
    if decimals is not None:
        numeric = np.round(numeric.astype(np.float64), decimals)
    if np.issubdtype(numeric.dtype, np.floating):  # one byte pattern for 0.0/-0.0 and NaN
        numeric = np.where(np.isnan(numeric), np.nan, numeric + 0.0)
    numeric = np.ascontiguousarray(numeric)
    digests = np.empty(len(table), object)
    for i in range(len(table)):
        cells = table.categorical[i]
        if decimals is not None:
            cells = [None if c is None else c.strip().lower() for c in cells]
        text = "\x1f".join("\x00" if c is None else c for c in cells).encode()
        digests[i] = hashlib.blake2b(numeric[i].tobytes() + b"\x1e" + text, digest_size=16).digest()
    return digests
