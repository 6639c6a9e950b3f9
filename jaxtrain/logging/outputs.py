"""One writer for everything a verb writes into its run directory.

``train``, ``sweep``, ``federated`` and ``learning-curve`` all write through
:class:`RunOutputs`: metric records (``metrics.jsonl`` and TensorBoard), the final
``metrics.json`` (strict JSON, written atomically) and ``report.md``. Processes other than 0
of a multi-process run get a disabled writer: they compute, process 0 writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxtrain.files import read_json, write_json
from jaxtrain.logging.quiet import quiet_library_warnings
from jaxtrain.logging.report import write_report
from jaxtrain.logging.writers import MetricWriter

SUMMARY_FILE = "metrics.json"
ENVIRONMENT_FILE = "environment.json"


class RunOutputs:
    """``log(step, split, metrics)``, ``summary(dict)`` and ``report(context)`` for one run
    directory; a context manager that closes the metric writer."""

    def __init__(self, run_dir: str | Path, *, enabled: bool = True, purge_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._purge_step = purge_step
        self._writer: MetricWriter | None = None
        quiet_library_warnings()

    def log(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
        """Append one record to ``metrics.jsonl`` and TensorBoard (opened on first use)."""
        if not self.enabled:
            return
        if self._writer is None:
            self._writer = MetricWriter(self.run_dir, purge_step=self._purge_step)
        self._writer.write(step, split, metrics)

    def summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``metrics.json`` (NaN and infinities as ``null``)."""
        if self.enabled:
            write_json(self.run_dir / SUMMARY_FILE, summary)

    def report(self, context: Mapping[str, Any]) -> Path | None:
        """Write ``report.md`` from ``context`` (see :func:`write_report`); the run's
        ``environment.json`` is added when the context has none."""
        if not self.enabled:
            return None
        if "environment" not in context:
            path = self.run_dir / ENVIRONMENT_FILE
            context = {**context, "environment": read_json(path) if path.exists() else {}}
        return write_report(self.run_dir, context)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RunOutputs:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
