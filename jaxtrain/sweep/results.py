"""A sweep's outputs: one row per member (CSV and JSON), plots and ``report.md``."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxtrain.config import Config, config_to_dict
from jaxtrain.logging.outputs import RunOutputs

MEMBERS_CSV, MEMBERS_JSON = "members.csv", "members.json"


def write_results(run_dir: Path, config: Config, summary: Mapping[str, Any]) -> None:
    """``members.csv`` (settings, best validation metric, its step, step reached, status),
    ``members.json`` (the summary with every member's validation history), one plot of the
    best metric against each swept setting, the validation learning curves, ``report.md``."""
    metric, rows = summary["metric"], summary["members"]
    axes = list(config.sweep.axes)
    final = sorted({k for r in rows for k in r["hyperparams"]}) if config.sweep.pbt else []
    header = ["member", "group", *axes, f"best_{metric}", "best_step", "step", "status"]
    header += [f"final_{k}" for k in final]
    with (run_dir / MEMBERS_CSV).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in rows:
            settings = [
                json.dumps(r["settings"][k])
                if isinstance(r["settings"][k], list)
                else r["settings"][k]
                for k in axes
            ]
            writer.writerow(
                [
                    r["member"],
                    r["group"],
                    *settings,
                    r["best_value"],
                    r["best_step"],
                    r["step"],
                    r["status"],
                    *(r["hyperparams"].get(k) for k in final),
                ]
            )
    (run_dir / MEMBERS_JSON).write_text(json.dumps(summary, indent=2, default=str))
    plots = {
        "metric_vs_settings": _plot_settings(rows, axes, metric, run_dir / "sweep_settings.png"),
        "learning_curves": _plot_curves(rows, metric, run_dir / "sweep_curves.png"),
    }
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
        cells = [_fmt(r["settings"][k]) for k in axes]
        table.append(
            f"| {rank} | {r['member']} | "
            + " | ".join(cells)
            + f" | {r['best_value']:.4f} | {r['best_step']} | {r['step']} | {r['status']} |"
        )
    with RunOutputs(run_dir, config=config) as outputs:
        outputs.members(rows, metric)
        headline = {f"validation_{k}": v for k, v in best["validation"].items()}
        headline.update({f"test_{k}": v for k, v in scalars_of(best["test"]).items()})
        outputs.metrics(best["step"] or 0, "best", headline)
        outputs.report(
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
                },
                "plots": {name: path.name for name, path in plots.items()},
            },
        )


def scalars_of(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


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
        values = [r["settings"][key] for r in rows if r["best_value"] is not None]
        scores = [r["best_value"] for r in rows if r["best_value"] is not None]
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
