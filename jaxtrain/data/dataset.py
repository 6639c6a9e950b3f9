"""From a data config to cleaned, normalised train/validation/test splits in memory.

Every source takes the same path: tables (CSV, Parquet, NPY files, DataFrames) through
:func:`prepare_table` directly; arrays (TFDS, ``.npz`` files, datasets registered in Python,
arrays given to :func:`jaxtrain.fit`) as a table of their rows; text as byte windows.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace

import numpy as np

from jaxtrain import registry
from jaxtrain.config import DataConfig
from jaxtrain.config.prepare import PrepareConfig
from jaxtrain.config.schema import SUPPORTED_FORMATS, path_kind
from jaxtrain.data.arrays import Frames, as_source, load_arrays
from jaxtrain.data.clean import (
    WARN_DROP_SHARE,
    Rule,
    apply_rules,
    check_drop_share,
    conflicts,
    describe_drops,
    drop_summary,
    exact_duplicates,
    fit_imputer,
    impute,
    invalid_values,
    missing_values,
    near_duplicates,
)
from jaxtrain.data.corpus import is_corpus_path, load_corpus
from jaxtrain.data.data_report import DataReport
from jaxtrain.data.label_errors import training_split_suspects
from jaxtrain.data.labels import (
    MISSING_LABEL,
    balanced_class_weights,
    class_balance,
    infer_class_names,
    label_ids,
    regression_targets,
)
from jaxtrain.data.leakage import check_leakage, find_leakage
from jaxtrain.data.prepare import Normalizer, fit_normalizer
from jaxtrain.data.sources import ArraySplit, DatasetError, RawDataset, load_text_file, load_tfds
from jaxtrain.data.split import grouped_split, random_split, stratified_split
from jaxtrain.data.stream_prepare import prepare_streamed, should_stream
from jaxtrain.data.tabular import (
    TABLE_SUFFIXES,
    Table,
    encode_splits,
    feature_hashes,
    fit_categories,
    load_table,
    table_from_frames,
    table_from_raw,
)

SPLITS = ("train", "validation", "test")
BYTE_VOCABULARY = 256  # text is modelled as UTF-8 bytes: no tokenizer to download


@dataclass(frozen=True)
class PreparedData:
    """The three splits plus what produced them.

    ``task`` is ``classification`` (float32 inputs, int32 labels), ``regression`` (float32
    inputs, float32 targets standardised by ``target_normalizer``) or ``language_model``
    (int32 byte windows [n, T] as inputs, the next bytes [n, T] as labels). ``split_origin``
    tells, per split, whether it is the source's own split or carved from its training split.
    ``report`` says what preparation changed and found; ``class_weights`` f32[K] (with
    ``data.prepare.class_weights: balanced``) weighs class k's examples in the loss (per
    example: ``class_weights[labels]``); ``fitted`` holds the other statistics fitted on the
    training split (class names, categories, imputation values, label suspects); ``rows``
    maps each split to the source row of each of its examples (in the order train,
    validation, test of the source), for joining other per-row data such as a group.
    """

    name: str
    splits: dict[str, ArraySplit]
    class_names: tuple[str, ...]
    normalizer: Normalizer
    split_origin: dict[str, str]
    task: str = "classification"
    target_normalizer: Normalizer | None = None
    report: DataReport | None = None
    class_weights: np.ndarray | None = None
    feature_names: tuple[str, ...] = ()
    fitted: dict = field(default_factory=dict)
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # source row of each example

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
        """Everything fitted on the training split, as JSON: the ``inputs`` and ``targets``
        normalisers and the ``prepare`` statistics (see :func:`prepare_data`'s ``stats``)."""
        targets = self.target_normalizer.to_dict() if self.target_normalizer else None
        stats = {"inputs": self.normalizer.to_dict(), "targets": targets}
        if self.fitted:
            stats["prepare"] = self.fitted
        return stats


def fitted_stats(stats: dict | None) -> tuple[Normalizer | None, Normalizer | None]:
    """(inputs, targets) normalisers from :meth:`PreparedData.stats` JSON (or the older
    inputs-only form)."""
    if not stats:
        return None, None
    if "inputs" not in stats:
        return Normalizer.from_dict(stats), None
    targets = stats.get("targets")
    return Normalizer.from_dict(stats["inputs"]), targets and Normalizer.from_dict(targets)


def is_table_path(path: str | None) -> bool:
    return path is not None and path.lower().endswith(TABLE_SUFFIXES)


def load_source(config: DataConfig, stats: dict | None = None) -> RawDataset | Frames:
    """The raw dataset ``config`` names: a ``.npz`` or text file at ``path``, a registered
    (or import-path, or entry-point) dataset's loader, else a TFDS dataset. ``stats``: what a
    run stored (its class names are kept)."""
    names = ((stats or {}).get("prepare") or {}).get("class_names") or config.class_names
    if is_corpus_path(config.path):  # a directory or glob of text files
        return load_corpus(config.path)
    kind = path_kind(config.path)
    if kind == "arrays":
        splits = {"validation": config.validation_path, "test": config.test_path}
        return load_arrays(
            config.path, config.name, task=config.task, class_names=names, split_paths=splits
        )
    if config.path is not None:
        try:
            return load_text_file(config.path)
        except DatasetError as err:
            raise DatasetError(f"{err}. {SUPPORTED_FORMATS}") from None
    family = registry.find("dataset", config.name)
    if family is not None:
        return _load_registered(family, config, names)
    return load_tfds(config.name, config.data_dir)


def _load_registered(family, config: DataConfig, class_names) -> RawDataset | Frames:
    """A registered dataset's loader, called with the data config when it takes one."""
    loader = family.spec.loader
    try:
        data = loader(config) if registry.parameters(loader) else loader()
    except DatasetError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's loader: any failure is named
        raise DatasetError(
            f"data.name: the loader of {config.name!r} failed ({type(err).__name__}: {err})"
        ) from None
    where = f"data.name: {config.name}"
    return as_source(data, config.name, task=config.task, class_names=class_names, where=where)


def prepare_data(
    config: DataConfig,
    normalizer: Normalizer | None = None,
    stats: dict | None = None,
    *,
    streamable: bool = False,
) -> PreparedData:
    """Load the data, clean it, make the held-out splits, fit statistics on train only.

    A source's own ``validation``/``test`` splits are used as they are; whichever is missing is
    carved from its ``train`` split with ``config.seed``: stratified by label for classes, at
    random for regression, by group with a ``group_column``, and for text by whole documents
    (shuffled, then cut by size), so no document sits in two splits. Tables and arrays go
    through ``config.prepare`` (see :func:`prepare_table`); text through
    :func:`jaxtrain.data.text_prepare.prepare_text` (passage dedup, leakage check).
    Statistics stored with a run (``stats``, or just the inputs' ``normalizer``) are applied
    instead of refitting: evaluation and resume reuse them. With ``streamable`` (the caller
    can train on streamed splits) ``data.stream`` may choose the streaming path
    (:mod:`jaxtrain.data.stream_prepare`); otherwise the data is held in memory.
    """
    if should_stream(config, streamable):  # read lazily: jaxtrain/data/stream_prepare.py
        return prepare_streamed(config, stats)
    stored = (stats or {}).get("prepare") or {}
    if is_table_path(config.path):
        table, class_names, task, written = _read_table(config, stored)
        return prepare_table(
            table, class_names, task, config, config.path, normalizer, stats, written
        )
    raw = load_source(config, stats)
    if isinstance(raw, Frames):
        table, class_names, task, written = _read_table(config, stored, raw.frames)
        source = f"dataset {config.name}"
        return prepare_table(table, class_names, task, config, source, normalizer, stats, written)
    if config.label_column is not None:
        raise DatasetError(
            f"data.label_column: {config.name} gives arrays, not a table; remove the table keys"
        )
    if "train" not in raw.splits:
        raise DatasetError(f"data.name: {config.name} has no 'train' split ({sorted(raw.splits)})")
    if raw.task != "language_model":
        registered = config.path is None and registry.find("dataset", config.name) is not None
        source = config.path or (f"dataset {config.name}" if registered else f"tfds:{config.name}")
        table = table_from_raw(raw)
        return prepare_table(table, raw.class_names, raw.task, config, source, normalizer, stats)
    if config.classes is not None or config.train_examples_per_class is not None:
        raise DatasetError(f"data.classes: needs class labels ({raw.task} data)")
    from jaxtrain.data.text_prepare import prepare_text  # dedup, leakage, report, windows

    return prepare_text(config, raw)


def prepare_table(
    table: Table,
    class_names: tuple[str, ...],
    task: str,
    config: DataConfig,
    source: str,
    normalizer: Normalizer | None = None,
    stats: dict | None = None,
    raw_labels: dict[int, object] | None = None,
) -> PreparedData:
    """Clean ``table``, split it, then impute, encode, find label errors and normalise with
    statistics fitted on the training split (or taken from ``stats``), and report each step.

    labels in ``table``: int class ids (-1: missing or unknown) or float targets;
    ``raw_labels``: source row -> label as read, for the invalid ones (named in errors).
    """
    prepare, stored = config.prepare, (stats or {}).get("prepare") or {}
    stored_inputs, stored_targets = fitted_stats(stats)
    normalizer = normalizer or stored_inputs
    if task != "classification":
        for key, value in (
            ("label_errors.action", prepare.label_errors.action),
            ("class_weights", prepare.class_weights),
        ):
            if value not in ("off", "none"):
                raise DatasetError(f"data.prepare.{key}: {value} needs class labels ({task})")
    rows_in, carve = len(table), _carve(config, set(table.origin))
    rules = cleaning_rules(prepare, task, config.label_column or "label", raw_labels)
    table, steps = apply_rules(table, rules)
    method = _split_method(config, task)
    parts = {name: table.take(rows) for name, rows in split_rows(table, carve, method, config)}
    if config.classes is not None or config.train_examples_per_class is not None:
        before = sum(len(p) for p in parts.values())
        parts, class_names = select_classes(parts, class_names, task, config)
        after = sum(len(p) for p in parts.values())
        steps.append(
            {
                "rule": "select_classes",
                "action": f"classes {list(class_names)}, "
                f"{config.train_examples_per_class or 'all'} training examples per class",
                "found": before - after,
                "rows_in": before,
                "rows_out": after,
            }
        )
    _check_not_empty(parts, config)
    if task == "classification":
        _check_every_class_trains(parts["train"].labels, class_names, source)
    imputation = stored.get("imputation") or fit_imputer(
        parts["train"], prepare.missing, prepare.fill_value, prepare.add_indicator
    )
    parts = {name: impute(part, imputation) for name, part in parts.items()}
    categories = stored.get("categories") or fit_categories(parts["train"])
    parts, encoded, names, record = encode_splits(
        parts, categories, config.encoding, config.unknown_categories
    )
    steps.append(record)
    suspects, evidence = [], None
    if task == "classification" and prepare.label_errors.action != "off":
        train = parts["train"]
        suspects, record, evidence = training_split_suspects(
            train.rows,
            encoded["train"],
            train.labels,
            class_names,
            prepare.label_errors,
            config.seed,
            stored.get("label_suspects"),
        )
        steps.append(record)
        if prepare.label_errors.action == "drop":
            keep = ~np.isin(parts["train"].rows, [s["row"] for s in suspects])
            parts["train"], encoded["train"] = parts["train"].take(keep), encoded["train"][keep]
    dropped = drop_summary(steps)
    check_drop_share(dropped, prepare.max_drop_fraction)
    if dropped["share"] >= WARN_DROP_SHARE:
        print(
            f"jaxtrain: warning: preparing {source} dropped {describe_drops(dropped)}; see "
            f"data_report.md (cap: data.prepare.max_drop_fraction={prepare.max_drop_fraction:g})",
            file=sys.stderr,
        )
    dropped["max_drop_fraction"] = prepare.max_drop_fraction
    _check_not_empty(parts, config)
    leakage = {"action": prepare.leakage, "found": 0, "pairs": {}}
    if prepare.leakage != "off":
        hashes = {name: feature_hashes(part) for name, part in parts.items()}
        leakage.update(find_leakage(hashes, {name: p.rows for name, p in parts.items()}))
        check_leakage(leakage, prepare.leakage)
    if normalizer is None:
        normalizer = fit_normalizer(encoded["train"], config.normalize)
    targets, weights, balance = None, None, {}
    if task == "regression":
        targets = stored_targets or fit_normalizer(_columns(parts["train"].labels), "standard")
    else:
        balance = {n: class_balance(p.labels, class_names) for n, p in parts.items()}
        if prepare.class_weights == "balanced":
            weights = balanced_class_weights(parts["train"].labels, len(class_names))
    splits = {
        name: ArraySplit(
            normalizer(encoded[name]),
            parts[name].labels.astype(np.int32)
            if targets is None
            else _uncolumns(targets(_columns(parts[name].labels)), parts[name].labels),
        )
        for name in SPLITS
    }
    fitted = {
        "class_names": list(class_names),
        "feature_names": list(names),
        "categories": categories,
        "imputation": imputation,
    }
    if prepare.label_errors.action != "off" and task == "classification":
        fitted["label_suspects"] = suspects
    if weights is not None:
        fitted["class_weights"] = weights.tolist()
    report = DataReport(
        name=config.name,
        source=source,
        task=task,
        rows_in=rows_in,
        splits={name: len(split) for name, split in splits.items()},
        split_method=method,
        steps=steps,
        missing={
            "action": prepare.missing,
            "columns": next(s["columns"] for s in steps if s["rule"] == "missing"),
            "values": imputation["values"],
            "indicators": imputation["indicators"],
        },
        label_suspects=suspects,
        class_balance=balance,
        class_weights=None
        if weights is None
        else {c: float(w) for c, w in zip(class_names, weights, strict=True)},
        leakage=leakage,
        features=list(names),
        dropped=dropped,
        label_evidence=evidence,
    )
    return PreparedData(
        config.name,
        splits,
        tuple(class_names),
        normalizer,
        _origin(carve),
        task,
        targets,
        report,
        weights,
        tuple(names),
        fitted,
        {name: np.asarray(parts[name].rows) for name in SPLITS},
    )


def select_classes(
    parts: dict[str, Table], class_names: tuple[str, ...], task: str, config: DataConfig
) -> tuple[dict[str, Table], tuple[str, ...]]:
    """Keep ``config.classes`` (label ids or names) in every split, relabelled ``0..k-1`` in
    the order given, and ``config.train_examples_per_class`` training examples per class
    (drawn with ``config.seed``, in source order). Returns the parts and the kept names."""
    if task != "classification":
        raise DatasetError(f"data.classes: needs class labels ({task} data)")
    kept = list(range(len(class_names))) if config.classes is None else []
    for entry in config.classes or ():
        if isinstance(entry, str):
            if entry not in class_names:
                raise DatasetError(
                    f"data.classes: {entry!r} is not a class of {config.name} "
                    f"({', '.join(class_names)})"
                )
            entry = class_names.index(entry)
        if not 0 <= entry < len(class_names):
            raise DatasetError(
                f"data.classes: {entry} is not a class id of {config.name} "
                f"(0..{len(class_names) - 1})"
            )
        if entry in kept:
            raise DatasetError(f"data.classes: class {entry} is listed twice")
        kept.append(entry)
    relabel = np.full(len(class_names), -1, np.int64)
    relabel[kept] = np.arange(len(kept))
    selected = {}
    for name, part in parts.items():
        labels = np.asarray(part.labels, np.int64)
        mask = np.isin(labels, kept)
        part = part.take(mask)
        selected[name] = replace(part, labels=relabel[np.asarray(part.labels, np.int64)])
    per_class = config.train_examples_per_class
    if per_class is not None:
        train, rng = selected["train"], np.random.default_rng(config.seed)
        chosen = []
        for k in range(len(kept)):
            rows = np.flatnonzero(train.labels == k)
            if len(rows) < per_class:
                raise DatasetError(
                    f"data.train_examples_per_class: {per_class}, but class "
                    f"{class_names[kept[k]]!r} has only {len(rows)} training examples"
                )
            chosen.append(rng.choice(rows, per_class, replace=False))
        selected["train"] = train.take(np.sort(np.concatenate(chosen)))
    return selected, tuple(class_names[k] for k in kept)


def cleaning_rules(
    prepare: PrepareConfig,
    task: str,
    label_column: str = "label",
    raw_labels: dict[int, object] | None = None,
) -> list[Rule]:
    """The row rules of ``data.prepare``, in the order they run (before the split)."""
    near = prepare.near_duplicates
    invalid = (prepare.invalid, prepare.ranges, prepare.categories, task, label_column, raw_labels)
    return [
        invalid_values(*invalid),
        missing_values(prepare.missing),
        exact_duplicates(prepare.duplicates),
        conflicts(prepare.conflicts),
        near_duplicates(near.action, near.decimals, near.max_distance),
    ]


def split_rows(
    table: Table, carve: dict[str, float], method: str, config: DataConfig
) -> list[tuple[str, np.ndarray]]:
    """Row positions of each split: a source's own splits as they are, the ``carve``d ones
    taken from its ``train`` rows by ``method`` (stratified, random or grouped)."""
    source_train = np.flatnonzero(table.origin == "train")
    if method == "stratified":
        parts = stratified_split(table.labels[source_train], carve, seed=config.seed)
    elif method == "grouped":
        parts = grouped_split(table.groups[source_train], carve, seed=config.seed)
    else:
        parts = random_split(len(source_train), carve, seed=config.seed)
    rows = {name: source_train[indices] for name, indices in parts.items()}
    for name in SPLITS:
        if name not in rows:
            rows[name] = np.flatnonzero(table.origin == name)
    return [(name, rows[name]) for name in SPLITS]


def _read_table(
    config: DataConfig, stored: dict, frames: dict | None = None
) -> tuple[Table, tuple[str, ...], str, dict[int, object]]:
    """The table at ``config.path`` (with its fixed split files), or ``frames`` (DataFrames
    by split, from a registered dataset), and its labels as ids or targets."""
    if config.label_column is None:
        raise DatasetError(f"data.label_column: required for the table of {config.name}")
    columns = (
        config.label_column,
        config.feature_columns,
        config.categorical_columns,
        config.group_column,
        config.id_column,
        config.split_column,
    )
    if frames is None:
        splits = {"validation": config.validation_path, "test": config.test_path}
        table = load_table(config.path, *columns, split_paths=splits)
    else:
        table = table_from_frames(frames, *columns, source=f"dataset {config.name}")
    task = config.task or "classification"
    if task == "regression":
        targets = regression_targets(table.labels)
        written = _written_labels(table, np.isfinite(targets))
        return replace(table, labels=targets), (config.label_column,), task, written
    names = stored.get("class_names") or config.class_names or infer_class_names(table.labels)
    if not names:
        raise DatasetError(f"data.label_column: {config.label_column!r} holds no labels")
    ids = label_ids(table.labels, tuple(names))
    written = _written_labels(table, ids != MISSING_LABEL)
    return replace(table, labels=ids), tuple(names), task, written


def _written_labels(table: Table, valid: np.ndarray) -> dict[int, object]:
    """Source row -> the label as read, for the rows whose label is invalid (for errors)."""
    return {int(table.rows[i]): table.labels[i] for i in np.flatnonzero(~valid)}


def _split_method(config: DataConfig, task: str) -> str:
    if config.split == "auto":
        if config.group_column is not None:
            return "grouped"
        return "stratified" if task == "classification" else "random"
    if config.split == "stratified" and task != "classification":
        raise DatasetError(f"data.split: stratified needs class labels ({task}); use random")
    return config.split


def _carve(config: DataConfig, present: set[str]) -> dict[str, float]:
    """The held-out splits the source lacks, with the fractions to carve from its train."""
    return {
        name: fraction
        for name, fraction in (
            ("validation", config.validation_fraction),
            ("test", config.test_fraction),
        )
        if name not in present
    }


def _origin(carve: dict[str, float]) -> dict[str, str]:
    return {name: ("carved from train" if name in carve else "source") for name in SPLITS}


def _check_every_class_trains(labels: np.ndarray, class_names, source: str) -> None:
    """A class with no training example cannot be learned: an error, not a silent zero."""
    present = set(np.asarray(labels[labels >= 0], np.int64).tolist())
    missing = [name for k, name in enumerate(class_names) if k not in present]
    if missing:
        raise DatasetError(
            f"data: class {missing[0]!r} of {source} has no example in the training split "
            f"(after cleaning and splitting; {len(missing)} class(es) missing); add data, "
            "change data.seed or the split fractions, or drop the class from data.class_names"
        )


def _check_not_empty(splits: dict, config: DataConfig) -> None:
    for name in SPLITS:
        if len(splits.get(name, ())) == 0:
            raise DatasetError(
                f"data: the {name} split of {config.name} is empty; "
                "raise data.validation_fraction / data.test_fraction or use more data"
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
