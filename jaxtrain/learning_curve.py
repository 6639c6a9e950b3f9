"""``jaxtrain learning-curve``: the same config trained on growing shares of the training split.

Each share is a seeded, stratified subsample (classes keep their proportions), trained and
evaluated as an ordinary run in its own sub-directory; the validation and test splits never
change, so the points differ only in how much training data the model saw. The result is a
table, a plot of the metric against training-set size, and a verdict on whether more data
would still help.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxtrain.config import Config
from jaxtrain.data import ArraySplit, DatasetError, PreparedData, stratified_split
from jaxtrain.files import read_json, write_json
from jaxtrain.logging.outputs import RunOutputs
from jaxtrain.logging.plots import plot_learning_curve_sizes
from jaxtrain.train import train_and_evaluate

DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)


def subsample(data: PreparedData, fraction: float, seed: int) -> PreparedData:
    """``data`` with its training split cut to ``fraction`` (stratified for classes, seeded);
    the held-out splits and the fitted statistics are untouched."""
    if fraction >= 1.0:
        return data
    train = data.splits["train"]
    strata = train.labels if data.task == "classification" else np.zeros(len(train), np.int32)
    kept = stratified_split(strata, {"dropped": 1.0 - fraction}, seed=seed)["train"]
    splits = {**data.splits, "train": ArraySplit(train.inputs[kept], train.labels[kept])}
    return dataclasses.replace(data, splits=splits)


def learning_curve(
    config: Config,
    run_dir: Path,
    data: PreparedData,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``config`` once per fraction under ``run_dir/fraction_<f>/``; write
    ``learning_curve.json``, ``learning_curve.png`` and ``report.md`` in ``run_dir``."""
    monitor = "accuracy" if data.task == "classification" else "loss"
    rows = []
    for fraction in sorted(fractions):
        subset = subsample(data, fraction, config.data.seed)
        size = len(subset.splits["train"])
        if size < config.data.batch_size:
            raise DatasetError(
                f"--fractions: {fraction} keeps {size} training examples, fewer than "
                f"data.batch_size={config.data.batch_size}"
            )
        child = run_dir / f"fraction_{fraction:g}"
        child.mkdir()
        result = train_and_evaluate(config, child, data=subset, progress=progress)
        summary = read_json(child / "metrics.json", "metrics.json")
        train_metrics = _final_train_metrics(child)
        rows.append(
            {
                "fraction": fraction,
                "train_examples": size,
                "train": train_metrics.get(monitor),
                "validation": summary["validation"][monitor],
                "test": result.test[monitor],
                "diagnosis": (summary.get("diagnosis") or {}).get("verdict"),
                "run_dir": child.name,
            }
        )
    sizes = [row["train_examples"] for row in rows]
    plot_learning_curve_sizes(
        sizes,
        {split: [row[split] for row in rows] for split in ("train", "validation")},
        monitor,
        run_dir / "learning_curve.png",
    )
    result = {"metric": monitor, "rows": rows, "verdict": _verdict(rows, monitor)}
    write_json(run_dir / "learning_curve.json", result)
    write_curve_report(run_dir, config.name, result)
    return result


def _final_train_metrics(run_dir: Path) -> dict[str, float]:
    from jaxtrain.logging import read_metrics

    train = [r for r in read_metrics(run_dir) if r.get("split") == "train"]
    return train[-1] if train else {}


def _verdict(rows: list[dict], metric: str) -> str:
    """More data helps while the validation metric still improves between the last two sizes
    by more than a point (accuracy) or 2% (loss)."""
    if len(rows) < 2:
        return "one size only: no trend"
    previous, last = rows[-2]["validation"], rows[-1]["validation"]
    gain = (last - previous) if metric == "accuracy" else (previous - last) / abs(previous)
    threshold = 0.01 if metric == "accuracy" else 0.02
    if gain > threshold:
        return (
            f"still improving: validation {metric} moved from {previous:.4f} to {last:.4f} "
            "over the last doubling or so of the data; more data should help"
        )
    return (
        f"flat: validation {metric} {previous:.4f} -> {last:.4f} over the last step; more data "
        "alone is unlikely to help much (look at capacity or regularisation)"
    )


def write_curve_report(run_dir: Path, name: str, result: dict) -> Path | None:
    """``report.md`` of a learning curve (through the run's one writer)."""
    metric = result["metric"]
    table = [
        f"| fraction | training examples | train {metric} | validation {metric} | "
        f"test {metric} | diagnosis |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        train = "n/a" if row["train"] is None else f"{row['train']:.4f}"
        table.append(
            f"| {row['fraction']:g} | {row['train_examples']} | {train} | "
            f"{row['validation']:.4f} | {row['test']:.4f} | {row['diagnosis']} |"
        )
    return RunOutputs(run_dir).report(
        {
            "name": f"{name} (learning curve)",
            "sections": {
                "Points (one run each, in its fraction_* folder)": table,
                "Verdict": [result["verdict"]],
            },
            "plots": {"learning_curve": "learning_curve.png"},
        }
    )
