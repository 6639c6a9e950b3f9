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
from jaxtrain.config.members import member_raw
from jaxtrain.config.sweep import Axis, Choice, SweepConfig, choices_of

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
    """The members' settings: the grid (no ``samples``) or ``samples`` seeded random draws.
    A member holds only the axes whose conditions it meets (see :func:`active_settings`); a
    grid holds each distinct member once."""
    keys = list(sweep.axes)
    if sweep.samples is None:
        members, seen = [], set()
        for values in itertools.product(*[choices_of(sweep.axes[k]) for k in keys]):
            settings = active_settings(sweep, dict(zip(keys, values, strict=True)))
            text = json.dumps(settings, sort_keys=True)
            if text not in seen:
                seen.add(text)
                members.append(settings)
        return members
    rng = np.random.default_rng(sweep.seed)
    columns = {key: _sample(sweep.axes[key], sweep.samples, rng) for key in keys}
    return [
        active_settings(sweep, {key: columns[key][i] for key in keys}) for i in range(sweep.samples)
    ]


def active_settings(sweep: SweepConfig, settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without the axes whose ``when`` conditions they do not meet (in axis
    order, so a condition on a dropped axis drops its dependants too)."""
    kept: dict[str, Any] = {}
    for key in sweep.axes:
        if key in settings and sweep.active(key, kept):
            kept[key] = settings[key]
    return kept


def _sample(axis: Axis, n: int, rng: np.random.Generator) -> list[Any]:
    if isinstance(axis, list | Choice):
        values = choices_of(axis)
        return [values[i] for i in rng.integers(0, len(values), n)]
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
    settings = draw(config.sweep)
    return group_members([member_of(config, index, s, source) for index, s in enumerate(settings)])


def member_of(
    config: Config, index: int, settings: dict[str, Any], source: str, base: dict | None = None
) -> Member:
    """Member ``index``: ``config`` (its sweep section removed) with ``settings`` applied
    (a swept ``optimizer.name`` switches the section's kind: ``jaxtrain.config.members``),
    validated as a standalone config. Raises ConfigError naming the member and the key.
    ``base``: ``config`` as a plain mapping without its sweep section (computed if not given).
    """
    base = base if base is not None else config_to_dict(replace(config, sweep=None))
    where = f"{source} (sweep member {index}: {json.dumps(settings)})"
    return Member(index, settings, validate(member_raw(base, settings), where, tuple(settings)))


def group_members(members: list[Member]) -> list[Group]:
    """Members grouped by the settings that fix their program (shapes, static options), in
    order of first appearance."""
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
