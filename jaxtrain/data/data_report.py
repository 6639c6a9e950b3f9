"""What data preparation did, as ``data_report.json`` and a readable ``data_report.md``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

SHOWN_ROWS = 10  # the markdown lists this many rows per finding; the JSON lists more


@dataclass(frozen=True)
class DataReport:
    """Rows in and out of every step of preparation, and what each step found.

    ``steps``: one record per cleaning rule in order (``rule``, ``action``, ``found``,
    ``rows_in``, ``rows_out``, ``rows`` and rule-specific details), then ``unknown_categories``
    and ``label_errors`` after the split. ``missing``: missing cells per column and how they
    were handled. ``label_suspects``: likely label errors in the training split (row, given,
    predicted, margin). ``class_balance``: examples per class per split. ``leakage``: examples
    shared between splits. Everything is JSON-ready.
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

    def step(self, rule: str) -> dict:
        """The record of step ``rule`` (e.g. ``"duplicates"``); KeyError if it did not run."""
        for record in self.steps:
            if record["rule"] == rule:
                return record
        raise KeyError(rule)

    def to_dict(self) -> dict:
        return asdict(self)


def write_data_report(run_dir: str | Path, report: DataReport) -> None:
    """Write ``data_report.json`` and ``data_report.md`` into ``run_dir``."""
    run_dir = Path(run_dir)
    (run_dir / "data_report.json").write_text(json.dumps(report.to_dict(), indent=2))
    (run_dir / "data_report.md").write_text(render_markdown(report))


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
    elif report.leakage["found"]:
        for pair, detail in report.leakage["pairs"].items():
            shown = ", ".join(f"{a}={b}" for a, b in detail["rows"][:SHOWN_ROWS])
            out.append(f"- {pair}: {detail['examples']} shared example(s) (rows {shown})")
    else:
        out.append("No example sits in two splits.")
    return "\n".join(out) + "\n"


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
