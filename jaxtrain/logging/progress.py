"""What a person watching a run sees: a bar on a terminal, log lines everywhere else.

Every verb that loops (``train``, ``sweep``, ``federated``, and ``learning-curve`` through
``train``) reports through one :class:`Progress`: ``update(step)`` says where the loop is,
``record(step, split, metrics)`` says what a log point measured. On a terminal that is the
tqdm bar as before (the metrics in its postfix). Without one (``nohup``, a pipe, SLURM, CI)
the bar would switch itself off and say nothing, so each ``train`` record becomes one line
instead (step, epoch, the metrics, examples/s and the time left), and each ``validation``
record one line too. Everything goes to stderr, so stdout keeps only a verb's result.

:func:`announce` prints the run directory when a run starts, so a person can open it (or
``tensorboard --logdir`` it) while it trains.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from tqdm.auto import tqdm

SHOWN = ("loss", "accuracy", "mae", "bits_per_byte", "f1_macro", "rmse", "r2", "epsilon")
MAX_SHOWN = 4  # metrics per line besides the step, epoch, speed and ETA
_HIDDEN = ("epoch", "nonfinite")  # the epoch has its own place; nonfinite is 0 unless warned


def announce(run_dir: str | Path, what: str = "run directory", stream: IO[str] | None = None):
    """Print ``jaxtrain: <what>: <run_dir>`` on stderr (flushed: under ``nohup`` or a pipe
    the line must not wait in a buffer for the run to end)."""
    stream = stream or sys.stderr
    print(f"jaxtrain: {what}: {run_dir}", file=stream, flush=True)


def interactive(stream: IO[str]) -> bool:
    """Whether ``stream`` is a terminal (where a bar redraws in place)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real file
        return False


def format_duration(seconds: float) -> str:
    """``0:01:05``-style hours:minutes:seconds (days as ``1d 2:03:04``)."""
    seconds = max(0, int(round(seconds)))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    clock = f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{days}d {clock}" if days else clock


class Progress:
    """The console side of one loop (see the module docstring).

    ``total`` and ``initial`` are steps (or rounds: ``unit``); ``examples_per_step`` turns
    the step rate into examples/s; ``steps_per_epoch`` adds the epoch to each line;
    ``every`` keeps one ``train`` line in that many steps (the train loop's records are
    already one per ``train.log_every`` window: 1 there); lines of the ``timed`` split carry
    the speed and the time left (a sweep, which logs only validations, times those).
    ``enabled=False`` shows nothing.
    ``stream`` defaults to stderr; whether it is a terminal decides bar or lines.
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        desc: str = "",
        unit: str = "step",
        enabled: bool = True,
        examples_per_step: float | None = None,
        steps_per_epoch: float | None = None,
        every: int = 1,
        timed: str = "train",
        stream: IO[str] | None = None,
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.examples_per_step, self.steps_per_epoch = examples_per_step, steps_per_epoch
        self.every = max(1, every)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.lines = enabled and not interactive(self.stream)
        self.bar = None
        if enabled and not self.lines:
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream)
        self.step, self.timed = initial, timed
        self._clock = time.perf_counter
        self._start = (initial, self._clock())
        self._first: tuple[int, float] | None = None  # (step, time) of the first timed line
        self._rate: float | None = None  # steps per second

    def update(self, step: int) -> None:
        """The loop is at ``step``."""
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
        self.step = step

    def record(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
        """A log point: ``train`` metrics (a window's means) or a ``validation`` pass."""
        shown = _shown(metrics)
        if self.bar is not None:
            if split == "train":
                self.bar.set_postfix({k: _number(v) for k, v in shown.items()})
            return
        if not self.lines:
            return
        if split == "train" and step % self.every and step != self.total:
            return
        if split == self.timed:
            self._measure(step)
        print(self._line(step, split, shown), file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A one-off message that must not break the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _measure(self, step: int) -> None:
        """Steps per second: from the start up to the first timed line (compilation
        included), then from the first timed line on (every evaluation and checkpoint in
        between included, so the ETA is what the clock will say)."""
        now = self._clock()
        since_step, since_time = self._first or self._start
        if step > since_step and now > since_time:
            self._rate = (step - since_step) / (now - since_time)
        if self._first is None:
            self._first = (step, now)

    def _line(self, step: int, split: str, shown: Mapping[str, int | float]) -> str:
        width = len(str(self.total))
        share = step / self.total if self.total else 1.0
        where = f"{self.unit} {step:>{width}}/{self.total} ({share:.0%})"
        parts = [f"{self.desc} {where}" if self.desc else where]
        if self.steps_per_epoch:
            parts.append(f"epoch {step / self.steps_per_epoch:.2f}")
        values = " ".join(f"{k} {_number(v)}" for k, v in shown.items())
        parts.append(f"{split} {values}".rstrip())
        if split == self.timed and self._rate:
            if self.examples_per_step:
                parts.append(f"{self._rate * self.examples_per_step:,.0f} examples/s")
            else:
                parts.append(f"{self._rate:,.2f} {self.unit}s/s")
            parts.append(f"ETA {format_duration((self.total - step) / self._rate)}")
        return "jaxtrain: " + " | ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shown(metrics: Mapping[str, Any]) -> dict[str, int | float]:
    """The headline metrics of a record, in :data:`SHOWN` order, then any other scalar one
    (a sweep's ``best_validation_accuracy``), at most :data:`MAX_SHOWN`."""
    numbers = {
        k: v
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in _HIDDEN
    }
    ordered = [k for k in SHOWN if k in numbers] + [k for k in numbers if k not in SHOWN]
    return {k: numbers[k] for k in ordered[:MAX_SHOWN]}


def _number(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4f}"
