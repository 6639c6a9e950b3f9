"""Preparing text held in memory: passage dedup, splits by document, the passage leakage
check, the data report; then the next-byte windows of :mod:`jaxtrain.data.dataset`."""

from __future__ import annotations

import numpy as np

from jaxtrain.data.corpus import _check_passage_leakage, assign_documents
from jaxtrain.data.data_report import DataReport
from jaxtrain.data.dedup import dedup_passages, passage_leakage
from jaxtrain.data.sources import ArraySplit, RawDataset, text_split

SPLITS = ("train", "validation", "test")


def documents_of(split: ArraySplit) -> list[str]:
    """The documents of a text split (a byte stream whose labels number the documents)."""
    if len(split) == 0:
        return []
    cuts = np.flatnonzero(np.diff(split.labels)) + 1
    return [
        part.astype(np.uint8).tobytes().decode("utf-8")
        for part in np.split(np.asarray(split.inputs), cuts)
    ]


def prepare_text(config, raw: RawDataset):
    """:class:`~jaxtrain.data.dataset.PreparedData` of language-model text in memory.

    With ``data.dedup_passages`` every paragraph sharing ``data.shingle_words`` words with an
    earlier document (source splits in the order train, validation, test) is dropped first.
    The held-out splits the source lacks are carved from its train split by whole documents
    (:func:`jaxtrain.data.corpus.assign_documents`). Unless ``data.prepare.leakage`` is
    off, held-out passages sharing such a run with an earlier split are reported (or, with
    ``error``, refused)."""
    from jaxtrain.data.dataset import (
        PreparedData,
        _carve,
        _check_not_empty,
        _origin,
        _text_splits,
    )
    from jaxtrain.data.prepare import Normalizer

    documents = {name: documents_of(raw.splits[name]) for name in SPLITS if name in raw.splits}
    rows_in = sum(len(d) for d in documents.values())
    steps = []
    if config.dedup_passages:
        order = [(name, i) for name in documents for i in range(len(documents[name]))]
        flat = [documents[name][i] for name, i in order]
        kept, record = dedup_passages(flat, config.shingle_words)
        record.update(rows_in=rows_in, rows_out=sum(1 for d in kept if d))
        steps.append(record)
        for (name, i), text in zip(order, kept, strict=True):
            documents[name][i] = text
        empty = ArraySplit(np.zeros(0, np.uint8), np.zeros(0, np.int32))
        splits = {n: text_split(d) if d else empty for n, d in documents.items()}
        raw = RawDataset(raw.name, splits, raw.class_names, raw.task)
        documents = {name: [d for d in docs if d] for name, docs in documents.items()}
    carve = _carve(config, set(raw.splits))
    by_split = dict(documents)
    if carve:
        train = documents["train"]
        sizes = np.array([len(d.encode()) for d in train])
        parts = assign_documents(sizes, carve, config.seed)
        by_split.update({name: [train[i] for i in parts[name]] for name in parts})
    splits = _text_splits(raw, carve, config)
    _check_not_empty(splits, config)
    leakage = {"action": config.prepare.leakage, "found": 0, "pairs": {}}
    if config.prepare.leakage != "off":
        leakage.update(passage_leakage({n: by_split[n] for n in SPLITS}, config.shingle_words))
        _check_passage_leakage(leakage)
    report = DataReport(
        name=config.name,
        source=config.path or f"tfds:{config.name}",
        task="language_model",
        rows_in=rows_in,
        splits={name: len(by_split[name]) for name in SPLITS},
        split_method="by document",
        steps=steps,
        leakage=leakage,
        dropped={"share": 0.0, "rules": {}},
    )
    none = Normalizer("none", np.zeros(0, np.float32), np.ones(0, np.float32))
    return PreparedData(config.name, splits, (), none, _origin(carve), raw.task, report=report)


def split_text(data, name: str) -> bytes:
    """The bytes a language model predicts on split ``name`` of ``data`` (every window's
    labels in order), read a chunk at a time when the split is streamed."""
    split = data.splits[name]
    from jaxtrain.data.streaming import is_streamed

    if is_streamed(split):
        return b"".join(
            batch["labels"].astype(np.uint8).tobytes() for batch in split.chunks(raw=False)
        )
    return np.asarray(split.labels).astype(np.uint8).tobytes()


def byte_counts(data, name: str) -> np.ndarray:
    """i64[256]: how often each byte is a target in split ``name`` (chunked when streamed)."""
    from jaxtrain.data.streaming import is_streamed

    split, counts = data.splits[name], np.zeros(256, np.int64)
    batches = split.chunks(raw=False) if is_streamed(split) else [{"labels": split.labels}]
    for batch in batches:
        counts += np.bincount(np.asarray(batch["labels"]).reshape(-1), minlength=256)
    return counts


def unigram_bits(train_counts: np.ndarray, eval_counts: np.ndarray) -> float:
    """:func:`jaxtrain.data.text.unigram_bits_per_byte` from byte counts: the add-one unigram
    model of the training bytes, its cross-entropy (bits per byte) on the evaluated bytes."""
    p = (train_counts + 1.0) / (train_counts.sum() + 256.0)
    return float(-(eval_counts * np.log2(p)).sum() / eval_counts.sum())


XZ_PRESET = 6  # xz's default: an 8 MiB dictionary, ~94 MiB of compressor memory (-9: 674)
XZ_CONTEXT_LIMIT = 6 * 2**20  # training text xz can still "see" whole from the held-out text


def xz_bits_per_byte(held_out: bytes, context: bytes | None = None) -> float:
    """Bits per byte xz (LZMA2 at its default preset, as the ``xz`` command) spends on
    ``held_out``: alone, or given ``context`` (the training text), as ``8 * (|xz(context +
    held_out)| - |xz(context)|) / |held_out|``: what a compressor that has read the
    training split pays for the rest (meaningful while context + held-out fit its 8 MiB
    dictionary)."""
    import lzma

    if context is None:
        return 8 * len(lzma.compress(held_out, preset=XZ_PRESET)) / len(held_out)
    both = len(lzma.compress(context + held_out, preset=XZ_PRESET))
    return 8 * (both - len(lzma.compress(context, preset=XZ_PRESET))) / len(held_out)
