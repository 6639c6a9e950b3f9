"""Parameters named by path: flat ``{"Dense_1/kernel": array}`` views and glob patterns."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from flax import traverse_util

SEP = "/"


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """A nested dict of arrays -> ``{"a/b/kernel": leaf}`` in the tree's own order."""
    return traverse_util.flatten_dict(dict(tree), sep=SEP) if tree else {}


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten`."""
    return traverse_util.unflatten_dict(dict(flat), sep=SEP)


def matches(path: str, patterns: Iterable[str]) -> bool:
    """True when a shell-style ``pattern`` (``*`` also crosses ``/``) matches ``path`` or one
    of its parent modules (``Dense_1`` covers ``Dense_1/kernel``)."""
    return any(
        fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path, p.rstrip(SEP) + SEP + "*")
        for p in patterns
    )


def unmatched(paths: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """The patterns that match none of ``paths`` (usually a typo worth an error)."""
    paths = list(paths)
    return [p for p in patterns if not any(matches(path, [p]) for path in paths)]


def top_modules(paths: Iterable[str]) -> list[str]:
    """First path components in order of first appearance (module creation order)."""
    seen: dict[str, None] = {}
    for path in paths:
        seen.setdefault(path.split(SEP, 1)[0], None)
    return list(seen)
