"""``jaxtrain learning-curve``: the same config trained on growing shares of the training split.

Each share is a seeded, stratified subsample (classes keep their proportions), trained and
evaluated as an ordinary run in its own sub-directory; the validation and test splits never
change, so the points differ only in how much training data the model saw. Two options make
the curve answer "would more data help?" rather than restate the noise:

- ``steps``: every point trains for the same number of steps (a fixed compute budget), not
  the same number of epochs (where a small share also means few updates);
- ``seeds``: every point is trained ``seeds`` times, each with its own initialisation
  (``seed + s``) and its own subsample (``data.seed + s``); the table, the plot and the
  verdict then carry the mean and a 95% t-interval over the seeds.

The result is a table, a plot of the metric against training-set size (with the intervals
as bands), and a verdict that calls a gain real only when it is larger than its
uncertainty.
"""

from __future__ import annotations

import dataclasses
import math
import sys
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
CONFIDENCE = 0.95


def subsample(data: PreparedData, fraction: float, seed: int) -> PreparedData:
    """``data`` with its training split cut to ``fraction`` (stratified for classes, seeded);
    the held-out splits and the fitted statistics are untouched."""
    if fraction >= 1.0:
        return data
    train = data.splits["train"]
    strata = train.labels if data.task == "classification" else np.zeros(len(train), np.int32)
    kept = stratified_split(strata, {"dropped": 1.0 - fraction}, seed=seed)["train"]
    weights = None if train.weights is None else train.weights[kept]
    splits = {**data.splits, "train": ArraySplit(train.inputs[kept], train.labels[kept], weights)}
    return dataclasses.replace(data, splits=splits)


def interval(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> tuple[float, float] | None:
    """The two-sided ``confidence`` t-interval of the mean of ``values`` (None for fewer
    than two values): ``mean +- t_{(1+c)/2, n-1} * sd / sqrt(n)``, clipped to ``bounds``
    (an accuracy's mean lies in [0, 1])."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
    if len(x) < 2:
        return None
    from scipy import stats

    half = stats.t.ppf((1 + confidence) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    low, high = max(x.mean() - half, bounds[0]), min(x.mean() + half, bounds[1])
    return float(low), float(high)


def learning_curve(
    config: Config,
    run_dir: Path,
    data: PreparedData,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    progress: bool = False,
    steps: int | None = None,
    seeds: int = 1,
) -> dict[str, Any]:
    """Train ``config`` once per fraction and seed under ``run_dir/fraction_<f>/`` (with
    ``seeds > 1``: ``fraction_<f>_seed_<s>/``); write ``learning_curve.json``,
    ``learning_curve.png`` and ``report.md`` in ``run_dir``. ``steps``: the same number of
    training steps at every fraction (default: ``train.epochs`` over each share)."""
    monitor = "accuracy" if data.task == "classification" else "loss"
    outputs = RunOutputs(run_dir, config=config)
    outputs.start()  # the points' tracked runs nest under this one
    rows = []
    points = [(f, s) for f in sorted(fractions) for s in range(seeds)]
    with outputs:
        for fraction in sorted(fractions):
            runs = []
            for seed in range(seeds):
                subset = subsample(data, fraction, config.data.seed + seed)
                size = len(subset.splits["train"])
                if size < config.data.batch_size:
                    raise DatasetError(
                        f"--fractions: {fraction} keeps {size} training examples, fewer than "
                        f"data.batch_size={config.data.batch_size}"
                    )
                name = f"fraction_{fraction:g}" + (f"_seed_{seed}" if seeds > 1 else "")
                child = run_dir / name
                child.mkdir()
                point = _point_config(config, seed, steps, size)
                if progress:
                    index = points.index((fraction, seed)) + 1
                    print(f"jaxtrain: point {index}/{len(points)}: fraction {fraction:g}, seed "
                          f"{seed} ({size} training examples) in {child}", file=sys.stderr,
                          flush=True)  # fmt: skip
                result = train_and_evaluate(point, child, data=subset, progress=progress,
                                            total_steps=steps)  # fmt: skip
                summary = read_json(child / "metrics.json", "metrics.json")
                runs.append(
                    {
                        "seed": seed,
                        "train": _final_train_metrics(child).get(monitor),
                        "validation": summary["validation"][monitor],
                        "test": result.test[monitor],
                        "steps": result.step,
                        "diagnosis": (summary.get("diagnosis") or {}).get("verdict"),
                        "run_dir": child.name,
                    }
                )
            rows.append(_row(fraction, size, runs, monitor))
        sizes = [row["train_examples"] for row in rows]
        bands = {split: [row.get(f"{split}_interval") for row in rows]
                 for split in ("train", "validation")}  # fmt: skip
        plot_learning_curve_sizes(
            sizes,
            {split: [row[split] for row in rows] for split in ("train", "validation")},
            monitor,
            run_dir / "learning_curve.png",
            intervals=bands if seeds > 1 else None,
            title_note=f"{steps} steps each" if steps else None,
        )
        result = {
            "metric": monitor,
            "steps": steps,
            "seeds": seeds,
            "rows": rows,
            "verdict": verdict(rows, monitor),
        }
        write_json(run_dir / "learning_curve.json", result)
        write_curve_report(run_dir, config, result, outputs)
    return result


def _point_config(config: Config, seed: int, steps: int | None, size: int) -> Config:
    """The config one point trains: its init seed, and with a step budget enough epochs
    for the stream to hold ``steps`` batches (the run stops at ``steps`` exactly)."""
    train = config.train
    if steps is not None:
        epochs = max(1, math.ceil(steps * config.data.batch_size / size))
        train = dataclasses.replace(train, epochs=epochs)
    return dataclasses.replace(config, seed=config.seed + seed, train=train)


def _row(fraction: float, size: int, runs: list[dict], metric: str) -> dict[str, Any]:
    """One fraction: the mean over its seeds and, with two or more, the t-intervals."""
    row: dict[str, Any] = {"fraction": fraction, "train_examples": size}
    bounds = (0.0, 1.0) if metric == "accuracy" else (0.0, math.inf)  # a loss is >= 0
    for split in ("train", "validation", "test"):
        values = [r[split] for r in runs if r[split] is not None]
        row[split] = float(np.mean(values)) if values else None
        row[f"{split}_interval"] = interval(values, bounds=bounds)
    row["diagnosis"] = runs[0]["diagnosis"] if len(runs) == 1 else _most_common(runs)
    row["run_dir"] = runs[0]["run_dir"]
    row["steps"] = runs[0]["steps"]
    row["runs"] = runs
    return row


def _most_common(runs: list[dict]) -> str | None:
    verdicts = [r["diagnosis"] for r in runs if r["diagnosis"]]
    if not verdicts:
        return None
    top = max(set(verdicts), key=verdicts.count)
    return f"{top} ({verdicts.count(top)}/{len(runs)} seeds)"


def _final_train_metrics(run_dir: Path) -> dict[str, float]:
    from jaxtrain.logging import read_metrics

    train = [r for r in read_metrics(run_dir) if r.get("split") == "train"]
    return train[-1] if train else {}


def verdict(rows: list[dict], metric: str) -> str:
    """Whether more data still helps, from the last two sizes.

    The gain is the validation metric's change (accuracy: points; loss: relative). Below a
    point (accuracy) or 2% (loss) the curve is flat. Above it, with intervals (two or more
    seeds per point), the gain counts only when the two intervals do not overlap;
    otherwise the verdict says the difference is within the noise."""
    if len(rows) < 2:
        return "one size only: no trend"
    previous, last = rows[-2], rows[-1]
    before, after = previous["validation"], last["validation"]
    gain = (after - before) if metric == "accuracy" else (before - after) / abs(before)
    threshold = 0.01 if metric == "accuracy" else 0.02
    low_high = previous.get("validation_interval"), last.get("validation_interval")
    spread = ""
    if all(low_high):
        spread = (
            f" (95% intervals over seeds: [{low_high[0][0]:.4f}, {low_high[0][1]:.4f}] -> "
            f"[{low_high[1][0]:.4f}, {low_high[1][1]:.4f}])"
        )
    if gain > threshold:
        if all(low_high):
            better = (
                (low_high[1][0] > low_high[0][1])
                if metric == "accuracy"
                else (low_high[1][1] < low_high[0][0])
            )
            if not better:
                return (
                    f"within the noise: validation {metric} moved from {before:.4f} to "
                    f"{after:.4f}{spread}, but the intervals overlap; more seeds (--seeds) "
                    "would tell whether more data helps"
                )
        return (
            f"still improving: validation {metric} moved from {before:.4f} to {after:.4f} "
            f"over the last doubling or so of the data{spread}; more data should help"
            + ("" if spread else " (one seed per point: --seeds 3 measures the noise)")
        )
    return (
        f"flat: validation {metric} {before:.4f} -> {after:.4f} over the last step{spread}; "
        "more data alone is unlikely to help much (look at capacity or regularisation)"
    )


def write_curve_report(
    run_dir: Path, config: Config, result: dict, outputs: RunOutputs | None = None
) -> Path | None:
    """``report.md`` of a learning curve (through the run's one writer)."""
    metric = result["metric"]
    seeds = result.get("seeds") or 1
    table = [
        f"| fraction | training examples | steps | train {metric} | validation {metric} | "
        f"test {metric} | diagnosis |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        cells = [_with_interval(row.get(s), row.get(f"{s}_interval"))
                 for s in ("train", "validation", "test")]  # fmt: skip
        table.append(
            f"| {row['fraction']:g} | {row['train_examples']} | {row.get('steps', 'n/a')} | "
            + " | ".join(cells)
            + f" | {row['diagnosis']} |"
        )
    how = (
        f"{result['steps']} training steps at every fraction"
        if result.get("steps")
        else (f"{config.train.epochs} epochs over each share")
    )
    if seeds > 1:
        how += (f"; {seeds} seeds per fraction (initialisation and subsample), mean and 95% "
                "t-interval")  # fmt: skip
    folders = "fraction_*" + ("_seed_*" if seeds > 1 else "")
    writer = outputs or RunOutputs(run_dir, config=config)
    return writer.report(
        {
            "name": f"{config.name} (learning curve)",
            "sections": {
                f"Points (one run each, in its {folders} folder; {how})": table,
                "Verdict": [result["verdict"]],
            },
            "plots": {"learning_curve": "learning_curve.png"},
        }
    )


def _with_interval(value: float | None, bounds) -> str:
    if value is None:
        return "n/a"
    if bounds:
        return f"{value:.4f} [{bounds[0]:.4f}, {bounds[1]:.4f}]"
    return f"{value:.4f}"
