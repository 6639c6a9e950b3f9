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
from jaxtrain.logging.outputs import RunOutputs

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
    best = summary["best"]
    plots = {
        "metric_vs_settings": _save(
            settings_figure(rows, config.sweep.axes, metric, best["member"]),
            run_dir / "sweep_settings.png",
        ),
        "learning_curves": _save(
            curves_figure(rows, metric, best["member"]), run_dir / "sweep_curves.png"
        ),
    }
    sections = {}
    search = summary.get("search")
    if search:
        plots["search_progress"] = _plot_progress(search, metric, run_dir / "search_progress.png")
        if search.get("importance"):
            path = run_dir / "search_importance.png"
            plots["search_importance"] = _plot_importance(search["importance"], path)
        sections["What the search learned"] = search_lines(search, metric)
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
    with RunOutputs(run_dir, config=config) as outputs:
        outputs.members(rows, metric)
        headline = {f"validation_{k}": v for k, v in best["validation"].items()}
        headline.update({f"test_{k}": v for k, v in scalars_of(best["test"]).items()})
        outputs.metrics(best["step"] or 0, "best", headline)
        outputs.report(
            {
                "name": f"{config.name} (sweep of {len(rows)} members)",
                "config": config_to_dict(config),
                **describe(run_dir, config),
                "training": {
                    "steps": max((r["step"] for r in rows), default=None),
                    "epochs": config.train.epochs,
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


def scalars_of(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


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
    fig.savefig(path, format="png", dpi=110)
    return path


def describe(run_dir: Path, config: Config) -> dict[str, Any]:
    """The report's ``dataset`` and ``model`` entries for a sweep: the data as the best
    member saw it (its data seed; the sizes of each split, the classes) and its model's
    parameter count (from the shapes alone: nothing is trained or restored)."""
    import jax

    from jaxtrain.config import load_config
    from jaxtrain.data import prepare_data
    from jaxtrain.models import build_model, is_fitted
    from jaxtrain.train.optim import build_optimizer
    from jaxtrain.train.state import count_params, make_init

    best_config = run_dir / "best" / "config.yaml"
    member = load_config(best_config) if best_config.is_file() else config
    data = prepare_data(member.data)
    dataset = {
        "name": data.name,
        "task": data.task,
        "num_classes": data.num_classes if data.task == "classification" else None,
        "class_names": list(data.class_names),
        "sizes": data.sizes(),
    }
    params = None
    if not is_fitted(member.model):
        model = build_model(member.model, data.num_outputs, data.input_shape)
        init = make_init(model, build_optimizer(member.optimizer, 1), data.input_shape,
                         data.splits["train"].inputs.dtype)  # fmt: skip
        params = count_params(jax.eval_shape(init, jax.random.key(0)).params)
    return {"dataset": dataset, "model": {"name": member.model.name, "num_params": params}}


def _log_scale(key: str, axis: Any, values: list[float]) -> bool:
    """Log for a ``log_uniform`` axis; linear for ``uniform``/``int_uniform``; for a list of
    values, log when they are positive and span two decades or more (a grid such as
    ``[1e-4, 1e-3, 1e-2]``)."""
    declared = getattr(axis, "distribution", None)
    if declared is not None:
        return declared == "log_uniform"
    x = np.asarray(values, np.float64)
    return bool(len(x)) and bool(np.all(x > 0)) and x.max() / x.min() >= 100


def settings_figure(rows, axes: Mapping[str, Any], metric: str, best: int | None) -> Figure:
    """The best validation metric of each member against each swept setting: members that
    ran to the end and members stopped early (halving, divergence) in the legend, the best
    member marked; log axes where the search space declares ``log_uniform``."""
    keys = list(axes)
    fig = Figure(figsize=(4.2 * len(keys), 3.4), layout="constrained")
    scored = [r for r in rows if r["best_value"] is not None]
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        here = [r for r in scored if key in r["settings"]]  # a conditional axis: some lack it
        values = [r["settings"][key] for r in here]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if numeric:
            position = {id(r): float(r["settings"][key]) for r in here}
            if _log_scale(key, axes[key], values):
                ax.set_xscale("log")
        else:
            labels = sorted({json.dumps(v) for v in values})
            position = {id(r): labels.index(json.dumps(r["settings"][key])) for r in here}
            ax.set_xticks(range(len(labels)), labels)
        groups = {
            "ran to the end": [r for r in here if r["status"] == "finished"],
            "stopped early": [r for r in here if r["status"] != "finished"],
        }
        for (label, members), style in zip(groups.items(), ({"c": "tab:blue", "marker": "o"},
                                                             {"c": "tab:grey", "marker": "x"}),
                                           strict=True):  # fmt: skip
            if members:
                ax.scatter([position[id(r)] for r in members], [r["best_value"] for r in members],
                           s=16, label=label, **style)  # fmt: skip
        chosen = [r for r in here if r["member"] == best]
        if chosen:
            ax.scatter([position[id(chosen[0])]], [chosen[0]["best_value"]], s=140,
                       marker="*", c="tab:red", zorder=3, label=f"best: member {best}")  # fmt: skip
        ax.set_xlabel(key + (" (log)" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel(f"best validation {metric}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def curves_figure(rows, metric: str, best: int | None) -> Figure:
    """Validation metric against step, one line per member: the best member highlighted,
    members stopped early dashed."""
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    labelled = set()
    for r in rows:
        steps = [h["step"] for h in r["history"]]
        values = [h.get(f"validation_{metric}") for h in r["history"]]
        values = [np.nan if v is None else v for v in values]
        if r["member"] == best:
            continue
        kind = "ran to the end" if r["status"] == "finished" else "stopped early"
        label = None if kind in labelled else f"other members ({kind})"
        labelled.add(kind)
        ax.plot(steps, values, linewidth=0.8, alpha=0.5, color="tab:blue" if kind ==
                "ran to the end" else "tab:grey", linestyle="-" if kind == "ran to the end"
                else "--", label=label)  # fmt: skip
    for r in rows:
        if r["member"] == best:
            steps = [h["step"] for h in r["history"]]
            values = [h.get(f"validation_{metric}") for h in r["history"]]
            ax.plot(steps, [np.nan if v is None else v for v in values], linewidth=2.2,
                    color="tab:red", label=f"best: member {best}", zorder=3)  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel(f"validation {metric}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


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
