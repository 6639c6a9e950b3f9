"""The search space: from a ``sweep:`` section to members, grouped into vmappable programs.

A member is one setting of every swept key. Members whose non-vmappable settings agree (same
shapes, same static options) form a group: one compiled program trains them all at once.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from jaxtrain import registry
from jaxtrain.config import Config, ConfigError, config_to_dict, validate
from jaxtrain.config.load import apply_overrides
from jaxtrain.config.sweep import Distribution, SweepConfig

# Swept keys of the built-in optimizers that vary inside one program, and the optimizer-state
# entry each one sets (a registered optimizer's: :func:`state_entries`).
HYPERPARAMS = {
    "optimizer.learning_rate": "peak_learning_rate",
    "optimizer.weight_decay": "weight_decay",
    "optimizer.b1": "b1",
    "optimizer.b2": "b2",
    "optimizer.eps": "eps",
    "optimizer.momentum": "momentum",
    "optimizer.grad_clip_norm": "grad_clip_norm",
}
SEEDS = ("seed", "data.seed")  # init/dropout key and data split/shuffle: per member too


@dataclass(frozen=True)
class Member:
    """``index`` is the member's id in the sweep; ``settings`` its swept values; ``config``
    the complete standalone config those settings make (no ``sweep`` section)."""

    index: int
    settings: dict[str, Any]
    config: Config


@dataclass(frozen=True)
class Group:
    """Members that share one program: ``static`` holds the settings that fixed it."""

    index: int
    static: dict[str, Any]
    members: tuple[Member, ...]

    @property
    def config(self) -> Config:
        """The group's base config (its first member's)."""
        return self.members[0].config


def state_entries(config: Config) -> dict[str, str]:
    """``{swept key: optimizer-state entry}`` for every optimizer setting of ``config`` that
    lives in the optimizer state (built-in or registered optimizers: ``optimizer.learning_rate``
    sets the peak, ``optimizer.b1`` sets ``b1`` ...; clipping only when it is on, since
    switching it on or off changes the program)."""
    entries = registry.optimizer_hyperparams(config.optimizer)
    return {f"optimizer.{key}": name for key, name in entries.items()}


def vmappable(key: str, config: Config) -> bool:
    """Whether ``key`` can differ between members of one program under ``config``."""
    return key in SEEDS or key in state_entries(config)


def draw(sweep: SweepConfig) -> list[dict[str, Any]]:
    """The members' settings: the grid (no ``samples``) or ``samples`` seeded random draws."""
    keys = list(sweep.axes)
    if sweep.samples is None:
        return [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*[sweep.axes[k] for k in keys])
        ]
    rng = np.random.default_rng(sweep.seed)
    columns = {key: _sample(sweep.axes[key], sweep.samples, rng) for key in keys}
    return [{key: columns[key][i] for key in keys} for i in range(sweep.samples)]


def _sample(axis: list[Any] | Distribution, n: int, rng: np.random.Generator) -> list[Any]:
    if isinstance(axis, list):
        return [axis[i] for i in rng.integers(0, len(axis), n)]
    low, high = axis.low, axis.high
    if axis.distribution == "int_uniform":
        return [int(v) for v in rng.integers(int(low), int(high) + 1, n)]
    if axis.distribution == "log_uniform":
        return [float(v) for v in np.exp(rng.uniform(np.log(low), np.log(high), n))]
    return [float(v) for v in rng.uniform(low, high, n)]


def expand(config: Config, source: str = "config") -> list[Group]:
    """Every member as a validated standalone config, grouped by program.

    Raises ConfigError naming ``source``, the member and the key when a setting does not fit
    the config (an unknown key such as ``optimizer.momentum`` for adam, a bad value).
    """
    if config.sweep is None:
        raise ConfigError(f"{source}: sweep: the config has no sweep section")
    base = config_to_dict(replace(config, sweep=None))
    members = []
    for index, settings in enumerate(draw(config.sweep)):
        raw = apply_overrides(base, settings)
        where = f"{source} (sweep member {index}: {json.dumps(settings)})"
        members.append(Member(index, settings, validate(raw, where, tuple(settings))))
    groups: dict[str, list[Member]] = {}
    for member in members:
        static = {k: v for k, v in member.settings.items() if not vmappable(k, member.config)}
        groups.setdefault(json.dumps(static, sort_keys=True), []).append(member)
    return [
        Group(i, json.loads(key), tuple(group)) for i, (key, group) in enumerate(groups.items())
    ]


def hyperparams_of(members: tuple[Member, ...]) -> dict[str, np.ndarray]:
    """Per-member optimizer-state entries f32[K] for every hyperparameter the config has."""
    columns: dict[str, list[float]] = {}
    for member in members:
        optimizer = member.config.optimizer
        for key, name in state_entries(member.config).items():
            value = getattr(optimizer, key.split(".")[1], None)
            if value is not None:
                columns.setdefault(name, []).append(float(value))
    return {name: np.asarray(values, np.float32) for name, values in columns.items()}
