"""``jaxtrain compare RUN_DIR...``: what differs between runs, and how well each did.

Each run directory (or each member of a sweep directory) becomes one row: the config keys
whose values differ between the rows (read from each run's resolved ``config.yaml``; a
sweep member's config is the sweep's with its settings applied), the best step, the
validation metrics at that step and the test metrics, each with its 95% bootstrap interval
where the run's analysis stage computed one (``metrics.json`` ``analysis.intervals``). One
figure draws every row's learning curves (training loss, and the monitored validation
metric) on shared axes. Nothing here imports JAX: comparing is reading files.
"""

from __future__ import annotations

import glob
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jaxtrain.config import strict_yaml
from jaxtrain.files import DamagedFile, read_json, write_json, write_text_atomic

HEADLINE = ("accuracy", "f1_macro", "loss", "r2", "rmse", "mae", "bits_per_byte", "roc_auc")
MEMBERS_FILE = "members.json"
_GLOB = set("*?[")


class CompareError(ValueError):
    """Nothing to compare, or a directory that is not a run (one line naming it)."""


@dataclass
class Row:
    """One compared run (or sweep member)."""

    label: str
    path: str
    config: dict[str, Any]  # flattened: dotted key -> value
    monitor: str | None = None  # the validation metric that chose the best step
    best_step: int | None = None
    validation: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, dict[str, float]] = field(default_factory=dict)  # test metric -> CI
    curves: dict[str, list[tuple[int, float | None]]] = field(default_factory=dict)
    status: str = "finished"


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories from the arguments: each as given, a glob (``runs/digits_cnn/*``,
    quoted so the shell leaves it), or a folder of runs (``runs/digits_cnn``: every run in
    it, oldest first). The order is kept; a path named twice counts once."""
    found: list[Path] = []
    for raw in paths:
        text = str(raw)
        if _GLOB & set(text) and not Path(text).exists():
            matches = sorted(glob.glob(text))
            if not matches:
                raise CompareError(f"{text}: the pattern matches nothing")
            candidates = [Path(m) for m in matches]
        else:
            candidates = [Path(text)]
        for path in candidates:
            if not path.is_dir():
                raise CompareError(f"{path}: not a directory")
            if (path / "config.yaml").is_file():
                found.append(path)
                continue
            runs = sorted(p for p in path.iterdir() if (p / "config.yaml").is_file())
            if not runs:
                raise CompareError(f"{path}: not a jaxtrain run directory (no config.yaml)")
            found += runs
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return [next(p for p in found if p.resolve() == u) for u in unique]


def load_rows(run_dirs: Sequence[Path]) -> list[Row]:
    """One :class:`Row` per run; a sweep directory gives one row per member."""
    rows: list[Row] = []
    for run_dir in run_dirs:
        config = _read_config(run_dir)
        if (run_dir / MEMBERS_FILE).is_file():
            rows += _member_rows(run_dir, config)
        else:
            rows.append(_run_row(run_dir, config))
    return rows


def differing_keys(rows: Sequence[Row]) -> list[str]:
    """The flattened config keys whose value is not the same in every row (a key missing
    from some rows differs), in the order the first row lists them."""
    keys = list(dict.fromkeys(k for row in rows for k in row.config))
    missing = object()
    return [
        k
        for k in keys
        if len({json.dumps(r.config.get(k, missing), default=repr) for r in rows}) > 1
    ]


def compare(paths: Sequence[str | Path], out_dir: str | Path | None = None) -> dict[str, Any]:
    """Compare the runs ``paths`` name (see :func:`expand_paths`); with ``out_dir`` write
    ``compare.md`` (the table), ``compare.json`` (every value) and ``compare.png`` (the
    learning curves) there. Returns ``{"keys", "rows", "table", "files"}``."""
    run_dirs = expand_paths(paths)
    rows = load_rows(run_dirs)
    if len(rows) < 2:
        raise CompareError(
            f"{', '.join(str(p) for p in paths)}: one run found; compare needs two or more"
        )
    keys = differing_keys(rows)
    for row in rows:
        row.label = _label(row, keys)
    table = markdown_table(rows, keys)
    files: dict[str, str] = {}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "compare.md", "\n".join(table) + "\n")
        write_json(
            out / "compare.json",
            {"keys": keys, "rows": [row.__dict__ for row in rows]},
        )
        plot_curves(rows, out / "compare.png")
        files = {name: str(out / name) for name in ("compare.md", "compare.json", "compare.png")}
    return {"keys": keys, "rows": rows, "table": table, "files": files}


compare_runs = compare  # the public name (``jaxtrain.compare`` is this module)


def markdown_table(rows: Sequence[Row], keys: Sequence[str]) -> list[str]:
    """The comparison as a markdown table: run, the differing keys, the best step, the
    validation metrics at it, the test metrics with their 95% bootstrap intervals."""
    monitors = list(dict.fromkeys(r.monitor for r in rows if r.monitor))
    validation = [m for m in [*monitors, *HEADLINE] if any(m in r.validation for r in rows)]
    validation = list(dict.fromkeys(validation))
    test = [m for m in HEADLINE if any(m in r.test for r in rows)]
    header = ["run", *keys, "best step", *(f"validation {m}" for m in validation)]
    header += [f"test {m}" for m in test]
    if any(r.status != "finished" for r in rows):
        header.append("status")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.label, *(_value(row.config.get(k)) for k in keys), _value(row.best_step)]
        cells += [_number(row.validation.get(m)) for m in validation]
        cells += [_with_interval(row.test.get(m), row.intervals.get(m)) for m in test]
        if "status" in header:
            cells.append(row.status)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def plot_curves(rows: Sequence[Row], path: Path) -> Path:
    """One figure: each row's training loss and monitored validation metric against step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = list(dict.fromkeys(name for row in rows for name in row.curves))
    fig = Figure(figsize=(5.5 * max(1, len(panels)), 4.0), layout="constrained")
    if not panels:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no logged metrics to draw", ha="center", va="center")
    for i, name in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), i)
        for row in rows:
            points = row.curves.get(name) or []
            if not points:
                continue
            steps = [s for s, _ in points]
            values = [math.nan if v is None else v for _, v in points]
            ax.plot(steps, values, label=row.label, marker="o" if len(points) < 30 else None,
                    markersize=3)  # fmt: skip
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=110)
    return path


# ---------------------------------------------------------------------------------------------


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    try:
        raw = strict_yaml.load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise CompareError(f"{path}: cannot read the run's config ({err})") from None
    except (yaml.YAMLError, strict_yaml.YAMLRefused) as err:
        raise CompareError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(raw, dict):
        raise CompareError(f"{path}: expected a mapping of sections")
    return raw


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves; an empty
    section stays as ``{}`` so that it still differs from a filled one."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _monitor_name(summary: Mapping[str, Any]) -> str | None:
    """``"validation accuracy (max)"`` -> ``"accuracy"``."""
    text = str(summary.get("monitor") or "")
    parts = text.split()
    return parts[1] if len(parts) >= 2 and parts[0] == "validation" else None


def _scalars(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in (metrics or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _run_row(run_dir: Path, config: dict[str, Any]) -> Row:
    row = Row(label=run_dir.name, path=str(run_dir), config=flatten(config))
    summary_path = run_dir / "metrics.json"
    if summary_path.is_file():
        try:
            summary = read_json(summary_path, "metrics.json")
        except DamagedFile as err:
            raise CompareError(str(err)) from None
        row.monitor = _monitor_name(summary)
        row.best_step = summary.get("best_step")
        row.validation = _scalars(summary.get("validation"))
        row.test = _scalars(summary.get("test"))
        row.intervals = dict((summary.get("analysis") or {}).get("intervals") or {})
    else:
        row.status = "not finished"
    row.curves = _logged_curves(run_dir, row.monitor)
    return row


def _logged_curves(run_dir: Path, monitor: str | None) -> dict[str, list]:
    from jaxtrain.logging.writers import read_metrics

    try:
        records = read_metrics(run_dir)
    except ValueError as err:
        raise CompareError(str(err)) from None
    curves: dict[str, list] = {}
    for split, metric in (("train", "loss"), ("validation", monitor or "loss")):
        points = [(int(r["step"]), r.get(metric)) for r in records
                  if r.get("split") == split and metric in r]  # fmt: skip
        if points:
            curves[f"{split} {metric}"] = sorted(points, key=lambda p: p[0])
    return curves


def _member_rows(sweep_dir: Path, config: dict[str, Any]) -> list[Row]:
    try:
        summary = read_json(sweep_dir / MEMBERS_FILE, MEMBERS_FILE)
    except DamagedFile as err:
        raise CompareError(str(err)) from None
    base = flatten({k: v for k, v in config.items() if k != "sweep"})
    metric, best = summary.get("metric"), summary.get("best") or {}
    rows = []
    for record in summary.get("members") or []:
        flat = dict(base)
        for key, value in (record.get("settings") or {}).items():
            if isinstance(value, Mapping):
                flat = {k: v for k, v in flat.items() if not k.startswith(key + ".")}
                flat.update(flatten(value, key + "."))
            else:
                flat[key] = value
        history = record.get("history") or []
        row = Row(
            label=f"member {record['member']}",
            path=f"{sweep_dir}#member{record['member']}",
            config=flat,
            monitor=metric,
            best_step=record.get("best_step"),
            validation={metric: record["best_value"]}
            if record.get("best_value") is not None
            else {},
            status=str(record.get("status", "finished")),
        )
        if record.get("member") == best.get("member"):
            row.test = _scalars(best.get("test"))
            row.status = "finished (best member)" if row.status == "finished" else row.status
        train = [(h["step"], h.get("train_loss")) for h in history if "train_loss" in h]
        validation = [(h["step"], h.get(f"validation_{metric}")) for h in history]
        row.curves = {"train loss": train, f"validation {metric}": validation}
        rows.append(row)
    return rows


def _label(row: Row, keys: Sequence[str]) -> str:
    if row.label.startswith("member "):
        return row.label
    shown = [f"{k.rsplit('.', 1)[-1]}={_value(row.config.get(k))}" for k in keys[:3]]
    return f"{row.label} ({', '.join(shown)})" if shown else row.label


def _value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str | int | bool):
        return str(value)
    return json.dumps(value, separators=(",", ":"), default=str)


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4f}"


def _with_interval(value: float | None, interval: Mapping[str, float] | None) -> str:
    text = _number(value)
    if value is not None and interval and {"low", "high"} <= set(interval):
        text += f" [{interval['low']:.4f}, {interval['high']:.4f}]"
    return text
