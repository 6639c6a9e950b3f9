"""A finished run's outputs: ``metrics.json``, plots and ``report.md``, for every family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jaxtrain.config import Config, config_to_dict
from jaxtrain.data import PreparedData
from jaxtrain.data.text import unigram_bits_per_byte
from jaxtrain.logging import plot_confusion_matrix, plot_learning_curves, read_metrics, write_report
from jaxtrain.train.evaluate import scalars


def baselines(data: PreparedData) -> dict[str, float]:
    """Trivial predictors a model must beat, on the test split (fitted on train).

    Language models: the add-one unigram byte model's ``bits_per_byte``.
    """
    if data.task == "language_model":
        train, test = data.splits["train"].labels, data.splits["test"].labels
        return {"unigram_bits_per_byte": unigram_bits_per_byte(train, test)}
    return {}


def write_outputs(
    config: Config,
    run_dir: Path,
    data: PreparedData,
    *,
    num_params: int,
    validation: dict[str, Any],
    test: dict[str, Any],
    training: dict[str, Any],
    monitor: str,
) -> dict[str, Any]:
    """Write ``metrics.json``, the plots and ``report.md``; returns the metrics.json content.

    ``training`` holds what the run measured (steps, times, ``best_step``); ``monitor`` says
    how the evaluated step was chosen.
    """
    summary = {
        "name": config.name,
        "task": data.task,
        "best_step": training.get("best_step"),
        "monitor": monitor,
        "validation": validation,
        "test": test,
        "baselines": baselines(data),
        "training": training,
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    plots = {}
    logged = read_metrics(run_dir)
    if logged:
        path = plot_learning_curves(logged, run_dir / "learning_curves.png")
        plots["learning_curves"] = path.name
    if "confusion_matrix" in test:
        plots["confusion_matrix"] = plot_confusion_matrix(
            test["confusion_matrix"], data.class_names, run_dir / "confusion_matrix.png"
        ).name
    environment_file = run_dir / "environment.json"
    write_report(
        run_dir,
        {
            "name": config.name,
            "config": config_to_dict(config),
            "dataset": {
                "name": data.name,
                "task": data.task,
                "num_classes": data.num_classes if data.task == "classification" else None,
                "class_names": list(data.class_names),
                "sizes": data.sizes(),
            },
            "model": {"name": config.model.name, "num_params": num_params},
            "training": training,
            "validation": scalars(validation),
            "test": {**test, **{f"baseline {k}": v for k, v in summary["baselines"].items()}},
            "plots": plots,
            "environment": json.loads(environment_file.read_text())
            if environment_file.exists()
            else {},
        },
    )
    return summary
