"""Text corpora on disk: ``data.path`` a directory or a glob of text files, one document each.

The files are listed (sorted), checked to be UTF-8 text one chunk at a time, split *by
document* (a seeded shuffle of the files cut by size, each file going to the part its
midpoint falls in: the rule :mod:`jaxtrain.data.dataset` applies to documents in memory),
and cut into next-byte windows of ``data.sequence_length``. In memory (:func:`load_corpus`)
the files become a text dataset like any other; streamed (:func:`prepare_corpus`) a split
is a :class:`CorpusReader` over its files: the bytes of its files laid end to end, read a
window at a time with ``seek``, so memory is a few numbers per file however large the
corpus.
"""

from __future__ import annotations

import codecs
import glob
from pathlib import Path

import numpy as np

from jaxtrain.data.sources import ArraySplit, DatasetError, RawDataset, text_split

GLOB_CHARS = "*?["
READ_CHUNK = 1 << 20
LEAKAGE_SAMPLE = 32  # a streamed corpus's leakage check keeps 1 shingle in 32 (fingerprints)


def is_corpus_path(path: str | None) -> bool:
    """A directory, or a pattern with ``*``, ``?`` or ``[``."""
    if path is None:
        return False
    return any(c in path for c in GLOB_CHARS) or Path(path).expanduser().is_dir()


def corpus_files(path: str) -> list[tuple[str, int]]:
    """``(file, size in bytes)`` of every regular file under a directory (recursively) or
    matching a glob (``**`` recursive), sorted by path; DatasetError when there is none."""
    root = Path(path).expanduser()
    if root.is_dir():
        found = [p for p in root.rglob("*") if p.is_file()]
    else:
        found = [Path(p) for p in glob.glob(str(root), recursive=True) if Path(p).is_file()]
    if not found:
        raise DatasetError(f"data.path: {path} matches no file")
    return [(str(p), p.stat().st_size) for p in sorted(found)]


def is_text_file(path: str) -> bool:
    """UTF-8 without NUL bytes, read a megabyte at a time (binary files are skipped)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(READ_CHUNK):
                if b"\0" in chunk:
                    return False
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except (UnicodeDecodeError, OSError):
        return False
    return True


def text_files(path: str) -> tuple[list[tuple[str, int]], int]:
    """The non-empty UTF-8 text files of ``path`` and how many other files were skipped."""
    files = corpus_files(path)
    kept = [(name, size) for name, size in files if size and is_text_file(name)]
    if not kept:
        raise DatasetError(f"data.path: none of the {len(files)} file(s) of {path} is UTF-8 text")
    return kept, len(files) - len(kept)


def load_corpus(path: str) -> RawDataset:
    """Every text file of ``path`` as one document of a ``train`` split, in memory."""
    files, _ = text_files(path)
    documents = [Path(name).read_text(encoding="utf-8") for name, _ in files]
    return RawDataset(Path(path).name or "corpus", {"train": text_split(documents)}, (),
                      task="language_model")  # fmt: skip


def assign_documents(sizes: np.ndarray, carve: dict[str, float], seed: int) -> dict:
    """Documents (by index) per part, in the order their bytes are laid out: shuffled with
    ``seed``, each document going to the part (``carve``'s fractions of the bytes, then
    ``train``) in which its midpoint by size falls. Empty documents go nowhere. The rule of
    :func:`jaxtrain.data.dataset._text_splits`."""
    present = np.flatnonzero(np.asarray(sizes) > 0)
    lengths = np.asarray(sizes, np.float64)[present]
    order = np.random.default_rng(seed).permutation(len(present))
    total = lengths.sum()
    ends = np.cumsum(lengths[order]) / total
    middles = ends - lengths[order] / (2 * total)
    bounds, start = {}, 0.0
    for name, fraction in carve.items():
        bounds[name] = (start, start + fraction)
        start += fraction
    bounds["train"] = (start, 1.0 + 1e-9)
    return {
        name: [int(present[i]) for i, m in zip(order, middles, strict=True) if low <= m < high]
        for name, (low, high) in bounds.items()
    }


class CorpusReader:
    """The bytes of ``files`` laid end to end, read as next-byte windows.

    Window ``k`` covers bytes ``[k * length, (k + 1) * length]`` (``length + 1`` bytes):
    ``read(keys)`` returns ``(inputs i32[n, length], labels i32[n, length])`` with the labels
    one byte ahead, as :func:`jaxtrain.data.dataset.byte_windows` cuts a stream in memory;
    ``len`` is ``(total bytes - 1) // length``. Holds only the paths and their offsets.
    """

    def __init__(self, files: list[str], sizes: list[int], length: int):
        self.files, self.length = list(files), length
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    def __len__(self) -> int:
        return max(0, int(self.starts[-1] - 1) // self.length)

    def _bytes(self, start: int, count: int) -> bytes:
        out, position = [], start
        index = int(np.searchsorted(self.starts, position, side="right")) - 1
        while count > 0 and index < len(self.files):
            offset = position - int(self.starts[index])
            with open(self.files[index], "rb") as handle:
                handle.seek(offset)
                part = handle.read(min(count, int(self.starts[index + 1]) - position))
            out.append(part)
            count -= len(part)
            position += len(part)
            index += 1
        return b"".join(out)

    def read(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        span = self.length + 1
        windows = np.zeros((len(keys), span), np.int32)
        for row, key in enumerate(np.asarray(keys, np.int64)):
            chunk = self._bytes(int(key) * self.length, span)
            windows[row, : len(chunk)] = np.frombuffer(chunk, np.uint8)
        return windows[:, :-1], windows[:, 1:]

    def documents(self):
        """Each file's text in order, one at a time (for the leakage check)."""
        for name in self.files:
            yield Path(name).read_text(encoding="utf-8")


def prepare_corpus(config, *, streamed: bool = True):
    """The streamed :class:`~jaxtrain.data.dataset.PreparedData` of the corpus at
    ``config.path``: splits of whole files, windows read lazily, the leakage check on
    fingerprints (1 shingle in :data:`LEAKAGE_SAMPLE`) streamed file by file."""
    from jaxtrain.data.data_report import DataReport
    from jaxtrain.data.dataset import PreparedData
    from jaxtrain.data.dedup import passage_leakage
    from jaxtrain.data.prepare import Normalizer
    from jaxtrain.data.streaming import StreamSplit

    del streamed
    if config.dedup_passages:
        raise DatasetError(
            "data.dedup_passages: rewrites documents in memory, but the corpus is streamed; "
            "set data.stream: false (or deduplicate the files first)"
        )
    files, skipped = text_files(config.path)
    names, sizes = [f for f, _ in files], np.array([s for _, s in files])
    carve = {"validation": config.validation_fraction, "test": config.test_fraction}
    parts = assign_documents(sizes, carve, config.seed)
    length = config.sequence_length
    splits = {}
    for name in ("train", "validation", "test"):
        chosen = parts[name]
        reader = CorpusReader([names[i] for i in chosen], [int(sizes[i]) for i in chosen], length)
        if len(reader) == 0:
            raise DatasetError(
                f"data: the {name} split of {config.path} is empty (too few bytes or files); "
                "raise data.validation_fraction / data.test_fraction or add files"
            )
        keys = np.arange(len(reader), dtype=np.int64)
        splits[name] = StreamSplit(reader, keys, (length,), np.int32, None, label_cache=False)
    leakage = {"action": config.prepare.leakage, "found": 0, "pairs": {}}
    if config.prepare.leakage != "off":
        leakage.update(
            passage_leakage(
                {n: splits[n].reader.documents() for n in ("train", "validation", "test")},
                config.shingle_words,
                LEAKAGE_SAMPLE,
            )
        )
        _check_passage_leakage(leakage)
    steps = [
        {
            "rule": "stream",
            "action": f"{len(files)} text file(s) read lazily ({skipped} other file(s) "
            "skipped); split by file",
            "found": skipped,
            "rows_in": len(files) + skipped,
            "rows_out": len(files),
        }
    ]
    report = DataReport(
        name=config.name,
        source=f"{config.path} (streamed)",
        task="language_model",
        rows_in=len(files),
        splits={name: len(parts[name]) for name in splits},
        split_method="by document (file)",
        steps=steps,
        leakage=leakage,
    )
    none = Normalizer("none", np.zeros(0, np.float32), np.ones(0, np.float32))
    origin = {name: "carved from train" for name in ("validation", "test")}
    return PreparedData(
        config.name, splits, (), none, {"train": "source", **origin}, "language_model",
        report=report, fitted={"streamed": True},
    )  # fmt: skip


def _check_passage_leakage(leakage: dict) -> None:
    if leakage["action"] == "error" and leakage["found"]:
        pair, detail = next(iter(leakage["pairs"].items()))
        first, second = pair.split("/")
        raise DatasetError(
            f"data.prepare.leakage: {leakage['found']} passage(s) share "
            f"{leakage['shingle_words']} words between splits (first: {second} passage "
            f"{detail['first'][0]['start']!r} also in {first}); set data.dedup_passages: true "
            "or leakage: report"
        )


def corpus_array_split(reader: CorpusReader) -> ArraySplit:
    """A reader's windows in memory (tests and small corpora)."""
    inputs, labels = reader.read(np.arange(len(reader)))
    return ArraySplit(inputs, labels)
