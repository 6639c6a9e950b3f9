"""Open registries: the model families, optimizers and datasets a config can name.

A ``name`` in ``model:``, ``optimizer:`` or ``data:`` is looked up in this order:

1. a built-in (``mlp``, ``cnn``, ...; ``adam``, ``adamw``, ``sgd``; the bundled datasets),
   validated by :mod:`jaxtrain.config.schema` as before;
2. a family registered in this process: :func:`register_model`, :func:`register_optimizer`,
   :func:`register_dataset`;
3. an import path ``package.module:object`` (``model: {name: my_pkg.nets:WideMLP}``);
4. an entry point of an installed package, in the group ``jaxtrain.models``,
   ``jaxtrain.optimizers`` or ``jaxtrain.datasets``: the entry point's name is the name
   configs use, its value (``package.module:object``) resolves like an import path.

What an import path or entry point may name:

- a model: a :class:`ModelSpec`, or a Flax module class (linen or NNX). A module class gets
  a config section derived from its own settings: a linen module's dataclass fields, an NNX
  module's ``__init__`` parameters, each with its annotation (or the type of its default)
  and its default (none: a required key). Settings that cannot be written in YAML (a
  callable, a dtype) keep their defaults and are not keys. Some names are filled in from the
  data instead of the config: ``num_outputs`` or ``num_classes`` (the outputs per example),
  ``input_shape`` (one example's shape), ``in_features`` (its size) and, for NNX, ``rngs``
  (``nnx.Rngs(params=key)`` from the run's seed).
- an optimizer: an :class:`OptimizerSpec`, or a function returning an
  ``optax.GradientTransformation`` (``optax:adamw``): its keyword parameters are the keys,
  ``learning_rate`` is required, and a ``schedule:`` key (as for the built-ins) is added.
- a dataset: a :class:`DatasetSpec` or a loader function (see :func:`register_dataset`).

Nothing here imports JAX, Flax or Optax: a config is still validated before the heavy stack
loads. Resolving a registered, import-path or entry-point family imports the module that
defines it (which may import Flax) when the config is validated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import re
import sys
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

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
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@functools.cache
def _section_config() -> pydantic.ConfigDict:
    """The built-ins' strictness; frozen is given per class (a subclass must match its base).
    (Imported late: the config package imports this module.)"""
    from jaxtrain.config.base import STRICT

    return pydantic.ConfigDict(**{k: v for k, v in STRICT.items() if k != "frozen"})


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
        return "rngs" in _parameters(self.builder)


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
        return {key: _frozen(getattr(section, key)) for key in self.keys}


_REGISTERED: dict[str, dict[str, Family]] = {"model": {}, "optimizer": {}, "dataset": {}}
_RESOLVED: dict[tuple[str, str], Family | None] = {}


# --- registration --------------------------------------------------------------------------


def register_model(
    name: str,
    builder: Callable[..., Any],
    config_class: type,
    *,
    tasks: tuple[str, ...] = TASKS,
    input_ranks: tuple[int, ...] | None = None,
    replace: bool = False,
) -> None:
    """Make ``model: {name: <name>, ...}`` build ``builder(config, num_outputs, input_shape)``
    (see :class:`ModelSpec`), its keys validated by ``config_class``. The name is recorded in
    the run (config.yaml, metrics.json, report.md). ``replace`` allows re-registering a name
    with another builder (a reloaded notebook cell)."""
    spec = ModelSpec(builder, config_class, tuple(tasks), input_ranks)
    _register("model", name, spec, replace)


def register_optimizer(
    name: str,
    factory: Callable[..., Any],
    config_class: type | None = None,
    *,
    replace: bool = False,
) -> None:
    """Make ``optimizer: {name: <name>, learning_rate: ..., ...}`` build
    ``factory(learning_rate=..., **settings)`` (see :class:`OptimizerSpec`)."""
    _register("optimizer", name, OptimizerSpec(factory, config_class), replace)


def register_dataset(name: str, loader: Callable[..., Any], *, replace: bool = False) -> None:
    """Make ``data: {name: <name>}`` load ``loader()`` (or ``loader(data_config)``), prepared
    like any other source (cleaning, splits, normalisation; see :class:`DatasetSpec`)."""
    _register("dataset", name, DatasetSpec(loader), replace)


def unregister(kind: str, name: str) -> None:
    """Forget a family registered in this process (``kind``: model, optimizer, dataset)."""
    _REGISTERED[kind].pop(name, None)
    _RESOLVED.pop((kind, name), None)


@contextlib.contextmanager
def registered(kind: str, name: str, spec: Any) -> Iterator[Family]:
    """``spec`` registered as ``name`` for the block (replacing any, restored after)."""
    before = _REGISTERED[kind].get(name)
    family = _family(kind, name, spec)
    _REGISTERED[kind][name] = family
    _RESOLVED.pop((kind, name), None)
    try:
        yield family
    finally:
        if before is None:
            _REGISTERED[kind].pop(name, None)
        else:
            _REGISTERED[kind][name] = before
        _RESOLVED.pop((kind, name), None)


def _register(kind: str, name: str, spec: Any, replace: bool) -> None:
    builtins = {"model": BUILTIN_MODELS, "optimizer": BUILTIN_OPTIMIZERS}.get(kind, ())
    if kind == "dataset":
        from jaxtrain.data.builders import LOCAL_BUILDERS  # light: no TFDS import

        builtins = tuple(LOCAL_BUILDERS)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistryError(
            f"register_{kind}: {name!r} is not a valid name (a letter, then letters, digits, "
            "'_' or '-'; import paths need no registration)"
        )
    if name in builtins:
        raise RegistryError(f"register_{kind}: {name!r} is a built-in {kind}; choose another name")
    previous = _REGISTERED[kind].get(name)
    if previous is not None and previous.spec != spec and not replace:
        raise RegistryError(
            f"register_{kind}: {name!r} is already registered with another {kind}; pass "
            "replace=True to replace it"
        )
    _REGISTERED[kind][name] = _family(kind, name, spec)
    _RESOLVED.pop((kind, name), None)


# --- resolution ----------------------------------------------------------------------------


def is_import_path(name: str) -> bool:
    """``package.module:object`` (the module part may be a single name)."""
    return isinstance(name, str) and bool(_IMPORT_PATH.fullmatch(name))


def resolve(kind: str, name: str) -> Family:
    """The family ``name`` names (not a built-in): registered, import path or entry point.

    Raises :class:`RegistryError` with one line saying what was tried."""
    family = find(kind, name)
    if family is None:
        raise RegistryError(_unknown(kind, name))
    return family


def find(kind: str, name: str) -> Family | None:
    """:func:`resolve`, or None when nothing of that name exists (a dataset name may still be
    a TFDS one). Problems inside an existing family (an import error) still raise."""
    if name in _REGISTERED[kind]:
        return _REGISTERED[kind][name]
    key = (kind, name)
    if key not in _RESOLVED:
        _RESOLVED[key] = _lookup(kind, name)
    return _RESOLVED[key]


def registered_names(kind: str) -> list[str]:
    """The names registered in this process (not entry points, which load on first use)."""
    return sorted(_REGISTERED[kind])


def _lookup(kind: str, name: str) -> Family | None:
    if is_import_path(name):
        module_name = name.partition(":")[0]
        if kind == "dataset" and not _importable(module_name):
            return None  # a TFDS namespaced name (community:dataset), not a module
        return _family(kind, name, _import(name, f"{kind}.name"))
    points = [p for p in importlib.metadata.entry_points(group=GROUPS[kind]) if p.name == name]
    if not points:
        return None
    values = sorted({p.value for p in points})
    if len(values) > 1:
        raise RegistryError(
            f"{name!r}: installed packages offer it twice in the entry-point group "
            f"{GROUPS[kind]} ({', '.join(values)}); uninstall one"
        )
    return _family(kind, name, _import(values[0], f"entry point {name} ({GROUPS[kind]})"))


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _import(path: str, where: str) -> Any:
    """The object at ``package.module:attr.attr``; one-line errors naming ``where``."""
    module_name, _, attribute = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any error of the user's module is fatal here
        raise RegistryError(
            f"{path!r}: cannot import module {module_name!r} ({type(err).__name__}: {err})"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise RegistryError(f"{path!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target


def _unknown(kind: str, name: str) -> str:
    builtins = {"model": BUILTIN_MODELS, "optimizer": BUILTIN_OPTIMIZERS}.get(kind, ())
    known = [*builtins, *registered_names(kind)]
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"{name!r} is not a {kind}{hint}: not built in ({', '.join(builtins)}), not "
        f"registered in this process{_listed(registered_names(kind))}, and no installed "
        f"package offers it (entry-point group {GROUPS[kind]}); or name one by import path, "
        "package.module:Object"
    )


def _listed(names: list[str]) -> str:
    return f" ({', '.join(names)})" if names else ""


# --- the section class of a family ---------------------------------------------------------


def _family(kind: str, name: str, spec: Any) -> Family:
    """The spec (or what an import path named) as a :class:`Family` with its section class."""
    if kind == "model":
        spec = _model_spec(spec, name)
        section = _named(spec.config_class, name, "model")
        return Family(kind, name, spec, section, _keys(section))
    if kind == "optimizer":
        spec = _optimizer_spec(spec, name)
        if spec.transformation is not None:
            section = _derived(name, [], "given")
            return Family(kind, name, spec, section, ())
        if spec.config_class is None:
            fields = _signature_fields(spec.factory, name, skip=())
            section = _derived(name, _with_schedule(fields), spec.factory.__name__.title())
        else:
            section = _named(spec.config_class, name, "optimizer")
        keys = _keys(section)
        if "learning_rate" not in keys:
            raise RegistryError(
                f"optimizer {name!r}: its config has no learning_rate key (every optimizer "
                "takes one)"
            )
        floats = tuple(k for k in keys if k != "schedule" and _is_float(section, k))
        return Family(kind, name, spec, section, keys, floats)
    if isinstance(spec, DatasetSpec):
        return Family(kind, name, spec, object, ())
    if callable(spec):
        return Family(kind, name, DatasetSpec(spec), object, ())
    raise RegistryError(f"dataset {name!r}: expected a loader function or a DatasetSpec")


def _model_spec(target: Any, name: str) -> ModelSpec:
    if isinstance(target, ModelSpec):
        if not callable(target.builder):
            raise RegistryError(f"model {name!r}: the builder is not callable")
        return target
    if inspect.isclass(target) and _is_flax_module(target):
        fields = _module_fields(target, name)
        section = _derived(name, fields, target.__name__)
        return ModelSpec(_module_builder(target), section, TASKS, None)
    raise RegistryError(
        f"model {name!r}: expected a Flax module class (linen or NNX) or a "
        f"jaxtrain.registry.ModelSpec, got {_kind_of(target)}"
    )


def _optimizer_spec(target: Any, name: str) -> OptimizerSpec:
    if isinstance(target, OptimizerSpec):
        if target.transformation is None and not callable(target.factory):
            raise RegistryError(f"optimizer {name!r}: the factory is not callable")
        return target
    if callable(target) and not inspect.isclass(target):
        return OptimizerSpec(target)
    raise RegistryError(
        f"optimizer {name!r}: expected a function returning an optax.GradientTransformation "
        f"(such as optax:adamw) or a jaxtrain.registry.OptimizerSpec, got {_kind_of(target)}"
    )


def _kind_of(value: Any) -> str:
    return f"the class {value.__name__}" if inspect.isclass(value) else type(value).__name__


def _is_flax_module(cls: type) -> bool:
    return _is_linen(cls) or _is_nnx(cls)


def _is_linen(cls: type) -> bool:
    linen = sys.modules.get("flax.linen")
    return linen is not None and inspect.isclass(cls) and issubclass(cls, linen.Module)


def _is_nnx(cls: type) -> bool:
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and inspect.isclass(cls) and issubclass(cls, nnx.Module)


Field = tuple[str, Any, Any]  # (key, type, default or dataclasses.MISSING)


def _module_fields(cls: type, name: str) -> list[Field]:
    """The config keys of a module class: linen dataclass fields or NNX ``__init__``
    parameters, minus those filled in from the data."""
    if _is_linen(cls):
        hints = _hints(cls)
        raw = [
            (f.name, hints.get(f.name, Any), _default_of(f))
            for f in dataclasses.fields(cls)
            if f.init and f.name not in ("parent", "name")
        ]
    else:
        return _signature_fields(cls.__init__, name, skip=FILLED)
    return _expressible([r for r in raw if r[0] not in FILLED], name)


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _signature_fields(function: Callable, name: str, skip: tuple[str, ...]) -> list[Field]:
    """The keyword parameters of ``function`` (annotation, default) as config keys."""
    hints = _hints(function)
    raw = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.name in ("self", *skip) or parameter.kind == parameter.POSITIONAL_ONLY:
            continue
        default = dataclasses.MISSING if parameter.default is parameter.empty else parameter.default
        raw.append((parameter.name, hints.get(parameter.name, Any), default))
    return _expressible(raw, name)


def _hints(target: Any) -> dict[str, Any]:
    """Resolved annotations of a class or function; unresolvable ones are left out."""
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - a forward reference we cannot see: field by field
        pass
    annotations: dict[str, Any] = {}
    owners = target.__mro__[::-1] if inspect.isclass(target) else [target]
    for owner in owners:
        module = sys.modules.get(getattr(owner, "__module__", ""), None)
        for key, value in getattr(owner, "__annotations__", {}).items():
            if isinstance(value, str):
                try:
                    value = eval(value, vars(module) if module else {})  # noqa: S307
                except Exception:  # noqa: BLE001
                    continue
            annotations[key] = value
    return annotations


def _expressible(raw: list[Field], name: str) -> list[Field]:
    """Keys whose type pydantic can validate from YAML; others keep their default (a
    required one that cannot be written is an error)."""
    fields = []
    for key, annotation, default in raw:
        kind = _config_type(key, annotation, default)
        if kind is None:
            if default is dataclasses.MISSING:
                raise RegistryError(
                    f"{name!r}: its setting {key!r} has no default and its type cannot be "
                    "written in a config; give it a default, or register the family with a "
                    "config class"
                )
            continue
        fields.append((key, kind, _frozen(default)))
    return fields


def _config_type(key: str, annotation: Any, default: Any) -> Any:
    """The type a config key gets: the annotation when pydantic can read it from JSON, else
    the type of a JSON-like default, else None."""
    if key == "learning_rate":
        from jaxtrain.config.base import PositiveFloat

        return PositiveFloat
    if annotation is not Any and annotation is not inspect.Parameter.empty:
        if _readable(annotation):
            return annotation
    if default is dataclasses.MISSING:
        return Any if annotation is Any else None
    if isinstance(default, bool):
        return bool
    if isinstance(default, float):
        return float
    if isinstance(default, int):
        return int
    if isinstance(default, str):
        return str
    if isinstance(default, tuple | list) and _json_like(default):
        return tuple[Any, ...]
    return None


def _readable(annotation: Any) -> bool:
    """Whether pydantic can validate ``annotation`` from YAML (a field of a probe section)."""
    try:
        probe = dataclasses.make_dataclass("Probe", [("value", annotation)], frozen=True)
        probe = pydantic.dataclasses.dataclass(probe, config=_section_config(), frozen=True)
        if not probe.__pydantic_complete__:
            return False
        pydantic.TypeAdapter(probe).json_schema()
    except Exception:  # noqa: BLE001 - any failure means: not a config key
        return False
    return True


def _json_like(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, tuple | list):
        return all(_json_like(v) for v in value)
    return False


def _with_schedule(fields: list[Field]) -> list[Field]:
    """An optimizer's keys plus ``schedule`` (warmup and decay of the learning rate)."""
    if any(key == "schedule" for key, _, _ in fields):
        return fields
    from jaxtrain.config.schema import ScheduleConfig

    return [*fields, ("schedule", ScheduleConfig, dataclasses.MISSING, ScheduleConfig)]


def _derived(name: str, fields: list, title: str) -> type:
    """A strict, frozen pydantic dataclass with ``fields`` (required ones first) and
    ``name: Literal[name]`` last."""
    required = [f for f in fields if f[2] is dataclasses.MISSING and len(f) == 3]
    optional = [f for f in fields if f not in required]
    spec = [(key, kind) for key, kind, *_ in required]
    for key, kind, default, *factory in optional:
        if factory:
            spec.append((key, kind, dataclasses.field(default_factory=factory[0])))
        else:
            spec.append((key, kind, dataclasses.field(default=default)))
    spec.append(("name", Literal[name], dataclasses.field(default=name)))
    cls = dataclasses.make_dataclass(f"{title}Config", spec, frozen=True)
    cls.__doc__ = f"The keys of {name!r} (derived from its signature)."
    return pydantic.dataclasses.dataclass(cls, config=_section_config(), frozen=True)


def _named(config_class: Any, name: str, kind: str) -> type:
    """``config_class`` with a ``name`` key (a subclass adds ``name: Literal[name]`` when the
    class has none), strict like the built-ins (unknown keys and wrong types are errors)."""
    if not (inspect.isclass(config_class) and dataclasses.is_dataclass(config_class)):
        raise RegistryError(
            f"{kind} {name!r}: config_class must be a (pydantic) dataclass, got "
            f"{_kind_of(config_class)}"
        )
    frozen = config_class.__dataclass_params__.frozen
    if "name" in {f.name for f in dataclasses.fields(config_class)}:
        module = {"__module__": config_class.__module__}
        subclass = type(config_class.__name__, (config_class,), module)
        return pydantic.dataclasses.dataclass(subclass, config=_section_config(), frozen=frozen)
    namespace = {
        "__annotations__": {"name": Literal[name]},
        "name": name,
        "__module__": config_class.__module__,
        "__qualname__": config_class.__qualname__,
        "__doc__": config_class.__doc__,
    }
    subclass = type(config_class.__name__, (config_class,), namespace)
    return pydantic.dataclasses.dataclass(subclass, config=_section_config(), frozen=frozen)


def _keys(section: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(section) if f.name != "name")


def _is_float(section: type, key: str) -> bool:
    """A float setting (kept in the optimizer state); ints, bools and text stay static."""
    for field in dataclasses.fields(section):
        if field.name == key:
            kind = typing.get_origin(field.type) or field.type
            if kind is typing.Annotated:
                kind = typing.get_args(field.type)[0]
            if isinstance(kind, str):
                return "float" in kind.lower()
            return kind is float
    return False


def _frozen(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


# --- builders of what an import path named -------------------------------------------------


def _module_builder(cls: type) -> Callable[..., Any]:
    """``builder(config, num_outputs, input_shape[, rngs])`` of a module class: its keys from
    the config, the filled-in names from the data."""
    parameters = (
        _parameters(cls.__init__) if _is_nnx(cls) else {f.name for f in dataclasses.fields(cls)}
    )

    def filled(num_outputs: int, input_shape: tuple[int, ...]) -> dict[str, Any]:
        values = {"input_shape": tuple(input_shape), "in_features": math.prod(input_shape)}
        values.update({key: num_outputs for key in OUTPUTS})
        return {k: v for k, v in values.items() if k in parameters}

    def settings(config: Any) -> dict[str, Any]:
        return {
            f.name: _frozen(getattr(config, f.name))
            for f in dataclasses.fields(config)
            if f.name != "name"
        }

    if _is_nnx(cls):

        def build_nnx(config, num_outputs, input_shape, rngs):
            return cls(**settings(config), **filled(num_outputs, input_shape), rngs=rngs)

        return build_nnx

    def build_linen(config, num_outputs, input_shape):
        return cls(**settings(config), **filled(num_outputs, input_shape))

    return build_linen


def _parameters(function: Callable) -> set[str]:
    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()


# --- validation of a section (called by the config schema) ---------------------------------


def validate_section(kind: str, value: Any) -> Any:
    """A ``model:`` / ``optimizer:`` section whose name is not a built-in, validated by its
    family's section class. Errors: a ValueError ``name: ...`` when the name does not
    resolve, else pydantic's own, located at the key."""
    if isinstance(value, Mapping):
        name = value.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"name: required key is missing (a built-in {kind}, a registered one, or an "
                "import path package.module:Object)"
                if name is None
                else f"name: expected the {kind}'s name as text (got {name!r})"
            )
        return _resolved(kind, name).validate(value)
    if dataclasses.is_dataclass(value) and not inspect.isclass(value):
        name = getattr(value, "name", None)
        family = _resolved(kind, name) if isinstance(name, str) else _by_class(kind, value)
        if isinstance(value, family.section):
            return value
        return family.validate({**dataclasses.asdict(value), "name": family.name})
    raise ValueError(f"expected a section (a mapping of keys) with a name (got {value!r})")


def _resolved(kind: str, name: str) -> Family:
    try:
        return resolve(kind, name)
    except RegistryError as err:
        raise ValueError(f"name: {err}") from None


def _by_class(kind: str, value: Any) -> Family:
    for family in _REGISTERED[kind].values():
        base = getattr(family.spec, "config_class", None)
        if base is not None and isinstance(value, base):
            return family
    raise ValueError(
        f"name: a {type(value).__name__} is not the config class of a registered {kind}"
    )


def section_keys(kind: str, raw: Any) -> list[str]:
    """The keys a non-built-in section may hold (for error messages): its family's, or just
    ``name`` when the name does not resolve."""
    name = raw.get("name") if isinstance(raw, Mapping) else None
    try:
        family = find(kind, name) if isinstance(name, str) else None
    except RegistryError:
        family = None
    return sorted(["name", *(family.keys if family else ())])


def optimizer_hyperparams(section: Any) -> dict[str, str]:
    """``{config key: optimizer-state entry}`` for every setting jaxtrain keeps in the state
    of the optimizer ``section`` (what a sweep can vary inside one program)."""
    name = section.name
    if name in BUILTIN_OPTIMIZERS:
        keys = ["weight_decay", *(("momentum",) if name == "sgd" else ("b1", "b2", "eps"))]
        if getattr(section, "grad_clip_norm", None) is not None:
            keys.append("grad_clip_norm")
        return {"learning_rate": PEAK, **{k: k for k in keys}}
    family = resolve("optimizer", name)
    if family.spec.transformation is not None:
        return {}
    return {k: (PEAK if k == "learning_rate" else k) for k in family.floats}


def recorded_settings(instance: Any) -> dict[str, Any]:
    """A linen module instance's settings that a config can hold (for the record of a module
    given to :func:`jaxtrain.fit`): JSON-like fields, minus the filled-in ones."""
    if not dataclasses.is_dataclass(instance):
        return {}
    values = {}
    for field in dataclasses.fields(instance):
        if field.name in ("parent", "name", *FILLED) or not field.init:
            continue
        value = getattr(instance, field.name)
        if _json_like(value):
            values[field.name] = _frozen(value)
    return values


def given_model_spec(name: str, instance: Any, settings: dict[str, Any]) -> ModelSpec:
    """A spec named ``name`` whose builder returns ``instance`` itself, its section holding
    ``settings`` (so config.yaml records them) with the instance's values as defaults."""
    fields = [(key, _config_type(key, Any, value) or Any, value) for key, value in settings.items()]
    section = _derived(name, fields, type(instance).__name__)
    return ModelSpec(lambda config, num_outputs, input_shape: instance, section, TASKS, None)
