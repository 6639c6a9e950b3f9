"""Metric writers: one JSON line per record in ``metrics.jsonl``, and TensorBoard scalars.

``metrics.jsonl`` is the source of truth for a run's metrics. Each line is one record
``{"step": int, "split": str, <metric>: number | null, ...}``. Non-finite floats (NaN, inf)
are written as JSON ``null`` so that every line is strict JSON that any reader can parse; the
TensorBoard copy keeps the raw value. Only one process (process 0 in a multi-process run)
should own a writer for a run directory.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from tensorboardX import SummaryWriter

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_RESERVED = ("step", "split")


def _scalar(name: str, value: Any) -> int | float:
    """Converts a metric value (Python, NumPy or JAX scalar) to a Python int or float."""
    array = np.asarray(value)
    if array.size != 1:
        raise TypeError(
            f"Metric {name!r} must be a scalar, got an array of shape {array.shape}; "
            "reduce it (e.g. mean) before logging."
        )
    kind = array.dtype.kind
    if kind in "biu":
        return int(array.reshape(()))
    if kind == "f":
        return float(array.reshape(()))
    raise TypeError(f"Metric {name!r} must be a number, got {type(value).__name__}: {value!r}.")


def _json_value(value: int | float) -> int | float | None:
    """Returns ``value`` as stored in JSON: non-finite floats become ``None`` (``null``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _read_lines(path: Path) -> list[str]:
    """Returns the complete lines of ``path`` (each ending in a newline).

    A final line without a newline is the trace of a process killed mid-write: it is dropped if
    it is not valid JSON, kept (with a newline added) if it is.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        last = lines.pop()
        try:
            json.loads(last)
        except json.JSONDecodeError:
            return lines
        lines.append(last + "\n")
    return lines


def _parse(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{number}: not a JSON line ({error}): {line[:80]!r}") from None
    if not isinstance(record, dict) or "step" not in record:
        raise ValueError(f"{path}:{number}: expected an object with a 'step' key: {line[:80]!r}")
    return record


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Reads ``run_dir/metrics.jsonl`` back as a list of records, in file order.

    Returns ``[]`` if the file does not exist. Non-finite values come back as ``None``. A
    truncated last line (a killed writer) is ignored; any other malformed line raises
    ``ValueError`` naming the file and line number.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    lines = _read_lines(path)
    return [_parse(path, i, line) for i, line in enumerate(lines, 1) if line.strip()]


def _replace_lines(path: Path, lines: list[str]) -> None:
    """Atomically replaces ``path`` with ``lines``: temporary file, fsync, ``os.replace``."""
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def truncate_after(run_dir: Path, step: int) -> None:
    """Keeps only the records of ``run_dir/metrics.jsonl`` with ``record["step"] <= step``.

    Used on resume from a checkpoint at ``step`` so the log holds no records from the lost part
    of the run. Kept lines are copied byte for byte. The new file is written to a temporary file
    in the same directory, synced, then moved over the old one with ``os.replace``, so a crash
    leaves either the old or the new file, never a mix. A missing file is left missing. Call it
    before opening a ``MetricWriter`` on ``run_dir``: an open writer keeps the replaced file.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return
    lines = _read_lines(path)
    kept = [
        line
        for i, line in enumerate(lines, 1)
        if line.strip() and _parse(path, i, line)["step"] <= step
    ]
    _replace_lines(path, kept)


def write_hparams(
    tb: SummaryWriter, params: Mapping[str, Any], metrics: Mapping[str, float], step: int
) -> None:
    """A run's hyperparameters and final metrics for TensorBoard's HParams tab, whose table
    then compares every run under a ``--logdir``: the hparams plugin's session records
    (``tensorboardX.summary.hparams``) in the run's own event file, and each metric as the
    scalar ``final/<name>`` at ``step``. ``params`` values other than numbers, booleans and
    text are shown as text; non-finite metrics are left out."""
    from tensorboardX.summary import hparams as hparams_summary

    shown = {k: v if isinstance(v, bool | int | float | str) else str(v)
             for k, v in params.items()}  # fmt: skip
    tags = {f"final/{k}": float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    experiment, start, end = hparams_summary(shown, tags)
    writer = tb._get_file_writer()
    for summary in (experiment, start, end):
        writer.add_summary(summary)
    for tag, value in tags.items():
        tb.add_scalar(tag, value, global_step=step)


class MetricWriter:
    """Appends metric records to ``run_dir/metrics.jsonl`` and to TensorBoard.

    TensorBoard event files go to ``run_dir/tensorboard``, one scalar per metric under the tag
    ``f"{split}/{name}"``. The JSONL file is flushed after every ``write`` (a killed process
    loses nothing already written); TensorBoard is written by a background thread and is
    complete after ``close()``, or within ``flush_secs`` otherwise.

    On resume from a checkpoint at step ``s``, call ``truncate_after(run_dir, s)`` and open the
    writer with ``purge_step=s + 1`` so TensorBoard also hides the events logged after ``s``.
    """

    def __init__(self, run_dir: Path, *, purge_step: int | None = None, flush_secs: int = 10):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        if self.path.exists() and self.path.stat().st_size > 0:
            # Drop a partial last line left by a killed process before appending after it.
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                partial = f.read(1) != b"\n"
            if partial:
                _replace_lines(self.path, _read_lines(self.path))
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = SummaryWriter(
            logdir=str(self.run_dir / TENSORBOARD_DIR),
            purge_step=purge_step,
            flush_secs=flush_secs,
        )
        self._closed = False

    def write(self, step: int, split: str, metrics: Mapping[str, float | int]) -> None:
        """Appends ``{"step": step, "split": split, **metrics}`` to the JSONL file and logs each
        metric to TensorBoard as ``f"{split}/{name}"`` at ``step``.

        Values may be Python, NumPy or JAX scalars; NaN and inf are stored as ``null`` in JSON.
        Raises ``ValueError`` if a metric is named ``step`` or ``split`` or the writer is closed,
        and ``TypeError`` if a value is not a numeric scalar.
        """
        if self._closed:
            raise ValueError(f"MetricWriter for {self.run_dir} is closed.")
        clash = [name for name in metrics if name in _RESERVED]
        if clash:
            raise ValueError(f"Metric names {clash} are reserved for the record's own keys.")
        step = int(step)
        values = {name: _scalar(name, value) for name, value in metrics.items()}
        record = {"step": step, "split": split}
        record.update({name: _json_value(value) for name, value in values.items()})
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        for name, value in values.items():
            self._tb.add_scalar(f"{split}/{name}", value, global_step=step)

    def text(self, tag: str, markdown: str, step: int = 0) -> None:
        """TensorBoard text (its Text tab renders markdown), e.g. the resolved config."""
        self._tb.add_text(tag, markdown, global_step=step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One TensorBoard scalar that is not a ``metrics.jsonl`` record."""
        self._tb.add_scalar(tag, value, global_step=step)

    def hparams(self, params: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        """See :func:`write_hparams`."""
        write_hparams(self._tb, params, metrics, step)

    def flush(self) -> None:
        """Flushes the JSONL file and asks TensorBoard to flush what it has written."""
        if not self._closed:
            self._file.flush()
            self._tb.flush()

    def close(self) -> None:
        """Flushes and closes the JSONL file and the TensorBoard writer. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._file.close()
        self._tb.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
