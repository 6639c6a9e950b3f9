"""New rows through a finished run's fitted preprocessing (``jaxtrain eval RUN --data PATH``).

A table run stores everything it fitted on its training split in ``data_stats.json``: the
class names, the imputation values and indicator columns, the categories of each
categorical column, the input normaliser and (regression) the target scaler. A new file with
the same columns is read as the run read its own (same label, feature, categorical, group and
id columns), then imputed, encoded and normalised with those stored statistics, never
refitted: a row of the training file comes out exactly as it went into training. The data
preparation rules (duplicates, ranges, label errors) are not applied: every row is scored.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from jaxtrain.config import Config
from jaxtrain.data import ArraySplit, DatasetError
from jaxtrain.data.clean import impute
from jaxtrain.data.dataset import fitted_stats, is_table_path
from jaxtrain.data.labels import MISSING_LABEL, label_ids, regression_targets
from jaxtrain.data.tabular import encode, load_table


def score_split(config: Config, stats: dict, path: str | Path) -> tuple[ArraySplit, bool]:
    """``(split, labelled)``: the rows of ``path`` as the run's model sees them, in file
    order. Without the label column the labels are placeholders (0) and ``labelled`` is
    False (predictions only). Raises DatasetError (naming the file and the column) when the
    file does not have the run's features, or a label is outside the run's classes."""
    data = config.data
    if not is_table_path(data.path):
        raise DatasetError(
            f"--data: the run was trained on {data.path or data.name}, not a .csv/.parquet "
            "table; --data scores new rows of a table run"
        )
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"--data: {path} is not a file")
    if not is_table_path(str(path)):
        raise DatasetError(f"--data: {path}: expected a .csv or .parquet file like {data.path}")
    prepare = stats.get("prepare") or {}
    table, labelled = _read(config, path)
    task = data.task or "classification"
    if labelled and task == "regression":
        targets = regression_targets(table.labels)
        if not np.all(np.isfinite(targets)):
            row = int(table.rows[np.flatnonzero(~np.isfinite(targets))[0]])
            raise DatasetError(f"--data: {path}: column {data.label_column!r}: row {row} has no "
                               "numeric target")  # fmt: skip
        labels = targets
    elif labelled:
        names = tuple(prepare.get("class_names") or ())
        labels = label_ids(table.labels, names)
        bad = np.flatnonzero(labels == MISSING_LABEL)
        if len(bad):
            value = table.labels[bad[0]]
            raise DatasetError(
                f"--data: {path}: column {data.label_column!r}: row {int(table.rows[bad[0]])} "
                f"holds {value!r}, not one of the run's classes {list(names)} ({len(bad)} such "
                "row(s)); remove them or score without the label column"
            )
    else:
        labels = np.zeros(len(table), np.float32 if task == "regression" else np.int32)
    table = impute(table, prepare.get("imputation") or {"values": {}, "indicators": []})
    features, names, unknown = encode(table, prepare.get("categories") or {}, data.encoding)
    expected = tuple(prepare.get("feature_names") or names)
    if names != expected:
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in expected]
        raise DatasetError(
            f"--data: {path}: its features do not match the run's (missing {missing[:5]}, "
            f"extra {extra[:5]}); the file needs the columns the run was trained on"
        )
    if unknown.any() and data.unknown_categories == "error":
        j = int(np.flatnonzero(unknown.any(axis=0))[0])
        raise DatasetError(
            f"--data: {path}: column {table.categorical_names[j]!r} holds a category the "
            "training split did not have (data.unknown_categories: error)"
        )
    normalizer, target_normalizer = fitted_stats(stats)
    inputs = normalizer(features)
    if task == "regression":
        scaled = target_normalizer(labels.reshape(len(labels), -1).astype(np.float64))
        labels = scaled.reshape(labels.shape).astype(np.float32)
    else:
        labels = labels.astype(np.int32)
    return ArraySplit(inputs, labels), labelled


def _read(config: Config, path: Path):
    """The file as the run read its own, and whether it has the label column."""
    import pandas as pd

    data = config.data
    frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    columns = [str(c) for c in frame.columns]
    labelled = data.label_column in columns
    group = data.group_column if data.group_column in columns else None
    identity = data.id_column if data.id_column in columns else None
    features = data.feature_columns
    if features is None:  # the run's default: every column but the label, group and id ones
        reserved = {data.label_column, data.group_column, data.id_column}
        features = tuple(c for c in columns if c not in reserved)
    label = data.label_column
    if labelled:
        source = path
    else:  # a placeholder label column, so the file reads exactly as the run's own did
        frame[label] = None
        folder = tempfile.mkdtemp(prefix="jaxtrain-score-")
        source = Path(folder) / "rows.parquet"
        frame.to_parquet(source)
    try:
        table = load_table(source, label, features, data.categorical_columns, group, identity)
    finally:
        if not labelled:
            Path(source).unlink(missing_ok=True)
            Path(source).parent.rmdir()
    return replace(table, origin=np.full(len(table), "data", object)), labelled
