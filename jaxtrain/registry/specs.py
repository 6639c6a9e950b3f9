"""What a family is: its spec (builder and config class, factory, loader), the errors, and the
names jaxtrain fills in. Imports nothing heavy."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

BUILTIN_MODELS = ("mlp", "cnn", "resnet", "linear", "transformer_lm", "vit", "decision_tree",
                  "random_forest")  # fmt: skip


BUILTIN_OPTIMIZERS = ("adam", "adamw", "sgd")


GROUPS = {"model": "jaxtrain.models", "optimizer": "jaxtrain.optimizers",
          "dataset": "jaxtrain.datasets"}  # fmt: skip


OPEN_TAG = "registered"  # the union branch of every non-built-in section (see config/schema)


PEAK = "peak_learning_rate"  # the optimizer-state entry the learning rate's schedule scales


OUTPUTS = ("num_outputs", "num_classes")  # filled in with the outputs per example


FILLED = (*OUTPUTS, "input_shape", "in_features", "rngs")  # filled in, never config keys


TASKS = ("classification", "regression")


class RegistryError(ValueError):
    """A name that cannot be resolved, or a registration that cannot be accepted."""


@dataclass(frozen=True)
class ModelSpec:
    """A model family: ``builder(config, num_outputs, input_shape) -> module`` (a Flax linen
    module, or an NNX module; an NNX builder takes a fourth argument ``rngs``, an
    ``nnx.Rngs`` seeded from the run's seed, so every seed initialises its own parameters).

    ``config_class``: a (frozen) pydantic dataclass of the family's keys, as the built-ins in
    :mod:`jaxtrain.config.schema`; a ``name`` field is added when it has none. ``tasks``: the
    tasks it serves (``classification``, ``regression``, ``language_model``);
    ``input_ranks``: the example ranks it accepts (None: any)."""

    builder: Callable[..., Any]
    config_class: type
    tasks: tuple[str, ...] = TASKS
    input_ranks: tuple[int, ...] | None = None

    @property
    def nnx(self) -> bool:
        """Whether the builder makes an NNX module from ``rngs``."""
        return "rngs" in parameters(self.builder)


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer: ``factory(learning_rate=..., **settings) -> optax.GradientTransformation``.

    ``config_class`` (optional; default: derived from the factory's keyword parameters) holds
    the keys; it must have ``learning_rate``. jaxtrain wraps the factory so that every float
    setting lives in the optimizer state (as ``optax.inject_hyperparams`` does): the learning
    rate follows the ``schedule:`` key, and sweeps, the plateau schedule and rollbacks can
    change any of them per run. ``transformation``: a ready ``GradientTransformation`` instead
    (what :func:`jaxtrain.fit` records as ``optimizer.name: given``), used as it is."""

    factory: Callable[..., Any] | None = None
    config_class: type | None = None
    transformation: Any = None


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: ``loader()`` or ``loader(data_config)`` returns its examples in any form
    :func:`jaxtrain.data.arrays.as_source` reads: ``(inputs, labels)`` arrays, a dict of
    splits, a pandas DataFrame (a table, read with the ``data:`` table keys), a TFDS or grain
    random-access source."""

    loader: Callable[..., Any]


@dataclass(frozen=True)
class Family:
    """A resolved, non-built-in family: its ``name`` as configs write it, the ``spec``, the
    ``section`` class configs validate against, and ``keys`` (its settings, without name)."""

    kind: str
    name: str
    spec: Any
    section: type
    keys: tuple[str, ...]
    floats: tuple[str, ...] = ()  # settings kept in the optimizer state (optimizers)

    @functools.cached_property
    def adapter(self) -> pydantic.TypeAdapter:
        return pydantic.TypeAdapter(self.section)

    def validate(self, raw: Mapping[str, Any]) -> Any:
        """``raw`` (the section as written) -> a ``section`` instance; errors are pydantic's,
        located at the keys (``widht``)."""
        return self.adapter.validate_json(json.dumps(dict(raw), default=str), strict=True)

    def settings(self, section: Any) -> dict[str, Any]:
        """The section's values by key, lists as tuples (Flax modules hash their fields)."""
        return {key: frozen(getattr(section, key)) for key in self.keys}


def frozen(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(frozen(v) for v in value)
    return value


def parameters(function: Callable) -> set[str]:
    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()
