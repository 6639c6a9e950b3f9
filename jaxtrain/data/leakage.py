"""Leakage between splits: the same example (by the hash of its raw features) in two splits."""

from __future__ import annotations

import numpy as np

from jaxtrain.data.clean import LISTED_ROWS
from jaxtrain.data.sources import DatasetError


def find_leakage(hashes: dict[str, np.ndarray], rows: dict[str, np.ndarray]) -> dict:
    """Examples shared between splits.

    hashes: per split, one digest per example (see ``tabular.feature_hashes``, computed after
    cleaning on raw feature bytes); rows: per split, the examples' source row numbers.
    Returns JSON: ``found`` (examples of a later split whose features occur in an earlier
    one, counted once each) and per pair ``"a/b"`` its ``examples`` count and the first
    ``[row in a, row in b]`` pairs.
    """
    names = list(hashes)
    pairs, found = {}, set()
    for i, first in enumerate(names):
        where = {}
        for position, digest in enumerate(hashes[first]):
            where.setdefault(digest, position)
        for second in names[i + 1 :]:
            shared = [
                (where[digest], position)
                for position, digest in enumerate(hashes[second])
                if digest in where
            ]
            if shared:
                found.update((second, b) for _, b in shared)
                pairs[f"{first}/{second}"] = {
                    "examples": len(shared),
                    "rows": [
                        [int(rows[first][a]), int(rows[second][b])] for a, b in shared[:LISTED_ROWS]
                    ],
                }
    return {"found": len(found), "pairs": pairs}


def find_hash_leakage(hashes: dict[str, np.ndarray], rows: dict[str, np.ndarray]) -> dict:
    """:func:`find_leakage` for integer digests (u64[n] per split, as a streaming pass makes
    them), with sorted arrays instead of a dict per split: the same result, a few bytes per
    example of memory."""
    names = list(hashes)
    pairs, found = {}, set()
    for i, first in enumerate(names):
        order = np.argsort(hashes[first], kind="stable")  # the first occurrence wins ties
        ordered = hashes[first][order]
        for second in names[i + 1 :]:
            shared = np.flatnonzero(np.isin(hashes[second], ordered))
            if len(shared):
                where = order[np.searchsorted(ordered, hashes[second][shared])]
                found.update((second, int(b)) for b in shared)
                pairs[f"{first}/{second}"] = {
                    "examples": int(len(shared)),
                    "rows": [
                        [int(rows[first][a]), int(rows[second][b])]
                        for a, b in zip(where[:LISTED_ROWS], shared[:LISTED_ROWS], strict=True)
                    ],
                }
    return {"found": len(found), "pairs": pairs}


def check_leakage(findings: dict, action: str) -> None:
    """Raise a DatasetError for leaked examples when ``action`` is ``error``."""
    if action == "error" and findings["found"]:
        pair, detail = next(iter(findings["pairs"].items()))
        first, second = pair.split("/")
        a, b = detail["rows"][0]
        raise DatasetError(
            f"data.prepare.leakage: {findings['found']} example(s) sit in two splits (first: "
            f"row {a} in {first} equals row {b} in {second}); set data.prepare.duplicates: "
            "drop (and near_duplicates), or a group_column, or leakage: report"
        )
