"""The one host loop: advance the state by compiled steps, act every N steps in between.

``train``, ``sweep`` and ``federated`` all run :func:`run_periodic`: a verb supplies
``advance(state, count) -> (state, metrics)`` (one compiled call: a step, a fused stretch,
a population chunk or a round), a metric sink, and :class:`Every` actions (evaluate,
checkpoint, log, halve a population...). One rule decides when an action runs: after the
step count crosses a multiple of its period, and at the last step. With ``chunked``,
``advance`` is asked for as many steps as reach the next action, so a fused epoch or a
population chunk is one call. An action may return a new state (a lower learning rate, a
halved population), :class:`Jump` elsewhere (a rollback) or :class:`Halt` the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Every:
    """``action(step, state) -> state | None`` after every ``period`` steps (``None``: never
    periodically) and, with ``at_end``, after the last step."""

    period: int | None
    action: Callable[[int, Any], Any]
    at_end: bool = True

    def due(self, step: int, total: int, previous: int) -> bool:
        """Whether a multiple of the period lies in ``(previous, step]`` (or it is the end)."""
        if self.at_end and step == total:
            return True
        return bool(self.period) and step // self.period > previous // self.period

    def next_step(self, step: int, total: int) -> int:
        """The first step after ``step`` at which the action is due."""
        if not self.period:
            return total
        return min(total, (step // self.period + 1) * self.period)


class Jump(Exception):  # noqa: N818 - control flow, not an error
    """Raised by an action or the sink: continue from ``state`` at ``step`` (a rollback)."""

    def __init__(self, state: Any, step: int):
        super().__init__(step)
        self.state, self.step = state, step


class Halt(Exception):  # noqa: N818 - control flow, not an error
    """Raised by an action: end the loop now with ``status`` (e.g. early stopping)."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


@dataclass
class Outcome:
    """Where the loop ended: ``status`` ``finished`` (every step), ``stopped`` (``should_stop``
    asked), or what a :class:`Halt` said."""

    state: Any
    step: int
    status: str


def run_periodic(
    state: Any,
    step: int,
    total: int,
    advance: Callable[[Any, int], tuple[Any, Any]],
    actions: list[Every],
    *,
    chunked: bool = False,
    sink: Callable[[int, int, Any], None] = lambda step, count, metrics: None,
    should_stop: Callable[[int], bool] = lambda step: False,
    progress: Callable[[int], None] = lambda step: None,
) -> Outcome:
    """Advance from ``step`` to ``total``, running the due ``actions`` after each call.

    ``sink(step, count, metrics)`` receives every call's metrics first (it may raise
    :class:`Jump`); ``should_stop(step)`` is asked after each call (signals, callbacks);
    ``progress(step)`` is told where the loop is."""
    while step < total:
        count = 1
        if chunked:
            count = min(action.next_step(step, total) for action in actions) - step
        previous = step
        try:
            state, metrics = advance(state, count)
            step += count
            sink(step, count, metrics)
            for action in actions:
                if action.due(step, total, previous):
                    state = _or(action.action(step, state), state)
        except Jump as jump:
            state, step = jump.state, jump.step
            progress(step)
            continue
        except Halt as halt:
            progress(step)
            return Outcome(state, step, halt.status)
        progress(step)
        if step < total and should_stop(step):
            return Outcome(state, step, "stopped")
    return Outcome(state, step, "finished")


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value
