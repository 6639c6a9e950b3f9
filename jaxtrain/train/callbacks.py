"""Host-side callbacks: small named tuples of functions, combined with :func:`chain`.

A callback never touches arrays; it sees the step number (and validation metrics after an
evaluation) and answers whether training should stop now. Stopping always saves a checkpoint
at the current step first, so a stopped run resumes exactly.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import NamedTuple


def _never(*_args: object) -> bool:
    return False


class Callback(NamedTuple):
    """``on_step(step) -> stop?`` after every step; ``on_eval(step, metrics) -> stop?`` after
    every validation pass."""

    on_step: Callable[[int], bool] = _never
    on_eval: Callable[[int, Mapping[str, float]], bool] = _never


def chain(*callbacks: Callback) -> Callback:
    """One callback that runs all of ``callbacks`` (every one, in order) and stops if any asks."""

    def on_step(step: int) -> bool:
        return any([cb.on_step(step) for cb in callbacks])

    def on_eval(step: int, metrics: Mapping[str, float]) -> bool:
        return any([cb.on_eval(step, metrics) for cb in callbacks])

    return Callback(on_step, on_eval)


def stop_at_step(last_step: int) -> Callback:
    """Stop (with a checkpoint) once ``last_step`` steps are done, as a preemption would."""
    return Callback(on_step=lambda step: step >= last_step)


@contextmanager
def stop_on_signals(
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> Iterator[Callback]:
    """While open, the first SIGTERM/SIGINT asks training to stop after the current step
    (checkpoint saved, exit clean); a second one interrupts at once. Restores the previous
    handlers on exit. Only usable from the main thread."""
    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def handle(signum: int, _frame: object) -> None:
        if received:
            signal.signal(signum, previous[signal.Signals(signum)])
            raise KeyboardInterrupt
        received.append(signum)

    for sig in signals:
        signal.signal(sig, handle)
    try:
        yield Callback(on_step=lambda _step: bool(received))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class EarlyStopping:
    """Tracks a validation metric and says when it has stalled for ``patience`` evaluations.

    Host-side and tiny: after each validation the loop calls :meth:`update`; once
    ``triggered``, the loop finishes the run (test evaluation of the best checkpoint), which
    is what distinguishes it from a preemption stop. Its counters restart on ``--resume``.
    """

    def __init__(self, monitor: str | None, mode: str, patience: int, min_delta: float):
        self.monitor, self.mode = monitor, mode
        self.patience, self.min_delta = patience, min_delta
        self.best: float | None = None
        self.best_step: int | None = None
        self.stalled = 0
        self.stopped_at: int | None = None

    @classmethod
    def from_config(cls, config, checkpoints) -> EarlyStopping:
        """From ``train.early_stopping`` (None: never triggers); the metric and its direction
        are the checkpoints' own, so the restored best is the step early stopping kept."""
        if config is None:
            return cls(None, "max", 1, 0.0)
        return cls(checkpoints.monitor, checkpoints.mode, config.patience, config.min_delta)

    def update(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.monitor is None:
            return
        value = float(metrics[self.monitor])
        sign = 1.0 if self.mode == "max" else -1.0
        if self.best is None or sign * (value - self.best) > self.min_delta:
            self.best, self.best_step, self.stalled = value, step, 0
            return
        self.stalled += 1
        if self.stalled >= self.patience:
            self.stopped_at = step

    @property
    def triggered(self) -> bool:
        return self.stopped_at is not None

    def report(self) -> dict | None:
        """For metrics.json: where it stopped and the best value seen, or None."""
        if not self.triggered:
            return None
        return {
            "step": self.stopped_at,
            "monitor": self.monitor,
            "best": self.best,
            "best_step": self.best_step,
            "patience": self.patience,
        }


class PlateauSchedule:
    """``train.reduce_on_plateau`` by optax's rule (``optax.contrib.reduce_on_plateau``): after
    every validation its pure update advances the plateau state with the monitored metric
    (negated when higher is better); when optax lowers its scale, :meth:`update` returns the
    factor by which the peak learning rate in the optimizer state is to be multiplied (so
    checkpoints and resume carry the new rate). The floor ``min_learning_rate`` is optax's
    ``min_scale`` relative to the starting rate. Host-side, like EarlyStopping; its counters
    restart on ``--resume``."""

    def __init__(self, config, monitor: str, mode: str, peak: float):
        import jax.numpy as jnp
        import numpy as np
        import optax

        self.monitor, self.sign = monitor, -1.0 if mode == "max" else 1.0
        # optax improves when value < best - atol; with min_delta 0 the smallest positive
        # float keeps the comparison strict (best - tiny rounds to best), as ours was.
        self.rule = optax.contrib.reduce_on_plateau(
            factor=config.factor,
            patience=config.patience,
            rtol=0.0,
            atol=max(config.min_delta, float(np.finfo(np.float32).tiny)),
            min_scale=config.min_learning_rate / peak if peak > 0 else 0.0,
        )
        self.state = self.rule.init(jnp.zeros((), jnp.float32))

    def update(self, metrics: Mapping[str, float]) -> float:
        """Feed one validation; returns the learning-rate factor (1.0: unchanged)."""
        before = float(self.state.scale)
        _, self.state = self.rule.update(
            None, self.state, value=self.sign * float(metrics[self.monitor])
        )
        after = float(self.state.scale)
        return after / before if before > 0 else 1.0
