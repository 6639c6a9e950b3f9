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
