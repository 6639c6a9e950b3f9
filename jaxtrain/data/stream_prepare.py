"""Preparing a streamed TFDS dataset: splits of record keys, statistics by one pass.

When the data is streamed (``data.stream``, see :func:`should_stream`) nothing is held in
memory but record keys and labels. The splits are the source's own, plus the ones it lacks
carved at random (seeded) from its training split; then one pass over every split
(:func:`jaxtrain.data.stream_stats.pass_over`) yields the labels, a hash per example (exact
duplicates, conflicts and leakage between splits, as the in-memory rules report them) and,
on the training split only, the moments that fit normalisation and mean imputation.

Preparation rules that need every example in memory at once (dropping rows, near
duplicates, label errors, class weights, median imputation) are refused with the key to
change, never skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxtrain import registry
from jaxtrain.config import DataConfig
from jaxtrain.data.data_report import DataReport
from jaxtrain.data.labels import class_balance
from jaxtrain.data.prepare import Normalizer
from jaxtrain.data.sources import DatasetError, _builder, _resolve_dir
from jaxtrain.data.split import random_split
from jaxtrain.data.stream_stats import normalizer_from_moments, pass_over
from jaxtrain.data.streaming import HostTransform, StreamSplit, TfdsReader

SPLITS = ("train", "validation", "test")
MB = 2**20


def source_bytes(config: DataConfig) -> int:
    """Bytes on disk of what ``config`` reads (TFDS: the prepared dataset; a corpus: its
    files), for ``data.stream: auto``."""
    from jaxtrain.data.corpus import corpus_files, is_corpus_path

    if config.path is not None:
        if is_corpus_path(config.path):
            return sum(size for _, size in corpus_files(config.path))
        return Path(config.path).expanduser().stat().st_size
    builder = _builder(config.name, _resolve_dir(config.data_dir))
    return int(builder.info.dataset_size or 0)


def should_stream(config: DataConfig, allowed: bool) -> bool:
    """Whether ``config``'s data is streamed: ``data.stream`` true, or ``auto`` and larger
    than ``data.stream_above_mb`` on disk. ``allowed`` is False for what needs the data in
    memory (fused epochs, sweeps, federated runs, learning curves): ``auto`` is then in
    memory and ``true`` an error (the verbs refuse it earlier, when the config is read)."""
    from jaxtrain.data.tabular import TABLE_SUFFIXES

    if config.stream is False:
        return False
    if config.path is not None and config.path.lower().endswith(TABLE_SUFFIXES):
        return False
    if config.path is None and registry.find("dataset", config.name) is not None:
        if config.stream is True:  # a registered loader (or jaxtrain.fit's arrays) is in memory
            raise DatasetError(
                f"data.stream: true, but dataset {config.name!r} is registered in this process "
                "and held in memory; set data.stream: auto or false"
            )
        return False
    if config.stream is True:
        if not allowed:
            raise DatasetError(
                "data.stream: true, but this run needs the data in memory (fused epochs, "
                "sweeps, federated runs and learning curves do); set data.stream: auto or false"
            )
        return True
    return allowed and source_bytes(config) > config.stream_above_mb * MB


def check_streamable_config(config: DataConfig) -> None:
    """Refuse, naming the key, what a streamed run cannot honour."""
    prepare = config.prepare
    refused = [
        ("invalid", prepare.invalid, ("error",)),
        ("missing", prepare.missing, ("error", "mean", "constant")),
        ("duplicates", prepare.duplicates, ("off", "report")),
        ("conflicts", prepare.conflicts, ("off", "report")),
        ("near_duplicates.action", prepare.near_duplicates.action, ("off",)),
        ("label_errors.action", prepare.label_errors.action, ("off",)),
        ("class_weights", prepare.class_weights, ("none",)),
        ("add_indicator", prepare.add_indicator, (False,)),
    ]
    for key, value, allowed in refused:
        if value not in allowed:
            raise DatasetError(
                f"data.prepare.{key}: {value} needs every example in memory, but the data is "
                f"streamed; use one of {', '.join(map(str, allowed))} or set data.stream: false"
            )
    if config.classes is not None or config.train_examples_per_class is not None:
        raise DatasetError(
            "data.classes / data.train_examples_per_class select examples in memory, but the "
            "data is streamed; set data.stream: false"
        )
    if config.split not in ("auto", "random"):
        raise DatasetError(
            f"data.split: {config.split} needs every label before the split, but the data is "
            "streamed (carved at random, seeded); use split: auto or random, or data.stream: false"
        )


def prepare_streamed_tfds(config: DataConfig, stats: dict | None = None):
    """:class:`~jaxtrain.data.dataset.PreparedData` whose splits are
    :class:`~jaxtrain.data.streaming.StreamSplit`\\ s of TFDS dataset ``config.name``.

    ``stats`` (a run's stored statistics) replace the fitted normaliser and imputation
    values (evaluation, resume); the pass still reads the labels."""
    from jaxtrain.data.dataset import PreparedData

    check_streamable_config(config)
    data_dir = _resolve_dir(config.data_dir)
    builder = _builder(config.name, data_dir)
    info = builder.info
    if info.supervised_keys is None:
        raise DatasetError(
            f"data.stream: {config.name} has no supervised keys; stream text as a corpus "
            "(data.path: a directory or glob of text files) or set data.stream: false"
        )
    input_key, label_key = info.supervised_keys
    class_names = tuple(getattr(info.features[label_key], "names", None) or [])
    if not class_names:
        raise DatasetError(
            f"data.stream: {config.name}: label {label_key!r} is not a ClassLabel; streamed "
            "data must be classification (set data.stream: false)"
        )
    feature = info.features[input_key]
    shape, raw_dtype = tuple(feature.shape), np.dtype(feature.np_dtype)
    if any(d is None for d in shape):
        raise DatasetError(
            f"data.stream: {config.name}: {input_key!r} has no fixed shape {shape}; examples of "
            "one batch must have one shape"
        )
    sources = builder.as_data_source()
    if "train" not in sources:
        raise DatasetError(f"data.name: {config.name} has no 'train' split ({sorted(sources)})")
    readers = {
        name: TfdsReader(config.name, data_dir, name, (input_key, label_key), np.int32, source)
        for name, source in sources.items()
        if name in SPLITS
    }
    keys = {name: np.arange(len(reader), dtype=np.int64) for name, reader in readers.items()}
    carve = {
        name: fraction
        for name, fraction in (
            ("validation", config.validation_fraction),
            ("test", config.test_fraction),
        )
        if name not in readers
    }
    reader_of = {name: readers[name] for name in readers}
    if carve:
        parts = random_split(len(readers["train"]), carve, seed=config.seed)
        for name, indices in parts.items():
            keys[name], reader_of[name] = indices.astype(np.int64), readers["train"]
    splits = {name: StreamSplit(reader_of[name], keys[name], shape, raw_dtype) for name in SPLITS}
    for name, split in splits.items():
        if len(split) == 0:
            raise DatasetError(
                f"data: the {name} split of {config.name} is empty; raise "
                "data.validation_fraction / data.test_fraction or use more data"
            )
    prepare = config.prepare
    hashes = any(a != "off" for a in (prepare.duplicates, prepare.conflicts, prepare.leakage))
    summaries = {
        name: pass_over(split, moments=name == "train", hashes=hashes, workers=config.workers)
        for name, split in splits.items()
    }
    _check_values(summaries, prepare.missing, input_key)
    stored = (stats or {}).get("inputs")
    fill = _fill_values(summaries["train"], prepare.missing, prepare.fill_value)
    if stored:
        normalizer = Normalizer.from_dict(stored)
        stored_fill = ((stats or {}).get("prepare") or {}).get("fill")
        fill = None if stored_fill is None else np.asarray(stored_fill, np.float64)
    else:
        normalizer = normalizer_from_moments(summaries["train"].moments, config.normalize, fill)
    transform = HostTransform(normalizer, None if fill is None else fill.astype(np.float32))
    for name, split in splits.items():
        split._cached["labels"] = summaries[name].labels
    splits = {
        name: StreamSplit(s.reader, s.keys, shape, raw_dtype, transform, True, s._cached)
        for name, s in splits.items()
    }
    _check_every_class_trains(summaries["train"].labels, class_names, config.name)
    report = _report(config, splits, summaries, class_names, carve, prepare, fill, input_key)
    origin = {name: "carved from train" if name in carve else "source" for name in SPLITS}
    fitted = {"class_names": list(class_names), "streamed": True}
    if fill is not None:
        fitted["fill"] = fill.tolist()
    return PreparedData(
        config.name,
        splits,
        class_names,
        normalizer,
        origin,
        "classification",
        report=report,
        fitted=fitted,
        rows={name: split.keys for name, split in splits.items()},
    )


def _check_values(summaries: dict, missing: str, column: str) -> None:
    for name, summary in summaries.items():
        if summary.infinite.sum():
            raise DatasetError(
                f"data.prepare.invalid: {int(summary.infinite.sum())} infinite value(s) in "
                f"{column!r} of the {name} split (streamed data cannot drop rows)"
            )
        if missing == "error" and summary.missing.sum():
            raise DatasetError(
                f"data.prepare.missing: {int(summary.missing.sum())} missing (NaN) value(s) in "
                f"{column!r} of the {name} split; set data.prepare.missing: mean or constant"
            )


def _fill_values(train, missing: str, fill_value) -> np.ndarray | None:
    """Per-feature fill values fitted on the training split: the mean of the finite values
    (0 where a feature has none), or the constant; None when nothing is imputed."""
    if missing == "mean":
        return np.where(train.moments.count > 0, train.moments.mean, 0.0)
    if missing == "constant":
        if not isinstance(fill_value, int | float):
            raise DatasetError(
                f"data.prepare.fill_value: {fill_value!r} is not a number (streamed inputs are "
                "numeric)"
            )
        return np.full(len(train.missing), float(fill_value))
    return None


def _check_every_class_trains(labels: np.ndarray, class_names, name: str) -> None:
    missing = [c for k, c in enumerate(class_names) if not np.any(labels == k)]
    if missing:
        raise DatasetError(
            f"data: class {missing[0]!r} of {name} has no example in the training split "
            f"({len(missing)} class(es) missing); change data.seed or the split fractions"
        )


def _report(config, splits, summaries, class_names, carve, prepare, fill, column) -> DataReport:
    rows_in = sum(len(s) for s in splits.values())
    steps = [
        {
            "rule": "stream",
            "action": f"read lazily in batches ({config.workers} worker(s)); statistics by "
            "one pass over the training split",
            "found": 0,
            "rows_in": rows_in,
            "rows_out": rows_in,
        }
    ]
    train = summaries["train"]
    leakage = {"action": prepare.leakage, "found": 0, "pairs": {}}
    if train.hashes is not None:
        unique, first, counts = np.unique(train.hashes, return_index=True, return_counts=True)
        repeated = int((counts - 1).sum())
        steps.append(_found("duplicates", prepare.duplicates, repeated, rows_in))
        conflicts = 0
        if repeated:
            order = np.argsort(train.hashes, kind="stable")
            sorted_hashes, sorted_labels = train.hashes[order], train.labels[order]
            same = sorted_hashes[1:] == sorted_hashes[:-1]
            conflicts = int(np.sum(same & (sorted_labels[1:] != sorted_labels[:-1])))
        steps.append(_found("conflicts", prepare.conflicts, conflicts, rows_in))
        if prepare.leakage != "off":
            from jaxtrain.data.leakage import check_leakage, find_hash_leakage

            leakage.update(
                find_hash_leakage(
                    {name: summaries[name].hashes for name in SPLITS},
                    {name: splits[name].keys for name in SPLITS},
                )
            )
            check_leakage(leakage, prepare.leakage)
    missing_count = int(sum(s.missing.sum() for s in summaries.values()))
    return DataReport(
        name=config.name,
        source=f"tfds:{config.name} (streamed)",
        task="classification",
        rows_in=rows_in,
        splits={name: len(split) for name, split in splits.items()},
        split_method="random" if carve else "source",
        steps=steps,
        missing={
            "action": prepare.missing,
            "columns": {column: missing_count} if missing_count else {},
            "values": {column: "per-feature training means"} if fill is not None else {},
            "indicators": [],
        },
        class_balance={n: class_balance(summaries[n].labels, class_names) for n in SPLITS},
        leakage=leakage,
        dropped={"share": 0.0, "rules": {}},
    )


def _found(rule: str, action: str, found: int, rows: int) -> dict:
    return {"rule": rule, "action": action, "found": found, "rows_in": rows, "rows_out": rows}


def prepare_streamed(config: DataConfig, stats: dict | None = None):
    """The streamed :class:`~jaxtrain.data.dataset.PreparedData` of ``config``: a text corpus
    (``data.path``) or a TFDS dataset."""
    if config.path is not None:
        from jaxtrain.data.corpus import prepare_corpus

        return prepare_corpus(config, streamed=True)
    return prepare_streamed_tfds(config, stats)
