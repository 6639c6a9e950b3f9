"""What data preparation did, as ``data_report.json`` and a readable ``data_report.md``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

SHOWN_ROWS = 10  # the markdown lists this many rows per finding; the JSON lists more
PROBABILITIES_FILE = "label_probabilities.npz"  # the label-error evidence, next to the report


@dataclass(frozen=True)
class DataReport:
    """Rows in and out of every step of preparation, and what each step found.

    ``steps``: one record per cleaning rule in order (``rule``, ``action``, ``found``,
    ``rows_in``, ``rows_out``, ``rows`` and rule-specific details), then ``unknown_categories``
    and ``label_errors`` after the split. ``missing``: missing cells per column and how they
    were handled. ``label_suspects``: likely label errors in the training split (row, given,
    predicted, margin). ``class_balance``: examples per class per split. ``leakage``: examples
    shared between splits. ``dropped``: the share of the training split the cleaning rules
    removed, in all and per rule (:func:`jaxtrain.data.clean.drop_summary`), with the cap.
    Everything is JSON-ready except ``label_evidence``: the arrays confident learning worked
    on (``rows``, ``labels``, ``probabilities``, ``class_names``), written beside the report as
    ``label_probabilities.npz`` (plain arrays: ``np.load(path, allow_pickle=False)``), so that
    ``confident_learning(probabilities, labels)`` re-derives the suspects.
    """

    name: str
    source: str
    task: str
    rows_in: int
    splits: dict[str, int]
    split_method: str
    steps: list[dict] = field(default_factory=list)
    missing: dict = field(default_factory=dict)
    label_suspects: list[dict] = field(default_factory=list)
    class_balance: dict[str, dict[str, int]] = field(default_factory=dict)
    class_weights: dict[str, float] | None = None
    leakage: dict = field(default_factory=dict)
    features: list[str] = field(default_factory=list)
    dropped: dict = field(default_factory=dict)
    label_evidence: dict[str, np.ndarray] | None = field(default=None, compare=False, repr=False)

    def step(self, rule: str) -> dict:
        """The record of step ``rule`` (e.g. ``"duplicates"``); KeyError if it did not run."""
        for record in self.steps:
            if record["rule"] == rule:
                return record
        raise KeyError(rule)

    def to_dict(self) -> dict:
        """The JSON form; ``label_evidence`` is named by its file, not inlined."""
        data = asdict(replace(self, label_evidence=None))
        del data["label_evidence"]
        if self.label_evidence is not None:
            data["label_probabilities"] = PROBABILITIES_FILE
        return data


def write_data_report(run_dir: str | Path, report: DataReport) -> None:
    """Write ``data_report.json`` and ``data_report.md`` into ``run_dir``, and the label-error
    evidence as ``label_probabilities.npz`` when there is some (each file to a temporary name
    first, then renamed, so a kill never leaves half a file)."""
    run_dir = Path(run_dir)
    if report.label_evidence is not None:
        temporary = run_dir / f".{PROBABILITIES_FILE}.tmp"
        with open(temporary, "wb") as handle:
            np.savez(handle, **report.label_evidence)
        temporary.replace(run_dir / PROBABILITIES_FILE)
    for name, text in (
        ("data_report.json", json.dumps(report.to_dict(), indent=2)),
        ("data_report.md", render_markdown(report)),
    ):
        temporary = run_dir / f".{name}.tmp"
        temporary.write_text(text)
        temporary.replace(run_dir / name)


def render_markdown(report: DataReport) -> str:
    """The report as Markdown: overview, one table row per step, then the details."""
    out = [
        f"# Data report: {report.name}",
        "",
        f"Source: `{report.source}` ({report.task}). Rows read: {report.rows_in}. "
        f"Split ({report.split_method}): "
        + ", ".join(f"{name} {size}" for name, size in report.splits.items())
        + ".",
        "",
        "## Steps",
        "",
        "| step | action | found | rows in | rows out |",
        "|---|---|---:|---:|---:|",
    ]
    for s in report.steps:
        out.append(
            f"| {s['rule']} | {s['action']} | {s['found']} | {s.get('rows_in', '')} "
            f"| {s.get('rows_out', '')} |"
        )
    if report.dropped.get("rules"):
        out += ["", _dropped_line(report.dropped)]
    out += ["", "## Findings", ""]
    for s in report.steps:
        if s["found"]:
            out.append(f"- **{s['rule']}** ({s['action']}): {s['found']} row(s)" + _detail(s))
    if not any(s["found"] for s in report.steps):
        out.append("- nothing found")
    if report.missing.get("columns"):
        out += ["", "## Missing values", "", "| column | missing | filled with |", "|---|---:|---|"]
        values = report.missing.get("values", {})
        for column, count in report.missing["columns"].items():
            fill = values.get(column, report.missing["action"])
            out.append(f"| {column} | {count} | {fill} |")
        if report.missing.get("indicators"):
            out.append(f"\nIndicator columns added for: {', '.join(report.missing['indicators'])}")
    if report.label_suspects:
        out += [
            "",
            f"## Label suspects ({len(report.label_suspects)})",
            "",
            "| row | given | predicted | margin |",
            "|---:|---|---|---:|",
        ]
        for s in report.label_suspects[:SHOWN_ROWS]:
            out.append(f"| {s['row']} | {s['given']} | {s['predicted']} | {s['margin']:.3f} |")
    if report.class_balance:
        classes = list(next(iter(report.class_balance.values())))
        out += ["", "## Class balance", "", "| split | " + " | ".join(classes) + " |"]
        out.append("|---|" + "---:|" * len(classes))
        for split, counts in report.class_balance.items():
            out.append(f"| {split} | " + " | ".join(str(counts[c]) for c in classes) + " |")
        if report.class_weights:
            weights = ", ".join(f"{k}: {v:.3f}" for k, v in report.class_weights.items())
            out.append(f"\nClass weights (balanced): {weights}")
    out += ["", "## Leakage", ""]
    if not report.leakage or report.leakage.get("action") == "off":
        out.append("Not checked (data.prepare.leakage: off).")
    elif report.leakage["found"] and "shingle_words" in report.leakage:  # text passages
        words = report.leakage["shingle_words"]
        for pair, detail in report.leakage["pairs"].items():
            first, second = pair.split("/")
            out.append(
                f"- {pair}: {detail['passages']} passage(s) of {second} share {words} words "
                f"with {first} ({detail['bytes']} bytes, {detail['share_of_bytes']:.1%} of "
                f"{second}); first: "
                + "; ".join(repr(e["start"][:50]) for e in detail["first"][:3])
            )
    elif report.leakage["found"]:
        for pair, detail in report.leakage["pairs"].items():
            shown = ", ".join(f"{a}={b}" for a, b in detail["rows"][:SHOWN_ROWS])
            out.append(f"- {pair}: {detail['examples']} shared example(s) (rows {shown})")
    elif "shingle_words" in report.leakage:
        words = report.leakage["shingle_words"]
        out.append(f"No held-out passage shares {words} words with an earlier split.")
    else:
        out.append("No example sits in two splits.")
    return "\n".join(out) + "\n"


def summary_lines(report: DataReport) -> list[str]:
    """A short account of what preparation changed and found, for a run's report.md: rows
    read and kept, each rule that found something, missing values, label suspects and any
    example shared between splits (the details stay in data_report.md)."""
    kept = sum(report.splits.values())
    lines = [f"- {report.rows_in} rows read, {kept} kept ({report.split_method} split); "
             "details in [data_report.md](data_report.md)"]  # fmt: skip
    for s in report.steps:
        if s["found"]:
            lines.append(f"- **{s['rule']}** ({s['action']}): {s['found']} row(s)")
    if report.dropped.get("rules"):
        lines.append("- " + _dropped_line(report.dropped))
    if report.missing.get("columns"):
        total = sum(report.missing["columns"].values())
        lines.append(f"- missing values: {total} cell(s) ({report.missing['action']})")
    if report.label_suspects:
        lines.append(f"- likely label errors: {len(report.label_suspects)}")
    if report.leakage.get("found") and "shingle_words" in report.leakage:
        lines.append(
            f"- **leakage**: {report.leakage['found']} held-out passage(s) share "
            f"{report.leakage['shingle_words']} words with an earlier split"
        )
    elif report.leakage.get("found"):
        shared = sum(d["examples"] for d in report.leakage["pairs"].values())
        lines.append(f"- **leakage**: {shared} example(s) sit in two splits")
    return lines


def _dropped_line(dropped: dict) -> str:
    rules = ", ".join(
        f"{rule} {r['share']:.1%} ({r['dropped']} rows)" for rule, r in dropped["rules"].items()
    )
    cap = dropped.get("max_drop_fraction")
    limit = f" (cap: data.prepare.max_drop_fraction = {cap:g})" if cap is not None else ""
    return f"**Dropped {dropped['share']:.1%} of the training split**{limit}: {rules}."


def _detail(record: dict) -> str:
    parts = []
    if record.get("columns"):
        parts.append(", ".join(f"{k}: {v}" for k, v in record["columns"].items()))
    if record.get("different_label"):
        parts.append(f"{record['different_label']} with a different label")
    rows = record.get("rows", [])[:SHOWN_ROWS]
    if rows:
        more = " ..." if record["found"] > len(rows) else ""
        parts.append("rows " + ", ".join(str(r) for r in rows) + more)
    return " (" + "; ".join(parts) + ")" if parts else ""
