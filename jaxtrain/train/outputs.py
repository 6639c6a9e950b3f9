"""A finished run's outputs: ``metrics.json``, plots and ``report.md``, for every family."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from jaxtrain.config import Config, config_to_dict
from jaxtrain.data import PreparedData
from jaxtrain.data.data_report import summary_lines
from jaxtrain.data.text_prepare import (
    XZ_CONTEXT_LIMIT,
    byte_counts,
    split_text,
    unigram_bits,
    xz_bits_per_byte,
)
from jaxtrain.logging import plot_confusion_matrix, plot_learning_curves, read_metrics
from jaxtrain.logging.outputs import RunOutputs
from jaxtrain.train.analysis import classification_analysis, regression_analysis
from jaxtrain.train.diagnosis import diagnose
from jaxtrain.train.evaluate import scalars
from jaxtrain.train.fairness_audit import audit_lines


def baselines(data: PreparedData) -> dict[str, float]:
    """Trivial predictors a model must beat, on the test split (fitted on train).

    Language models, on the very bytes the model's test ``bits_per_byte`` averages over:
    the add-one unigram byte model, xz alone (``xz_bits_per_byte``: a general-purpose
    compressor that never saw the training text) and xz given the training split
    (``xz_given_train_bits_per_byte``, up to 6 MiB of training text: xz's dictionary).
    """
    if data.task == "language_model":
        train_counts = byte_counts(data, "train")
        result = {"unigram_bits_per_byte": unigram_bits(train_counts, byte_counts(data, "test"))}
        held_out = split_text(data, "test")
        result["xz_bits_per_byte"] = xz_bits_per_byte(held_out)
        if int(train_counts.sum()) <= XZ_CONTEXT_LIMIT:
            result["xz_given_train_bits_per_byte"] = xz_bits_per_byte(
                held_out, split_text(data, "train")
            )
        return result
    return {}


def trivial_training_loss(data: PreparedData) -> float:
    """The training loss (in the loss's own units) of a predictor that ignores the inputs:
    class frequencies (their entropy, nats), the training mean of standardised targets (1.0),
    or the unigram byte model (nats)."""
    train = data.splits["train"]
    if data.task == "classification":
        counts = np.bincount(train.labels, minlength=data.num_classes).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum())
    if data.task == "regression":
        return float(np.mean(np.var(train.labels.reshape(len(train), -1), axis=0)))
    counts = byte_counts(data, "train")  # chunked: a streamed corpus is never loaded whole
    return unigram_bits(counts, counts) * math.log(2)


def _analysis(data: PreparedData, outputs: np.ndarray, seed: int, run_dir: Path) -> dict:
    test = data.splits["test"]
    if data.task == "classification":
        return classification_analysis(outputs, test.labels, seed, run_dir / "reliability.png")
    if data.task == "regression":
        scaler = data.target_normalizer
        # R², RMSE and MAE ignore a shift: leaving it out keeps float32 exact for targets far
        # from zero (around 1e5 the shift alone would eat the decimals).
        targets = test.labels.reshape(len(test), -1) * scaler.scale
        return regression_analysis(outputs * scaler.scale, targets, seed)
    return {}


def _analysis_lines(analysis: dict) -> list[str]:
    lines = [
        f"- **{name}**: {value:.4f}" for name, value in analysis.items() if isinstance(value, float)
    ]
    for name, ci in (analysis.get("intervals") or {}).items():
        lines.append(
            f"- **{name}**: {ci['value']:.4f} (95% bootstrap interval {ci['low']:.4f} to "
            f"{ci['high']:.4f}, 1,000 resamples)"
        )
    return lines


def _cost_lines(cost: dict) -> list[str]:
    flops = cost["flops_per_step"]
    rows = [
        ("parameters", f"{cost['params']:,}"),
        ("FLOPs per step (XLA)", _sci(flops["xla"])),
        ("FLOPs per step (analytic)", _sci(flops["analytic"])),
        ("step time", f"{cost['step_time_s'] * 1e3:.2f} ms" if cost["step_time_s"] else "n/a"),
        ("examples/s", f"{cost['examples_per_s']:,.0f}" if cost["examples_per_s"] else "n/a"),
        ("achieved FLOP/s", _sci(cost.get("achieved_flops"))),
        ("peak FLOP/s", f"{_sci(cost['peak_flops'])} ({cost['peak_source']})"),
        ("MFU", f"{cost['mfu']:.1%}" if cost.get("mfu") is not None else "n/a"),
        ("peak memory", f"{cost['peak_memory_bytes'] / 2**20:,.0f} MiB"),
        ("energy", f"{cost['energy']['joules']:,.0f} J ({cost['assumptions']['power']})"),
    ]
    lines = [f"- **{name}**: {value}" for name, value in rows]
    if cost.get("flops_warning"):
        lines.append(f"- **warning**: {cost['flops_warning']}")
    return lines


def _sci(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


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
    test_outputs: np.ndarray | None = None,
    cost: dict[str, Any] | None = None,
    fairness: dict[str, Any] | None = None,
    outputs: RunOutputs | None = None,
    extra: dict[str, Any] | None = None,
    sections: dict[str, list[str]] | None = None,
    curves: tuple[str, ...] = ("loss", "accuracy"),
) -> dict[str, Any]:
    """Write ``metrics.json``, the plots and ``report.md``; returns the metrics.json content.

    ``training`` holds what the run measured (steps, times, ``best_step``); ``monitor`` says
    how the evaluated step was chosen; ``test_outputs`` (the model's outputs on the test
    split, in order) add ranking/calibration metrics and bootstrap intervals; ``cost`` is
    :func:`jaxtrain.train.costs.training_cost`'s account of the run; ``outputs`` the run's
    writer (default: a new one for ``run_dir``). A verb adds its own ``extra`` summary
    entries and report ``sections`` (federated: algorithm, partition, privacy) and names the
    logged ``curves`` to plot.
    """
    if outputs is None:  # a fitted run: this call's own writer, closed when it is done
        with RunOutputs(run_dir, config=config) as own:
            return write_outputs(
                config, run_dir, data, num_params=num_params, validation=validation, test=test,
                training=training, monitor=monitor, test_outputs=test_outputs, cost=cost,
                fairness=fairness, outputs=own, extra=extra, sections=sections, curves=curves,
            )  # fmt: skip
    logged = read_metrics(run_dir)
    analysis = {} if test_outputs is None else _analysis(data, test_outputs, config.seed, run_dir)
    diagnosis = diagnose(logged, trivial_training_loss(data)) if logged else None
    summary = {
        "name": config.name,
        "model": config.model.name,
        "task": data.task,
        "best_step": training.get("best_step"),
        "monitor": monitor,
        "validation": validation,
        "test": test,
        "baselines": baselines(data),
        "analysis": analysis,
        "diagnosis": diagnosis,
        "cost": cost,
        "fairness": fairness,
        **(extra or {}),
        "training": training,
    }
    outputs.summary(summary)
    plots = {}
    if logged:
        path = plot_learning_curves(logged, run_dir / "learning_curves.png", metrics=curves)
        plots["learning_curves"] = path.name
    if "confusion_matrix" in test:
        plots["confusion_matrix"] = plot_confusion_matrix(
            test["confusion_matrix"], data.class_names, run_dir / "confusion_matrix.png"
        ).name
    if analysis.get("reliability_diagram"):
        plots["reliability_diagram"] = analysis["reliability_diagram"]
    sections = dict(sections or {})
    if data.report is not None:
        sections["Data preparation"] = summary_lines(data.report)
    if analysis:
        sections["Held-out analysis (test split)"] = _analysis_lines(analysis)
    if diagnosis:
        sections["Diagnosis: " + diagnosis["verdict"]] = [diagnosis["evidence"]]
    if fairness:
        mitigation = config.fairness.mitigation if config.fairness else "none"
        sections["Fairness (test split)"] = audit_lines(fairness, mitigation)
    if cost:
        sections["Cost"] = _cost_lines(cost)
    outputs.report(
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
            "sections": sections,
            "plots": plots,
        },
    )
    return summary
