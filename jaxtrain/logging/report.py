"""A run's ``report.md``: what was trained, on what, how well, and where the plots are."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPORT_FILE = "report.md"
_NON_SCALAR_TEST_KEYS = ("per_class", "confusion_matrix")


def _cell(value: Any) -> str:
    """Formats a table cell: floats with 4 decimals, ints as ints, ``None`` as ``n/a``."""
    if value is None:
        return "n/a"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):  # metrics.json holds null there (strict JSON)
            return f"{float(value)} (not finite; null in metrics.json)"
        return f"{float(value):.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "n/a"
    minutes, secs = divmod(float(seconds), 60.0)
    hours, minutes = divmod(int(minutes), 60)
    clock = f"{hours}h {minutes:02d}m {secs:04.1f}s" if hours else f"{minutes}m {secs:04.1f}s"
    return f"{seconds:.1f} s ({clock})"


def _plain(value: Any) -> Any:
    """Converts a config tree to what ``yaml.safe_dump`` accepts (tuples, paths, NumPy)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _summary_section(summary: Mapping[str, Any]) -> list[str]:
    dataset = summary.get("dataset") or {}
    model = summary.get("model") or {}
    training = summary.get("training") or {}
    sizes = dataset.get("sizes") or {}
    params = model.get("num_params")
    epochs, rate = training.get("epochs"), training.get("examples_per_s")
    rows: list[tuple[str, Any]] = [
        ("dataset", dataset.get("name")),
        ("classes", dataset.get("num_classes")),
        ("examples", ", ".join(f"{split} {n}" for split, n in sizes.items()) or None),
        ("model", model.get("name")),
        ("parameters", f"{params:,}" if isinstance(params, int) else params),
        ("steps", training.get("steps")),
        ("epochs", f"{epochs:.2f}" if isinstance(epochs, int | float) else epochs),
        ("wall time (training loop)", _duration(training.get("wall_time_s"))),
        ("first step (compilation)", _duration(training.get("compile_s"))),
        ("examples/s (after step 1)", f"{rate:,.1f}" if isinstance(rate, int | float) else rate),
        ("best step", training.get("best_step")),
    ]
    if training.get("resumed_from") is not None:
        rows.append(("resumed from step", training["resumed_from"]))
    for key, label in (("members", "members"), ("groups", "programs (groups)"),
                       ("best_member", "best member")):  # fmt: skip
        if training.get(key) is not None:
            rows.append((label, training[key]))
    known = [(item, value) for item, value in rows if value not in (None, "n/a")]
    return ["## Summary", "", *_table(["item", "value"], known)]


def _entry(per_class: Mapping[str, Sequence[Any]], column: str, i: int) -> Any:
    """Returns ``per_class[column][i]`` (``None`` if absent); a support count as an int."""
    values = per_class[column]
    value = values[i] if i < len(values) else None
    if column == "support" and value is not None and float(value).is_integer():
        return int(value)
    return value


def _test_section(test: Mapping[str, Any], class_names: Sequence[str]) -> list[str]:
    lines = ["## Test metrics", ""]
    scalars = [(k, v) for k, v in test.items() if k not in _NON_SCALAR_TEST_KEYS and np.isscalar(v)]
    lines += _table(["metric", "value"], scalars) if scalars else ["No test metrics.", ""]
    per_class = test.get("per_class") or {}
    columns = [c for c in ("precision", "recall", "f1", "support") if c in per_class]
    if columns:
        k = max(len(per_class[c]) for c in columns)
        names = [class_names[i] if i < len(class_names) else str(i) for i in range(k)]
        rows = [[names[i], *(_entry(per_class, c, i) for c in columns)] for i in range(k)]
        lines += ["### Per class", "", *_table(["class", *columns], rows)]
    return lines


def _environment_value(value: Any) -> str:
    """One environment entry on one line: lists joined, mappings as ``key value; ...``."""
    if value is None:
        return "n/a"
    if isinstance(value, Mapping):
        return "; ".join(f"{k} {_environment_value(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "none"
    return str(value) if value != "" else "none"


def write_report(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    """Writes ``run_dir/report.md``, a markdown report of one run, and returns its path.

    ``summary`` holds ``name``, ``config``, ``dataset``, ``model``, ``training``,
    ``validation``, ``test``, ``sections`` (title -> markdown lines, shown after the
    metrics), ``plots`` and ``environment`` (see the training runner); any of
    them may be missing, and its section is then left out. The report has a summary table, the
    test metrics (4 decimals) with a per-class table, the validation metrics at the best step,
    the plots as image links relative to ``run_dir``, the resolved config as YAML and the
    environment. The file is replaced atomically.
    """
    run_dir = Path(run_dir)
    dataset = summary.get("dataset") or {}
    class_names = [str(n) for n in dataset.get("class_names") or []]
    lines = [f"# Run report: {summary.get('name', run_dir.name)}", ""]
    lines += _summary_section(summary)

    if summary.get("test"):
        lines += _test_section(summary["test"], class_names)
    if summary.get("validation"):
        best = (summary.get("training") or {}).get("best_step")
        heading = "## Validation metrics" + (f" (best step {best})" if best is not None else "")
        lines += [heading, "", *_table(["metric", "value"], list(summary["validation"].items()))]
    for title, body in (summary.get("sections") or {}).items():
        lines += [f"## {title}", "", *body, ""]
    if summary.get("plots"):
        lines += ["## Plots", ""]
        for name, filename in summary["plots"].items():
            title = str(name).replace("_", " ")
            lines += [f"### {title.capitalize()}", "", f"![{title}]({filename})", ""]
    if summary.get("config") is not None:
        config = yaml.safe_dump(_plain(summary["config"]), sort_keys=False).rstrip("\n")
        lines += ["## Configuration (resolved)", "", "```yaml", config, "```", ""]
    if summary.get("environment"):
        lines += ["## Environment", ""]
        for key, value in summary["environment"].items():
            lines.append(f"- **{key}**: {_environment_value(value)}")
        lines.append("")

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / REPORT_FILE
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{REPORT_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
