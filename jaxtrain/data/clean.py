"""Cleaning rules: invalid values, missing values, duplicates, conflicts, near-duplicates.

A rule is a pair (name, pure ``check(table) -> Finding``), like an optax transformation: it
looks at a :class:`~jaxtrain.data.tabular.Table` and says which rows it removes and what it
found; :func:`apply_rules` chains rules, each seeing the rows the previous ones kept.
Imputation is the one step with statistics, a (``fit``, ``apply``) pair fitted on the
training split only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from jaxtrain.data.labels import MISSING_LABEL
from jaxtrain.data.sources import DatasetError
from jaxtrain.data.tabular import Table, feature_hashes

LISTED_ROWS = 1000  # findings list at most this many rows (their counts are always exact)


class Finding(NamedTuple):
    """drop: bool [n], the rows the rule removes; record: what it found, as JSON for the
    report (always ``rule``, ``action``, ``found``; ``rows`` lists source row numbers)."""

    drop: np.ndarray
    record: dict


class Rule(NamedTuple):
    name: str
    check: Callable[[Table], Finding]


def apply_rules(table: Table, rules: Sequence[Rule]) -> tuple[Table, list[dict]]:
    """Run ``rules`` in order; returns the kept rows and one record per rule, each with
    ``rows_in`` and ``rows_out`` added."""
    records = []
    for rule in rules:
        finding = rule.check(table)
        kept = table.take(~finding.drop)
        records.append({**finding.record, "rows_in": len(table), "rows_out": len(kept)})
        table = kept
    return table, records


# --- invalid values ---------------------------------------------------------------------


def invalid_values(
    action: str,
    ranges: dict[str, tuple[float | None, float | None]],
    categories: dict[str, tuple[str, ...]],
    task: str,
    label_column: str = "label",
    raw_labels: dict[int, Any] | None = None,
) -> Rule:
    """Non-finite numbers (±inf; NaN is a missing value), numbers outside ``ranges``,
    categories outside ``categories``, and missing or unknown labels (id -1; regression: a
    target that is not a finite number) in ``label_column``. ``action``: ``drop`` the rows,
    or ``error``: one line naming the column, the first bad value as written and its row
    (``raw_labels`` maps a source row to its label as read, for the rows whose label is
    invalid; without it the label's id or number is shown)."""

    def check(table: Table) -> Finding:
        _check_columns(table, ranges, "ranges", table.numeric_names)
        _check_columns(table, categories, "categories", table.categorical_names)
        problems: dict[str, np.ndarray] = {}  # "column: what" -> bool [n]
        value_of: dict[str, Callable[[int], Any]] = {}  # the bad value of row position i
        numeric = table.numeric.reshape(len(table), -1)
        if np.issubdtype(numeric.dtype, np.floating):
            infinite = np.isinf(numeric)
            if table.is_columnar:
                for j, name in enumerate(table.numeric_names):
                    problems[f"{name}: not a finite number"] = infinite[:, j]
                    value_of[f"{name}: not a finite number"] = lambda i, j=j: numeric[i, j]
            else:
                problems["inputs: not a finite number"] = infinite.any(axis=1)
        for name, (low, high) in ranges.items():
            values = numeric[:, table.numeric_names.index(name)]
            with np.errstate(invalid="ignore"):
                outside = (values < low if low is not None else False) | (
                    values > high if high is not None else False
                )
            key = f"{name}: outside [{low}, {high}]"
            problems[key] = np.asarray(outside) & ~np.isnan(values)
            value_of[key] = lambda i, values=values: values[i]
        for name, allowed in categories.items():
            cells = table.categorical[:, table.categorical_names.index(name)]
            key = f"{name}: not one of {list(allowed)}"
            problems[key] = np.array([c is not None and c not in allowed for c in cells], bool)
            value_of[key] = lambda i, cells=cells: cells[i]
        if task in ("classification", "regression"):
            if task == "classification":
                key = f"{label_column}: missing or not in the label set"
                problems[key] = table.labels == MISSING_LABEL
            else:
                key = f"{label_column}: missing or not a finite number"
                problems[key] = ~np.isfinite(table.labels)
            written = raw_labels or {}
            value_of[key] = lambda i: written.get(int(table.rows[i]), table.labels[i])
        problems = {k: v for k, v in problems.items() if v.any()}
        bad = np.zeros(len(table), bool)
        for mask in problems.values():
            bad |= mask
        if problems and action == "error":
            what, mask = next(iter(problems.items()))
            column, _, reason = what.partition(": ")
            first = int(np.flatnonzero(mask)[0])
            shown = f", value {_written(value_of[what](first))}" if what in value_of else ""
            raise DatasetError(
                f"data.prepare.invalid: column {column!r}: {reason} in {int(mask.sum())} row(s) "
                f"(first: row {int(table.rows[first])}{shown}); {int(bad.sum())} invalid "
                "row(s) in all. Fix the data, or set data.prepare.invalid: drop"
            )
        record = {
            "rule": "invalid",
            "action": action,
            "found": int(bad.sum()),
            "columns": {k: int(v.sum()) for k, v in problems.items()},
            "rows": _listed(table.rows[bad]),
        }
        return Finding(bad, record)

    return Rule("invalid", check)


def _written(value: Any) -> str:
    """A cell as the user wrote it: text quoted, a missing cell as (missing)."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return "(missing)"
    if isinstance(value, str):
        return repr(value) if value.strip() else "(missing)"
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _check_columns(table: Table, declared: dict, key: str, columns: tuple[str, ...]) -> None:
    for name in declared:
        if name not in columns:
            raise DatasetError(
                f"data.prepare.{key}: {name!r} is not a "
                f"{'numeric' if key == 'ranges' else 'categorical'} feature column "
                f"({list(columns)})"
            )


# --- how much cleaning removed -------------------------------------------------------------

DROPPING_RULES = (
    "invalid",
    "missing",
    "duplicates",
    "conflicts",
    "near_duplicates",
    "label_errors",
)
WARN_DROP_SHARE = 0.1  # a warning on stderr from this share of the training split on


def drop_summary(steps: Sequence[dict]) -> dict:
    """The share of the training split that the cleaning rules removed, in all and per rule.

    Each rule's ``share`` is of the rows it saw (its ``rows_in``). The rules before the split
    act on every split alike, so the training split loses that share of its rows too;
    ``label_errors`` acts on the training split alone. In all, ``share = 1 - prod(1 -
    share_rule)``. Returns ``{"share": float, "rules": {rule: {"dropped": int, "share":
    float}}}`` listing the rules that dropped rows, in order.
    """
    rules, kept = {}, 1.0
    for step in steps:
        dropped = step.get("rows_in", 0) - step.get("rows_out", 0)
        if step["rule"] not in DROPPING_RULES or dropped <= 0:
            continue
        share = dropped / step["rows_in"]
        rules[step["rule"]] = {"dropped": int(dropped), "share": round(share, 6)}
        kept *= 1.0 - share
    return {"share": round(1.0 - kept, 6), "rules": rules}


def describe_drops(summary: dict) -> str:
    """``"46.0% of the training split (label_errors 40.0%, duplicates 10.0%)"``."""
    parts = ", ".join(f"{rule} {r['share']:.1%}" for rule, r in summary["rules"].items())
    return f"{summary['share']:.1%} of the training split ({parts or 'no rule'})"


def check_drop_share(summary: dict, max_fraction: float) -> None:
    """DatasetError (one line, naming the key and the rules) past ``max_fraction``."""
    if summary["share"] > max_fraction:
        raise DatasetError(
            f"data.prepare.max_drop_fraction: cleaning would drop {describe_drops(summary)}, "
            f"more than the cap {max_fraction:g}; check those rules (set them to report) or "
            "raise data.prepare.max_drop_fraction"
        )


# --- missing values -----------------------------------------------------------------------


def missing_mask(table: Table) -> np.ndarray:
    """bool [n, columns]: missing cells, numeric columns first then categorical (images: one
    column, any NaN pixel)."""
    numeric = table.numeric.reshape(len(table), -1)
    if np.issubdtype(numeric.dtype, np.floating):
        nan = np.isnan(numeric) if table.is_columnar else np.isnan(numeric).any(1, keepdims=True)
    else:
        nan = np.zeros((len(table), len(table.numeric_names) if table.is_columnar else 1), bool)
    text = np.array([[c is None for c in row] for row in table.categorical], bool)
    return np.concatenate([nan, text.reshape(len(table), -1)], axis=1)


def missing_values(action: str) -> Rule:
    """Counts missing cells per column; ``drop`` removes their rows, ``error`` refuses them,
    an imputation strategy keeps them for :func:`fit_imputer`."""

    def check(table: Table) -> Finding:
        mask = missing_mask(table)
        names = _column_names(table)
        counts = {name: int(c) for name, c in zip(names, mask.sum(0), strict=True) if c}
        rows = mask.any(axis=1)
        if counts and action == "error":
            first = next(iter(counts))
            raise DatasetError(
                f"data.prepare.missing: column {first!r} has {counts[first]} missing value(s) "
                f"({int(rows.sum())} row(s) with any); set data.prepare.missing to drop, mean, "
                "median, most_frequent or constant"
            )
        record = {
            "rule": "missing",
            "action": action,
            "found": int(rows.sum()),
            "columns": counts,
            "rows": _listed(table.rows[rows]),
        }
        return Finding(rows if action == "drop" else np.zeros(len(table), bool), record)

    return Rule("missing", check)


def _column_names(table: Table) -> tuple[str, ...]:
    return (table.numeric_names if table.is_columnar else ("inputs",)) + table.categorical_names


def fit_imputer(table: Table, strategy: str, fill_value, add_indicator: bool) -> dict:
    """Fill values fitted on the training split (JSON): ``{"values": {column: value},
    "indicators": [columns]}``. ``mean``/``median`` apply to numeric columns; categorical
    columns then take their most frequent category. A column missing in every training row
    is filled with 0 (numeric) or ``"missing"`` (text)."""
    if strategy in ("error", "drop"):
        return {"values": {}, "indicators": []}
    mask = missing_mask(table)
    if not table.is_columnar:
        if mask.any():  # a fill value per pixel is not a column statistic: refuse, never NaN
            raise DatasetError(
                f"data.prepare.missing: {strategy} fills named columns, but these examples are "
                f"arrays of shape {table.numeric.shape[1:]} with {int(mask.any(1).sum())} "
                "row(s) holding NaN; use data.prepare.missing=drop (or error)"
            )
        return {"values": {}, "indicators": []}
    values: dict[str, float | str] = {}
    for j, name in enumerate(table.numeric_names):
        present = table.numeric[~mask[:, j], j]
        if strategy == "constant":
            if not isinstance(fill_value, int | float):
                raise DatasetError(
                    f"data.prepare.fill_value: {fill_value!r} is not a number, but numeric "
                    f"column {name!r} is filled with it"
                )
            values[name] = float(fill_value)
        elif len(present) == 0:
            values[name] = 0.0
        elif strategy == "mean":
            values[name] = float(present.mean())
        elif strategy == "median":
            values[name] = float(np.median(present))
        else:
            uniques, counts = np.unique(present, return_counts=True)
            values[name] = float(uniques[np.argmax(counts)])  # ties: the smallest, as sklearn
    for j, name in enumerate(table.categorical_names):
        present = [c for c in table.categorical[:, j] if c is not None]
        if strategy == "constant":
            values[name] = str(fill_value)
        elif not present:
            values[name] = "missing"
        else:
            uniques, counts = np.unique(np.array(present, object).astype(str), return_counts=True)
            values[name] = str(uniques[np.argmax(counts)])
    missing_any = mask.any(axis=0)
    indicators = [n for n, m in zip(_column_names(table), missing_any, strict=True) if m]
    return {"values": values, "indicators": indicators if add_indicator else []}


def impute(table: Table, fitted: dict) -> Table:
    """Fill missing cells with ``fitted`` values; each indicator column adds a 0/1 numeric
    feature ``<column>_missing`` (after the numeric features)."""
    if not fitted["values"] and not fitted["indicators"]:
        return table
    mask = missing_mask(table)
    names = _column_names(table)
    numeric = table.numeric.astype(np.float64, copy=True)
    for j, name in enumerate(table.numeric_names):
        numeric[mask[:, j], j] = fitted["values"].get(name, np.nan)
    categorical = table.categorical.copy()
    offset = len(table.numeric_names)
    for j, name in enumerate(table.categorical_names):
        categorical[mask[:, offset + j], j] = fitted["values"].get(name)
    extra = [mask[:, names.index(c)].astype(np.float64)[:, None] for c in fitted["indicators"]]
    return Table(
        np.concatenate([numeric, *extra], axis=1) if extra else numeric,
        categorical,
        table.numeric_names + tuple(f"{c}_missing" for c in fitted["indicators"]),
        table.categorical_names,
        table.labels,
        table.groups,
        table.rows,
        table.origin,
    )


# --- duplicates, conflicts, near-duplicates -------------------------------------------------


def _groups(keys: np.ndarray, origin: np.ndarray) -> list[np.ndarray]:
    """Row positions sharing a key within one source split, for keys held by >1 row."""
    index: dict[tuple, list[int]] = {}
    for i, (key, where) in enumerate(zip(keys, origin, strict=True)):
        index.setdefault((where, key), []).append(i)
    return [np.array(rows) for rows in index.values() if len(rows) > 1]


def exact_duplicates(action: str) -> Rule:
    """Rows equal in every feature and in the label to an earlier row (of the same source
    split). ``drop`` keeps the first of each group; ``report`` only counts them."""

    def check(table: Table) -> Finding:
        found = np.zeros(len(table), bool)
        if action != "off":
            label_bytes = np.array([np.asarray(v).tobytes() for v in table.labels], object)
            keys = feature_hashes(table) + label_bytes
            for group in _groups(keys, table.origin):
                found[group[1:]] = True
        record = {
            "rule": "duplicates",
            "action": action,
            "found": int(found.sum()),
            "rows": _listed(table.rows[found]),
        }
        return Finding(found if action == "drop" else np.zeros(len(table), bool), record)

    return Rule("duplicates", check)


def conflicts(action: str) -> Rule:
    """Groups of rows with equal features but different labels. ``drop`` removes every row of
    such a group (no label can be trusted); ``report`` lists them."""

    def check(table: Table) -> Finding:
        found = np.zeros(len(table), bool)
        groups = []
        if action != "off":
            for group in _groups(feature_hashes(table), table.origin):
                labels = table.labels[group]
                if len({np.asarray(v).tobytes() for v in labels}) > 1:
                    found[group] = True
                    groups.append(
                        {
                            "rows": [int(r) for r in table.rows[group]],
                            "labels": [_json(v) for v in labels],
                        }
                    )
        record = {
            "rule": "conflicts",
            "action": action,
            "found": int(found.sum()),
            "groups": groups[:LISTED_ROWS],
            "rows": _listed(table.rows[found]),
        }
        return Finding(found if action == "drop" else np.zeros(len(table), bool), record)

    return Rule("conflicts", check)


def near_duplicates(action: str, decimals: int, max_distance: float | None) -> Rule:
    """Rows that are not exact copies but equal up to rounding to ``decimals`` (and text
    case/spaces), or, with ``max_distance``, within that L2 distance of an earlier row's
    numeric features (O(n^2) comparisons, in blocks). ``drop`` keeps the first of each
    group; the record counts how many have a label differing from their group's first."""

    def check(table: Table) -> Finding:
        found = np.zeros(len(table), bool)
        first_of = np.arange(len(table))
        if action != "off":
            exact = feature_hashes(table)
            if max_distance is None:
                groups = _groups(feature_hashes(table, decimals), table.origin)
            else:
                groups = _within_distance(table, max_distance)
            for group in groups:
                seen = {exact[group[0]]}
                for i in group[1:]:
                    if exact[i] not in seen:  # exact copies are the duplicates rule's
                        found[i] = True
                        first_of[i] = group[0]
                    seen.add(exact[i])
        relabelled = [
            i
            for i in np.flatnonzero(found)
            if not _same(table.labels[i], table.labels[first_of[i]])
        ]
        record = {
            "rule": "near_duplicates",
            "action": action,
            "found": int(found.sum()),
            "different_label": len(relabelled),
            "rows": _listed(table.rows[found]),
            "first_rows": _listed(table.rows[first_of[found]]),
        }
        return Finding(found if action == "drop" else np.zeros(len(table), bool), record)

    return Rule("near_duplicates", check)


def _within_distance(table: Table, max_distance: float) -> list[np.ndarray]:
    """Greedy groups: each row not yet grouped starts a group of every later ungrouped row
    of its source split within ``max_distance``."""
    x = table.numeric.reshape(len(table), -1).astype(np.float32)
    squared = (x * x).sum(1)
    neighbours: dict[int, list[int]] = {}
    for start in range(0, len(table), 512):
        rows = slice(start, start + 512)
        distances = squared[rows, None] + squared[None, :] - 2.0 * x[rows] @ x.T
        tolerance = 1e-6 * (1.0 + squared[rows, None])  # float32 round-off of the expansion
        for i, j in zip(*np.nonzero(distances <= max_distance**2 + tolerance), strict=True):
            i = start + int(i)
            if j > i and table.origin[i] == table.origin[j]:
                neighbours.setdefault(i, []).append(int(j))
    assigned = np.zeros(len(table), bool)
    groups = []
    for i in sorted(neighbours):
        if assigned[i]:
            continue
        members = [i] + [j for j in neighbours[i] if not assigned[j]]
        assigned[members] = True
        if len(members) > 1:
            groups.append(np.array(members))
    return groups


def _same(a, b) -> bool:
    return np.asarray(a).tobytes() == np.asarray(b).tobytes()


def _json(value):
    return value.item() if isinstance(value, np.generic) else value


def _listed(rows: np.ndarray) -> list[int]:
    return [int(r) for r in rows[:LISTED_ROWS]]
