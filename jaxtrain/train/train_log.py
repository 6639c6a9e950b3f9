"""The train run's metric sink: device metrics in, ``train`` records out, bad steps caught.

Metrics stay on the device until a log point (every ``train.log_every`` steps) or a
checkpoint asks for them; then they are fetched in one transfer, every fetched step is
checked for a skipped (non-finite) update under ``train.nonfinite``, and each completed
``log_every`` window becomes one ``train`` record (means over the window). Checking before
every save means no checkpoint is ever written after a bad step under ``stop``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from jaxtrain.config import Config

SHOWN = ("loss", "accuracy", "mae", "bits_per_byte")  # progress-bar metrics, when logged
MAX_SKIPPED_FRACTION = 0.5  # train.nonfinite=skip gives up past this share of steps


class NonFiniteError(RuntimeError):
    """Training met a NaN/inf loss, gradient or update and ``train.nonfinite`` says stop (or
    ``skip`` skipped too many, or ``rollback`` rolled back too often)."""


class TrainLog:
    """``log(step, count, metrics)`` is the loop's sink; :meth:`flush` fetches and checks
    everything pending (call it before a save). ``on_bad(first_bad_step, step)`` handles
    non-finite steps under ``rollback`` (it raises :class:`jaxtrain.train.periodic.Jump`)."""

    def __init__(
        self,
        config: Config,
        write: Callable[[int, str, Mapping[str, float]], None],
        host_metrics: Callable[[Any], Any],
        train_size: int,
        total_steps: int,
        on_bad: Callable[[int, int], None] | None = None,
        show: Callable[[dict[str, float]], None] = lambda shown: None,
    ):
        self.config, self.write, self.host_metrics = config, write, host_metrics
        self.train_size, self.total = train_size, total_steps
        self.steps_per_epoch = train_size / config.data.batch_size
        self.on_bad, self.show = on_bad, show
        self.pending: list[tuple[Any, int]] = []  # device metrics and their step counts
        self.rows: list[dict[str, float]] = []  # fetched, checked, not yet logged
        self.next_row = 0  # step number of rows[0]
        self.skipped = 0  # steps whose update was skipped (nonfinite: skip)
        self.warned = False

    def reset(self, step: int) -> None:
        """Forget everything after ``step`` (a rollback or resume continues from there)."""
        self.pending.clear()
        self.rows.clear()
        self.next_row = step + 1

    def __call__(self, step: int, count: int, metrics: Any) -> None:
        if not self.pending and not self.rows:
            self.next_row = step - count + 1
        self.pending.append((metrics, count))
        log_every = self.config.train.log_every
        if count > 1 or step % log_every == 0 or step == self.total:
            self.flush(step)
            self._write_windows(step)

    def flush(self, step: int) -> None:
        """Fetch the pending metrics and check every step among them."""
        if not self.pending:
            return
        fetched = [(self.host_metrics(metrics), count) for metrics, count in self.pending]
        self.pending.clear()
        first = step - sum(count for _, count in fetched) + 1
        new_rows = []
        for metrics, count in fetched:
            if count == 1 and np.ndim(metrics["loss"]) == 0:
                new_rows.append({key: float(value) for key, value in metrics.items()})
            else:
                new_rows += [
                    {key: float(value[i]) for key, value in metrics.items()} for i in range(count)
                ]
        bad = [first + i for i, row in enumerate(new_rows) if row.get("nonfinite")]
        self.rows += new_rows
        if bad:
            self._bad(bad, step, len(new_rows))

    def _bad(self, bad: list[int], step: int, window: int) -> None:
        policy = self.config.train.nonfinite
        if policy == "rollback" and self.on_bad is not None:
            self.on_bad(bad[0], step)
        if policy == "stop":
            batch = bad[0] - 1  # the stream's batch s - 1 fed step s
            epoch, offset = divmod(batch * self.config.data.batch_size, self.train_size)
            raise NonFiniteError(
                f"non-finite loss, gradient or update at step {bad[0]} (batch {batch} of the "
                f"training stream: epoch {epoch}, examples {offset}.."
                f"{offset + self.config.data.batch_size - 1} of that epoch's order; {len(bad)} "
                f"such step(s) in the last {window}); the update was skipped and nothing after "
                "it was checkpointed. Lower the learning rate, clip gradients "
                "(optimizer.grad_clip_norm) or set train.nonfinite=skip or rollback"
            )
        self.skipped += len(bad)
        if not self.warned:
            self.warned = True
            print(
                f"jaxtrain: warning: step {bad[0]}: non-finite loss, gradient or update; the "
                "update was skipped (train.nonfinite=skip); the count is in metrics.json",
                file=sys.stderr,
            )
        if self.skipped > MAX_SKIPPED_FRACTION * max(step, 1):
            raise NonFiniteError(
                f"{self.skipped} of the first {step} steps had a non-finite loss, gradient or "
                f"update and were skipped (train.nonfinite=skip gives up past "
                f"{MAX_SKIPPED_FRACTION:.0%}); the model is not training. Lower the learning "
                "rate or clip gradients (optimizer.grad_clip_norm)"
            )

    def _write_windows(self, step: int) -> None:
        """One ``train`` record per completed ``log_every`` window among the fetched rows."""
        log_every = self.config.train.log_every
        ends = [s for s in range(self.next_row, step + 1) if s % log_every == 0 or s == self.total]
        for end in ends:
            take = end - self.next_row + 1
            window, self.rows = self.rows[:take], self.rows[take:]
            self.next_row = end + 1
            logged = {k: float(np.mean([row[k] for row in window])) for k in window[0]}
            self.write(end, "train", {"epoch": end / self.steps_per_epoch, **logged})
            self.show({k: logged[k] for k in SHOWN if k in logged})
