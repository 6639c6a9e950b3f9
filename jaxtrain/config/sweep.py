"""A vmapped hyperparameter sweep (``jaxtrain sweep``): see jaxtrain/sweep and docs/sweeps.md.

``axes`` maps a dotted config key to the values it takes: a list (a grid, or choices for a
random search) or a distribution. Keys that only change numbers (optimizer settings, the
``seed`` and ``data.seed``) vary inside one vmapped program; any other key (``model.hidden``,
``model.dropout``, ``data.batch_size``) splits the members into groups, one program each.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from jaxtrain.config.base import STRICT, Epochs, FiniteFloat, PositiveInt, Seed, capped

AxisKey = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]
OpenFraction = Annotated[FiniteFloat, Field(gt=0, lt=1)]
Int64 = capped(2**63 - 1, "numpy draws 64-bit integers", low=-(2**63))
MAX_MEMBERS = 100_000
Members = capped(MAX_MEMBERS, "a sanity cap: every member is trained, most of them at once")


@dataclass(config=STRICT)
class Distribution:
    """A random-search axis: ``uniform`` or ``log_uniform`` on [low, high] (floats), or
    ``int_uniform`` on the integers low..high inclusive (seeds)."""

    distribution: Literal["uniform", "log_uniform", "int_uniform"]
    low: FiniteFloat | Int64
    high: FiniteFloat | Int64

    @model_validator(mode="after")
    def _ordered(self) -> Distribution:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.distribution == "log_uniform" and self.low <= 0:
            raise ValueError(f"log_uniform needs low > 0 (got {self.low})")
        if self.distribution == "int_uniform" and max(abs(self.low), abs(self.high)) >= 2**62:
            raise ValueError("int_uniform draws 64-bit integers: keep low and high within ±2**62")
        return self


@dataclass(config=STRICT)
class HalvingConfig:
    """Successive halving: at each rung (an epoch count) only the best ``keep`` fraction of
    the still-running members of a group go on; the rest stop and cost nothing after."""

    rungs: tuple[Epochs, ...]
    keep: OpenFraction = 0.5

    @model_validator(mode="after")
    def _increasing(self) -> HalvingConfig:
        if list(self.rungs) != sorted(set(self.rungs)):
            raise ValueError(f"rungs must be strictly increasing epochs (got {list(self.rungs)})")
        return self


@dataclass(config=STRICT)
class PBTConfig:
    """Population-based training: every ``every`` epochs the worst ``fraction`` of a group
    copy the state of a member from the best ``fraction`` (exploit), then multiply each
    swept optimizer setting by a factor drawn from ``perturb`` (explore)."""

    every: Epochs = 2
    fraction: Annotated[FiniteFloat, Field(gt=0, le=0.5)] = 0.25
    perturb: tuple[Annotated[FiniteFloat, Field(gt=0)], ...] = (0.8, 1.25)


@dataclass(config=STRICT)
class SweepConfig:
    """The search: ``axes`` (key -> list of values or a distribution) and how to run it.

    ``samples`` unset: the cartesian product of the lists (every axis must be a list).
    ``samples: N``: N members, each axis drawn independently (lists uniformly) with ``seed``.
    ``metric`` ranks members (default: ``train.checkpoint.monitor``, else the task's).
    ``devices``: how many devices share the members (default: all that divide the count).
    ``checkpoint_every``: evaluations between population checkpoints (for ``resume``).
    """

    axes: dict[AxisKey, list[Any] | Distribution]
    samples: Members | None = None
    seed: Seed = 0
    metric: Literal["accuracy", "loss", "f1_macro", "mse", "rmse", "mae", "r2"] | None = None
    halving: HalvingConfig | None = None
    pbt: PBTConfig | None = None
    devices: PositiveInt | None = None
    checkpoint_every: PositiveInt = 1

    @model_validator(mode="after")
    def _searchable(self) -> SweepConfig:
        if not self.axes:
            raise ValueError("axes: give at least one key to sweep")
        for key, values in self.axes.items():
            if isinstance(values, list) and not values:
                raise ValueError(f"axes.{key}: the list of values is empty")
            if isinstance(values, Distribution) and self.samples is None:
                raise ValueError(
                    f"axes.{key} is a distribution: set sweep.samples (how many to draw)"
                )
        if "name" in self.axes or any(k.endswith(".name") for k in self.axes):
            raise ValueError("axes: a 'name' key cannot be swept (it picks the section's kind)")
        if self.samples is None and math.prod(len(v) for v in self.axes.values()) > MAX_MEMBERS:
            raise ValueError(
                f"axes: the grid has more than {MAX_MEMBERS} members (a sanity cap: every "
                "member is trained); sample it with sweep.samples"
            )
        return self
