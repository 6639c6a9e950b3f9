"""A sweep's outputs: one row per member (CSV and JSON), plots and ``report.md``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxtrain.config import Config, config_to_dict
from jaxtrain.files import write_json, write_text_atomic
from jaxtrain.logging import write_report

MEMBERS_CSV, MEMBERS_JSON = "members.csv", "members.json"


def write_results(run_dir: Path, config: Config, summary: Mapping[str, Any]) -> None:
    """``members.csv`` (settings, best validation metric, its step, step reached, status),
    ``members.json`` (the summary with every member's validation history), one plot of the
    best metric against each swept setting, the validation learning curves, ``report.md``."""
    metric, rows = summary["metric"], summary["members"]
    axes = list(config.sweep.axes)
    final = sorted({k for r in rows for k in r["hyperparams"]}) if config.sweep.pbt else []
    rounds = ["round"] if any("round" in r for r in rows) else []  # a search in rounds
    header = ["member", *rounds, "group", *axes, f"best_{metric}", "best_step", "step", "status"]
    header += [f"final_{k}" for k in final]
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(header)
    for r in rows:
        settings = [_cell(r["settings"].get(k)) for k in axes]
        writer.writerow(
            [
                r["member"],
                *(r.get("round") for _ in rounds),
                r.get("group"),
                *settings,
                r["best_value"],
                r["best_step"],
                r["step"],
                r["status"],
                *(r["hyperparams"].get(k) for k in final),
            ]
        )
    write_text_atomic(run_dir / MEMBERS_CSV, table.getvalue())
    write_json(run_dir / MEMBERS_JSON, summary)
    plots = {
        "metric_vs_settings": _plot_settings(rows, axes, metric, run_dir / "sweep_settings.png"),
        "learning_curves": _plot_curves(rows, metric, run_dir / "sweep_curves.png"),
    }
    sections = {}
    search = summary.get("search")
    if search:
        plots["search_progress"] = _plot_progress(search, metric, run_dir / "search_progress.png")
        if search.get("importance"):
            path = run_dir / "search_importance.png"
            plots["search_importance"] = _plot_importance(search["importance"], path)
        sections["What the search learned"] = search_lines(search, metric)
    best = summary["best"]
    ranked = sorted(
        (r for r in rows if r["best_value"] is not None),
        key=lambda r: r["best_value"],
        reverse=summary["mode"] == "max",
    )
    table = [
        "| rank | member | " + " | ".join(axes) + f" | best {metric} | best step | step | status |",
        "|" + "---|" * (len(axes) + 6),
    ]
    for rank, r in enumerate(ranked[:20], 1):
        cells = [_fmt(r["settings"][k]) if k in r["settings"] else "-" for k in axes]
        table.append(
            f"| {rank} | {r['member']} | "
            + " | ".join(cells)
            + f" | {r['best_value']:.4f} | {r['best_step']} | {r['step']} | {r['status']} |"
        )
    write_report(
        run_dir,
        {
            "name": f"{config.name} (sweep of {len(rows)} members)",
            "config": config_to_dict(config),
            "training": {
                "members": len(rows),
                "groups": summary["groups"],
                "best_member": best["member"],
                "best_step": best["step"],
                "wall_time_s": summary["wall_time_s"],
            },
            "validation": {k: v for k, v in best["validation"].items()},
            "test": None,
            "sections": {
                "Best member": [
                    f"Member {best['member']} with settings `{json.dumps(best['settings'])}`: "
                    f"validation {metric} {best['validation'][metric]:.4f} at step "
                    f"{best['step']}; test "
                    + ", ".join(
                        f"{k} {v:.4f}"
                        for k, v in best["test"].items()
                        if k in ("accuracy", "f1_macro", "loss", "r2", "rmse")
                    )
                    + ". Its checkpoint is in `best/` (`jaxtrain eval <sweep>/best`).",
                ],
                f"Members (top {min(20, len(ranked))} by validation {metric})": table,
                **sections,
            },
            "plots": {name: path.name for name, path in plots.items()},
        },
    )


def _cell(value: Any) -> Any:
    """A CSV cell: lists as JSON, a setting the member does not have (a conditional axis
    whose condition it does not meet) empty."""
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, list | dict) else value


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)
    return path


def _plot_settings(rows, axes, metric, path: Path) -> Path:
    """The best validation metric of each member against each swept setting."""
    fig = Figure(figsize=(4 * len(axes), 3.2), layout="constrained")
    for i, key in enumerate(axes):
        ax = fig.add_subplot(1, len(axes), i + 1)
        shown = [r for r in rows if r["best_value"] is not None and key in r["settings"]]
        values = [r["settings"][key] for r in shown]
        scores = [r["best_value"] for r in shown]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if numeric:
            x = np.asarray(values, np.float64)
            ax.scatter(x, scores, s=14)
            if np.all(x > 0) and x.max() / max(x.min(), 1e-300) >= 100:
                ax.set_xscale("log")
        else:
            labels = sorted({json.dumps(v) for v in values})
            ax.scatter([labels.index(json.dumps(v)) for v in values], scores, s=14)
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(key)
        ax.set_ylabel(f"best validation {metric}")
    return _save(fig, path)


def _plot_curves(rows, metric, path: Path) -> Path:
    """Validation metric against step, one line per member (the best one highlighted)."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for r in rows:
        steps = [h["step"] for h in r["history"]]
        values = [h.get(f"validation_{metric}") for h in r["history"]]
        ax.plot(steps, values, linewidth=0.8, alpha=0.5)
    ax.set_xlabel("step")
    ax.set_ylabel(f"validation {metric}")
    return _save(fig, path)


def search_lines(search: Mapping[str, Any], metric: str) -> list[str]:
    """The report's account of a search in rounds: where the study is, the best value by
    trials and wall time beside random search, and each hyperparameter's importance."""
    study = search["study"]
    curve = search["best_so_far"]
    lines = [
        f"{search['method']} (Optuna) asked {search['rounds']} rounds of {search['batch']} "
        f"trials ({search['trials']}); each round trained as one vmapped population. The "
        f"study is `study.db`: `optuna.load_study(study_name={study['name']!r}, "
        f"storage='sqlite:///<this directory>/study.db')`.",
        "",
        f"Best validation {metric} after {len(curve)} trials: {_fmt(curve[-1]['best'])} "
        f"({search['wall_time_s']:.1f} s of training rounds).",
    ]
    baseline = search.get("baseline")
    if baseline:
        lines.append(
            f"Random search on the same budget (`{baseline['run_dir']}/`): "
            f"{_fmt(baseline['best'])} ({baseline['wall_time_s']:.1f} s)."
        )
    lines += ["", "| trials | " + search["method"] + (" | random |" if baseline else " |")]
    lines.append("|---|---|" + ("---|" if baseline else ""))
    rounds_end = [p for i, p in enumerate(curve) if (i + 1) % search["batch"] == 0]
    for point in rounds_end or curve[-1:]:
        row = f"| {point['trial']} | {_fmt(point['best'])} |"
        if baseline:
            other = baseline["best_so_far"][point["trial"] - 1]["best"]
            row += f" {_fmt(other)} |"
        lines.append(row)
    lines += ["", "Importance: " + search.get("importance_note", "not measured")]
    if search.get("importance"):
        lines += ["", "| hyperparameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in search["importance"].items()]
    return lines


def _plot_progress(search: Mapping[str, Any], metric: str, path: Path) -> Path:
    """Best validation metric so far against trials and against wall time, beside random
    search on the same budget when it ran."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    by_trial, by_time = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    curves = [(search["method"], search["best_so_far"])]
    if search.get("baseline"):
        curves.append(("random", search["baseline"]["best_so_far"]))
    for name, curve in curves:
        points = [p for p in curve if p["best"] is not None]
        by_trial.step([p["trial"] for p in points], [p["best"] for p in points], where="post",
                      label=name)  # fmt: skip
        timed = [p for p in points if p["wall_time_s"] is not None]
        by_time.step([p["wall_time_s"] for p in timed], [p["best"] for p in timed], where="post",
                     marker="o", markersize=3, label=name)  # fmt: skip
    by_trial.set_xlabel("trials")
    by_time.set_xlabel("wall time of the rounds (s; all trials of a round end together)")
    by_time.set_xlim(left=0)
    for ax in (by_trial, by_time):
        ax.set_ylabel(f"best validation {metric} so far")
        ax.legend()
    return _save(fig, path)


def _plot_importance(importance: Mapping[str, float], path: Path) -> Path:
    """Each hyperparameter's importance (fANOVA) as a horizontal bar."""
    names = list(importance)[::-1]
    fig = Figure(figsize=(6, 0.5 * len(names) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(names, [importance[n] for n in names])
    ax.set_xlabel("importance (fANOVA, share of the variance explained)")
    return _save(fig, path)
