"""A vmapped hyperparameter sweep (``jaxtrain sweep``): see jaxtrain/sweep and docs/sweeps.md.

``axes`` maps a dotted config key to the values it takes: a list (a grid, or choices for a
random search) or a distribution. Keys that only change numbers (optimizer settings, the
``seed`` and ``data.seed``) vary inside one vmapped program; any other key (``model.hidden``,
``model.dropout``, ``data.batch_size``) splits the members into groups, one program each.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from jaxtrain.config.base import STRICT, PositiveInt

AxisKey = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]
OpenFraction = Annotated[float, Field(gt=0, lt=1)]


@dataclass(config=STRICT)
class Distribution:
    """A random-search axis: ``uniform`` or ``log_uniform`` on [low, high] (floats), or
    ``int_uniform`` on the integers low..high inclusive (seeds)."""

    distribution: Literal["uniform", "log_uniform", "int_uniform"]
    low: float | int
    high: float | int

    @model_validator(mode="after")
    def _ordered(self) -> Distribution:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.distribution == "log_uniform" and self.low <= 0:
            raise ValueError(f"log_uniform needs low > 0 (got {self.low})")
        return self


@dataclass(config=STRICT)
class HalvingConfig:
    """Successive halving: at each rung (an epoch count) only the best ``keep`` fraction of
    the still-running members of a group go on; the rest stop and cost nothing after."""

    rungs: tuple[PositiveInt, ...]
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

    every: PositiveInt = 2
    fraction: Annotated[float, Field(gt=0, le=0.5)] = 0.25
    perturb: tuple[Annotated[float, Field(gt=0)], ...] = (0.8, 1.25)


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
    samples: PositiveInt | None = None
    seed: int = 0
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
        return self
