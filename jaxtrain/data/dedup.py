"""Near-duplicate text: shingles (runs of ``k`` words), passage dedup, passage leakage.

A *passage* is a paragraph (text between blank lines). Its *shingles* are the hashes of
every run of ``k`` consecutive words inside it (words: whitespace-separated, compared
exactly); a paragraph of fewer than ``k`` words has none. Two passages share text when they
share a shingle: a run of ``k`` identical words (``k = 13`` by default, as in GPT-3's
contamination analysis, long enough that common phrases do not count).

:func:`dedup_passages` drops, in document order, every paragraph that shares a shingle with
an *earlier document*; afterwards no two documents share a shingle, so whichever way the
documents are split, :func:`passage_leakage` finds nothing. Both are exact (an index of every
shingle, 8 bytes each); ``sample`` keeps only shingles whose hash is 0 modulo ``sample``
(fingerprints, as in winnowing) for corpora streamed from disk.
"""

from __future__ import annotations

import zlib

import numpy as np

_BASE = np.uint64(1_000_003)  # polynomial base of the rolling shingle hash (mod 2**64)
LISTED = 10  # leaked passages listed in a report


def paragraphs(text: str) -> list[str]:
    """``text`` cut after each blank line; ``"".join(paragraphs(text)) == text``."""
    parts = text.split("\n\n")
    return [p + "\n\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def shingles(text: str, k: int) -> np.ndarray:
    """u64[max(0, words - k + 1)]: a hash of each run of ``k`` consecutive words of ``text``
    (each word's CRC-32, combined by a polynomial rolling hash modulo 2**64)."""
    words = text.split()
    if len(words) < k:
        return np.zeros(0, np.uint64)
    ids = np.fromiter((zlib.crc32(w.encode()) for w in words), np.uint64, len(words))
    count = len(words) - k + 1
    hashes = np.zeros(count, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            hashes = hashes * _BASE + ids[j : j + count]
    return hashes


def passage_shingles(documents, k: int, sample: int = 1):
    """Every shingle of every paragraph of ``documents`` (any iterable of strings, read once):
    ``(hashes u64[s], document i64[s], paragraph i64[s], passages)`` where ``paragraph``
    numbers the paragraphs of all documents in order and ``passages[p]`` is ``(document,
    bytes, start)`` (its first 80 characters). ``sample`` > 1 keeps 1 shingle in ``sample``
    (those whose hash is 0 modulo ``sample``); memory is then ~1/``sample`` of the index."""
    hashes, owners, paras, passages = [], [], [], []
    for d, document in enumerate(documents):
        for passage in paragraphs(document):
            h = shingles(passage, k)
            if sample > 1:
                h = h[h % np.uint64(sample) == 0]
            hashes.append(h)
            owners.append(np.full(len(h), d, np.int64))
            paras.append(np.full(len(h), len(passages), np.int64))
            passages.append((d, len(passage.encode()), passage[:80]))
    if not hashes:
        empty = np.zeros(0, np.int64)
        return np.zeros(0, np.uint64), empty, empty, passages
    return np.concatenate(hashes), np.concatenate(owners), np.concatenate(paras), passages


def dedup_passages(documents: list[str], k: int) -> tuple[list[str], dict]:
    """Drop every paragraph sharing a shingle with an earlier document (in list order).

    Returns the documents without those paragraphs (a document may become empty) and a JSON
    record: ``passages`` and ``bytes`` dropped, ``documents_changed``, and the first dropped
    passages (``document``, ``start`` of its text)."""
    hashes, owners, paras, passages = passage_shingles(documents, k)
    dropped: set[int] = set()
    if len(hashes):
        unique, inverse = np.unique(hashes, return_inverse=True)
        first = np.full(len(unique), np.iinfo(np.int64).max)
        np.minimum.at(first, inverse, owners)
        dropped = set(np.unique(paras[first[inverse] < owners]).tolist())
    kept, p = [], 0
    for document in documents:
        parts = []
        for passage in paragraphs(document):
            if p not in dropped:
                parts.append(passage)
            p += 1
        kept.append("".join(parts))
    gone = sorted(dropped)
    record = {
        "rule": "dedup_passages",
        "action": f"drop paragraphs sharing {k} words with an earlier document",
        "found": len(gone),
        "passages": len(gone),
        "bytes": int(sum(passages[p][1] for p in gone)),
        "documents_changed": len({passages[p][0] for p in gone}),
        "first": [{"document": passages[p][0], "start": passages[p][2]} for p in gone[:LISTED]],
    }
    return kept, record


def passage_leakage(splits: dict, k: int, sample: int = 1) -> dict:
    """Passages of a later split sharing a shingle with an earlier split (order: the dict's).

    ``splits`` maps a split name to its documents (an iterable of strings, read once).
    Returns JSON: ``found`` (passages of any later split sharing text with an earlier one),
    and per pair ``"a/b"`` the ``passages`` of ``b`` found, their ``bytes``, the share of
    ``b``'s bytes, and the ``first`` ones (``document`` index in ``b``, ``start``)."""
    names = list(splits)
    indexed = {name: passage_shingles(splits[name], k, sample) for name in names}
    pairs, found = {}, set()
    for i, first in enumerate(names):
        known = np.unique(indexed[first][0])
        for second in names[i + 1 :]:
            hashes, _, paras, passages = indexed[second]
            leaked = sorted(set(paras[np.isin(hashes, known)].tolist()))
            if not leaked:
                continue
            found.update((second, p) for p in leaked)
            total = sum(n for _, n, _ in passages) or 1
            leaked_bytes = sum(passages[p][1] for p in leaked)
            pairs[f"{first}/{second}"] = {
                "passages": len(leaked),
                "bytes": int(leaked_bytes),
                "share_of_bytes": leaked_bytes / total,
                "first": [
                    {"document": passages[p][0], "start": passages[p][2]} for p in leaked[:LISTED]
                ],
            }
    return {"found": len(found), "pairs": pairs, "shingle_words": k, "sample": sample}
