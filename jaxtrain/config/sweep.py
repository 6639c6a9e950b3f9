"""A vmapped hyperparameter sweep (``jaxtrain sweep``): see jaxtrain/sweep and docs/sweeps.md.

``axes`` maps a dotted config key to the values it takes: a list (a grid, or choices for a
random search) or a distribution. Keys that only change numbers (optimizer settings, the
``seed`` and ``data.seed``) vary inside one vmapped program; any other key (``model.hidden``,
``model.dropout``, ``data.batch_size``) splits the members into groups, one program each.

An axis may exist only under another axis's choice (``when: {optimizer.name: sgd}``): a
member that does not meet the condition has no setting for it. ``method: tpe`` (``gp``,
``cmaes``, ``random``) with ``batch`` and ``rounds`` asks an Optuna sampler for ``batch``
settings per round and trains each round as one population (``jaxtrain/sweep/search.py``).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator
from pydantic.dataclasses import dataclass

from jaxtrain.config.base import STRICT, Epochs, FiniteFloat, PositiveInt, Seed, capped

AxisKey = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]
OpenFraction = Annotated[FiniteFloat, Field(gt=0, lt=1)]
Condition = dict[AxisKey, Any]  # axis -> the value (or list of values) that turns an axis on
Int64 = capped(2**63 - 1, "numpy draws 64-bit integers", low=-(2**63))
MAX_MEMBERS = 100_000
KIND_KEYS = ("optimizer.name", "model.name")  # the section's kind: sweepable (see members.py)
SEARCH_METHODS = ("tpe", "gp", "cmaes", "random")  # Optuna samplers, asked in rounds
Members = capped(MAX_MEMBERS, "a sanity cap: every member is trained, most of them at once")


@dataclass(config=STRICT)
class Distribution:
    """A random-search axis: ``uniform`` or ``log_uniform`` on [low, high] (floats), or
    ``int_uniform`` on the integers low..high inclusive (seeds)."""

    distribution: Literal["uniform", "log_uniform", "int_uniform"]
    low: FiniteFloat | Int64
    high: FiniteFloat | Int64
    when: Condition | None = None

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
class Choice:
    """A list axis with a condition: ``{choices: [0.8, 0.9], when: {optimizer.name: sgd}}``
    (a plain list is a ``Choice`` that always applies)."""

    choices: list[Any]
    when: Condition | None = None


def _axis_kind(value: Any) -> str:
    """Which form an axis takes, so a mistake is reported against that form only."""
    if isinstance(value, list):
        return "list axis"
    if isinstance(value, dict) and "choices" in value:
        return "choice axis"
    if isinstance(value, Distribution | Choice):
        return "choice axis" if isinstance(value, Choice) else "range axis"
    return "range axis"


Axis = Annotated[
    Annotated[list[Any], Tag("list axis")]
    | Annotated[Distribution, Tag("range axis")]
    | Annotated[Choice, Tag("choice axis")],
    Discriminator(_axis_kind),
]


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
    """The search: ``axes`` (key -> list of values, a distribution or a conditional choice)
    and how to run it.

    ``samples`` unset: the cartesian product of the lists (every axis must be a list).
    ``samples: N``: N members, each axis drawn independently (lists uniformly) with ``seed``.
    ``method: tpe|gp|cmaes|random`` with ``rounds: R`` (and ``batch: K``): R rounds, each
    asking an Optuna sampler for K settings, training them as one population and telling it
    their validation metric; ``startup_trials`` random trials first (TPE/GP; Optuna's default
    10); ``compare_random`` also runs Optuna's random sampler on the same budget beside it.
    ``metric`` ranks members (default: ``train.checkpoint.monitor``, else the task's).
    ``devices``: how many devices share the members (default: all that divide the count).
    ``checkpoint_every``: evaluations between population checkpoints (for ``resume``); unset:
    every evaluation, or in a search in rounds only at the end of each round (a resumed
    search trains the interrupted round again: same trials, same results).
    """

    axes: dict[AxisKey, Axis]
    samples: Members | None = None
    seed: Seed = 0
    metric: Literal["accuracy", "loss", "f1_macro", "mse", "rmse", "mae", "r2"] | None = None
    halving: HalvingConfig | None = None
    pbt: PBTConfig | None = None
    devices: PositiveInt | None = None
    checkpoint_every: PositiveInt | None = None
    method: Literal["grid", "random", "tpe", "gp", "cmaes"] | None = None
    batch: Members | None = None
    rounds: Members | None = None
    startup_trials: PositiveInt | None = None
    compare_random: bool = False

    @property
    def search(self) -> bool:
        """Whether an Optuna sampler proposes the members in rounds."""
        return self.rounds is not None

    @property
    def trials(self) -> int:
        """Members in the whole search: ``batch * rounds`` (search) or the grid/samples."""
        if self.search:
            return self.batch_size * self.rounds
        if self.samples is not None:
            return self.samples
        return math.prod(len(choices_of(a)) for a in self.axes.values())

    @property
    def batch_size(self) -> int:
        return self.batch or 8

    def conditions(self, key: str) -> dict[str, list[Any]]:
        """The axes that turn ``key`` on, each with the values that do."""
        when = getattr(self.axes[key], "when", None) or {}
        return {k: v if isinstance(v, list) else [v] for k, v in when.items()}

    def active(self, key: str, settings: dict[str, Any]) -> bool:
        """Whether axis ``key`` applies to a member with ``settings`` (its conditions met)."""
        return all(
            k in settings and settings[k] in allowed for k, allowed in self.conditions(key).items()
        )

    def context(self, key: str) -> dict[str, Any]:
        """Settings of the other axes under which ``key`` applies (each condition's first
        value, and what that axis needs in turn): how a conditional value is checked."""
        found: dict[str, Any] = {}
        for other, allowed in self.conditions(key).items():
            found.update(self.context(other))
            found[other] = allowed[0]
        return found

    @model_validator(mode="after")
    def _searchable(self) -> SweepConfig:
        if not self.axes:
            raise ValueError("axes: give at least one key to sweep")
        keys = list(self.axes)
        for position, (key, axis) in enumerate(self.axes.items()):
            if isinstance(axis, list | Choice) and not choices_of(axis):
                raise ValueError(f"axes.{key}: the list of values is empty")
            if isinstance(axis, Distribution) and self.samples is None and not self.search:
                raise ValueError(
                    f"axes.{key} is a distribution: set sweep.samples (how many to draw) or "
                    "sweep.rounds (a model-based search)"
                )
            if key == "name" or (key.endswith(".name") and key not in KIND_KEYS):
                raise ValueError(
                    f"axes.{key}: a 'name' key cannot be swept (it picks the section's kind); "
                    f"only {' and '.join(KIND_KEYS)} can"
                )
            for other, allowed in self.conditions(key).items():
                where = f"axes.{key}.when.{other}"
                if other not in keys[:position]:
                    raise ValueError(f"{where}: name an axis listed before {key}")
                if isinstance(self.axes[other], Distribution):
                    raise ValueError(f"{where}: a condition needs a list axis (choices)")
                missing = [v for v in allowed if v not in choices_of(self.axes[other])]
                if missing:
                    raise ValueError(
                        f"{where}: {missing[0]!r} is not one of the axis's values "
                        f"{choices_of(self.axes[other])}"
                    )
        self._check_method()
        if not self.search and self.trials > MAX_MEMBERS:
            raise ValueError(
                f"axes: the grid has more than {MAX_MEMBERS} members (a sanity cap: every "
                "member is trained); sample it with sweep.samples"
            )
        return self

    def _check_method(self) -> None:
        method = self.method
        if method == "cmaes":
            raise ValueError(
                "method: cmaes is refused: Optuna's CMA-ES sampler keeps its state pickled in "
                "the study (study.db), and jaxtrain never loads pickles from a run directory; "
                "use tpe, gp or random"
            )
        if method in SEARCH_METHODS and method != "random" and self.rounds is None:
            raise ValueError(f"method: {method} asks in rounds: set sweep.rounds (and batch)")
        if method == "random" and self.samples is None and self.rounds is None:
            raise ValueError("method: random needs sweep.samples (one population) or rounds")
        if method == "grid" and (self.samples is not None or self.search):
            raise ValueError("method: grid takes every combination: remove samples/rounds")
        if self.search:
            if method not in SEARCH_METHODS:
                raise ValueError(
                    "rounds: a search in rounds needs method: tpe, gp, cmaes or random"
                )
            if self.samples is not None:
                raise ValueError("samples: a search in rounds asks batch x rounds; remove it")
            if self.pbt is not None:
                raise ValueError(
                    f"pbt: population-based training changes a member's settings while it "
                    f"trains, so method {method} would learn from settings it did not train; "
                    "use halving"
                )
            if self.batch_size * self.rounds > MAX_MEMBERS:
                raise ValueError(
                    f"rounds: batch x rounds is more than {MAX_MEMBERS} trials (a sanity cap)"
                )
            if method == "random" and self.compare_random:
                raise ValueError("compare_random: the search is already random")
        else:
            for key in ("batch", "startup_trials"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: only a search in rounds (sweep.rounds) uses it")
            if self.compare_random:
                raise ValueError("compare_random: only a search in rounds (sweep.rounds) uses it")
        if self.startup_trials is not None and method not in ("tpe", "gp"):
            raise ValueError(f"startup_trials: only tpe and gp use it (method: {method})")


def choices_of(axis: Axis) -> list[Any]:
    """A list axis's values (a plain list or a :class:`Choice`); ``[]`` for a distribution."""
    if isinstance(axis, Choice):
        return axis.choices
    return axis if isinstance(axis, list) else []


def sweep_contexts(sweep: SweepConfig, key: str) -> list[dict[str, Any]]:
    """The settings of other axes under which a value of axis ``key`` is checked: the ones
    that turn it on, and for each swept section kind (``optimizer.name``) it is not tied to,
    each of that kind's values (so ``optimizer.b1`` swept beside ``optimizer.name: [adamw,
    sgd]`` without ``when`` fails when the config is read)."""
    context = sweep.context(key)
    contexts = [context]
    for kind in KIND_KEYS:
        if kind == key or kind in context or kind not in sweep.axes:
            continue
        for value in choices_of(sweep.axes[kind]):
            contexts.append({**context, **sweep.context(kind), kind: value})
    return contexts
