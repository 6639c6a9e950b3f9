"""The learning-rate schedule of an extended run (``--resume RUN train.epochs=40``).

A run's schedule is laid out for the length it was started with (stage 1: warmup, then
constant or cosine to ``final_fraction`` of the peak). Each extension is a further stage
over the added steps, and ``train.extend_schedule`` says what the rate does there:

- ``continue``: it stays at the value the previous stage ended on (for cosine, the decayed
  ``final_fraction * peak``; for constant, the peak);
- ``restart``: the configured schedule runs again over the added steps (warmup, then
  constant or a new cosine from the peak down to ``final_fraction * peak``).

Steps already taken keep the rate they were taken with, so an extended run is the first run
followed by more training, never a different run rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax.numpy as jnp
import optax

MODES = ("continue", "restart")


class Extension(NamedTuple):
    """Stage ``start_step`` (exclusive of earlier stages) to ``end_step``, under ``mode``."""

    start_step: int
    end_step: int
    mode: str


def extend_schedule(
    base: optax.Schedule,
    extensions: Sequence[Extension],
    fresh: Callable[[int], optax.Schedule],
) -> optax.Schedule:
    """``base`` (stage 1, laid out over its own length) followed by each extension.

    ``fresh(n)`` is the configured schedule laid out over ``n`` steps (for ``restart``).
    Each piece sees the count since its stage began (``optax.join_schedules``)."""
    pieces, boundaries = [base], []
    start_of_last = 0
    for extension in extensions:
        previous = pieces[-1]
        if extension.mode == "restart":
            piece = fresh(extension.end_step - extension.start_step)
        elif extension.mode == "continue":
            piece = _hold(previous, extension.start_step - start_of_last)
        else:
            raise ValueError(f"train.extend_schedule: {extension.mode!r} is not one of {MODES}")
        pieces.append(piece)
        boundaries.append(extension.start_step)
        start_of_last = extension.start_step
    return optax.join_schedules(pieces, boundaries) if boundaries else base


def _hold(previous: optax.Schedule, local_end: int) -> optax.Schedule:
    """The previous piece's value at the step its stage ended, from then on."""

    def schedule(count):
        return jnp.asarray(previous(local_end)) + jnp.zeros_like(count, jnp.float32)

    return schedule


def rate_at(optimizer, stages: Sequence[dict], step: int) -> float:
    """The rate the configured schedule (``optimizer``: an optimizer config; the peak as
    configured) gives at ``step`` of a run with ``stages`` (``[]``: one stage of ``step``
    steps, so its final value)."""
    from jaxtrain.train.optim import build_schedule

    first, extensions = from_stages(stages)
    peak, shape = optimizer.learning_rate, optimizer.schedule
    schedule = extend_schedule(
        build_schedule(peak, shape, first or step),
        extensions,
        lambda steps: build_schedule(peak, shape, steps),
    )
    return float(schedule(step))


def from_stages(stages: Sequence[dict]) -> tuple[int | None, tuple[Extension, ...]]:
    """``(steps of stage 1, the later stages)`` from a run's ``stages.json`` records;
    ``(None, ())`` for a run never extended (its schedule spans its own length)."""
    if not stages:
        return None, ()
    later = tuple(Extension(s["start_step"], s["end_step"], s["schedule"]) for s in stages[1:])
    return stages[0]["end_step"], later
