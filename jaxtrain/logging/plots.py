"""Plots of a run as PNG files: learning curves and confusion matrices.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot,
so plotting needs no display, touches no global state and is safe from any thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_SPLIT_STYLE = {"train": {"color": "tab:blue"}, "validation": {"color": "tab:orange"}}
_MAX_ANNOTATED_CLASSES = 30


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=120)
    return path


def _series(records: Sequence[Mapping[str, Any]], split: str, metric: str) -> tuple[Any, Any]:
    """Returns ``(steps, values)`` of ``metric`` on ``split``, sorted by step; ``None`` -> NaN."""
    points = sorted(
        (int(r["step"]), np.nan if r[metric] is None else float(r[metric]))
        for r in records
        if r.get("split") == split and metric in r and "step" in r
    )
    steps = np.array([p[0] for p in points], dtype=np.int64)
    values = np.array([p[1] for p in points], dtype=np.float64)
    return steps, values


def plot_learning_curves(
    records: Sequence[Mapping[str, Any]],
    path: Path,
    metrics: Sequence[str] = ("loss", "accuracy"),
    splits: Sequence[str] = ("train", "validation"),
) -> Path:
    """Draws each metric against step, one panel per metric, one line per split; writes a PNG.

    ``records`` are ``metrics.jsonl`` records (``{"step", "split", <metric>: value}``).
    Metrics with no record on any split get no panel, splits without the metric get no line;
    ``None`` (a non-finite value) leaves a gap. If nothing is left to draw the PNG says so.
    Returns ``path``.
    """
    panels = []
    for metric in metrics:
        lines = [(split, *_series(records, split, metric)) for split in splits]
        lines = [line for line in lines if len(line[1])]
        if lines:
            panels.append((metric, lines))

    fig = Figure(figsize=(5.5 * max(len(panels), 1), 4.0), layout="constrained")
    if not panels:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, f"no records of {', '.join(metrics)}", ha="center", va="center")
        return _save(fig, path)
    for i, (metric, lines) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), i)
        for split, steps, values in lines:
            style = _SPLIT_STYLE.get(split, {})
            marker = "o" if len(steps) < 30 else None
            ax.plot(steps, values, label=split, marker=marker, markersize=3, **style)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(True, alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(
    confusion: Any,
    class_names: Sequence[str],
    path: Path,
    title: str = "Confusion matrix (test)",
) -> Path:
    """Draws ``confusion`` (ints ``[k, k]``, rows = true class, columns = predicted class) as a
    heatmap with each count written in its cell; writes a PNG at ``path`` and returns it.

    Counts are written when ``k <= 30`` (beyond that they would not be legible). Raises
    ``ValueError`` if the matrix is not square or ``class_names`` does not have ``k`` names.
    """
    matrix = np.asarray(confusion)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion must be a square [k, k] matrix, got shape {matrix.shape}.")
    k = matrix.shape[0]
    if len(class_names) != k:
        raise ValueError(f"confusion is {k}x{k} but {len(class_names)} class names were given.")

    side = min(max(4.0, 0.55 * k + 2.5), 24.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", interpolation="nearest", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="count")
    ticks = np.arange(k)
    ax.set_xticks(ticks, labels=[str(n) for n in class_names], rotation=45, ha="right")
    ax.set_yticks(ticks, labels=[str(n) for n in class_names])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if k <= _MAX_ANNOTATED_CLASSES:
        threshold = matrix.max() / 2.0 if matrix.size and matrix.max() > 0 else np.inf
        fontsize = 10 if k <= 10 else 7
        for i in range(k):
            for j in range(k):
                value = matrix[i, j]
                text = f"{value:.0f}" if np.issubdtype(matrix.dtype, np.integer) else f"{value:.2g}"
                color = "white" if value > threshold else "black"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)
    return _save(fig, path)


def plot_learning_curve_sizes(
    sizes: Sequence[int],
    curves: Mapping[str, Sequence[float]],
    metric: str,
    path: Path,
    intervals: Mapping[str, Sequence[tuple[float, float] | None]] | None = None,
    title_note: str | None = None,
) -> Path:
    """A learning-curve experiment: ``metric`` (one line per split in ``curves``) against the
    number of training examples (log-scaled x axis); ``intervals`` (per split, a
    ``(low, high)`` per size) are drawn as shaded bands. Returns the PNG path."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for split, values in curves.items():
        style = _SPLIT_STYLE.get(split, {})
        shown = [np.nan if v is None else v for v in values]
        ax.plot(sizes, shown, marker="o", label=split, **style)
        bands = (intervals or {}).get(split)
        if bands and all(b is not None for b in bands):
            label = f"{split} 95% interval (seeds)"
            ax.fill_between(sizes, [b[0] for b in bands], [b[1] for b in bands], alpha=0.2,
                            label=label, **style)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("training examples")
    ax.set_ylabel(metric)
    title = f"{metric} against training-set size"
    ax.set_title(title + (f" ({title_note})" if title_note else ""))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)
