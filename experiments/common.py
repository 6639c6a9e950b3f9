"""Small helpers the experiments share: markdown tables, figures, timing, JSON.

Experiments live at the edge of the toolkit (DESIGN.md): they drive configs through the
runner functions and turn the run directories into a table and plots. Nothing here trains.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def cell(value: Any, digits: int = 4) -> str:
    """A table cell: ``-`` for None, floats to ``digits`` places, the rest as text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """``rows`` (already formatted or formatted by :func:`cell`) as a markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        lines.append("| " + " | ".join(v if isinstance(v, str) else cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def figure(width: float = 7.0, height: float = 4.2, **kwargs: Any) -> Figure:
    """A figure not tied to any GUI backend (safe in threads and headless runs)."""
    fig = Figure(figsize=(width, height), layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=float) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


@contextmanager
def timed(into: dict, key: str = "wall_s") -> Iterator[None]:
    """Store the block's wall time in seconds in ``into[key]`` (rounded to 0.1 s)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        into[key] = round(time.perf_counter() - started, 1)


def study_arguments(
    argv: Sequence[str] | None, doc: str, here: Path, quick_help: str
) -> argparse.Namespace:
    """The options every study takes: ``--quick`` (a shortened version, for the tests) and
    ``--out DIR`` (default: the study's own ``results/``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, default=here / "results")
    return parser.parse_args(argv)
