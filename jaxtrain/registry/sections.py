"""A family's config section class: given (a pydantic dataclass, made strict like the
built-ins, with a ``name`` key added), or derived from the family's own code (a Flax module
class's fields or ``__init__`` parameters, an optax factory's keyword parameters)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import sys
import typing
from collections.abc import Callable
from typing import Any, Literal

import pydantic

from jaxtrain.registry.specs import (
    FILLED,
    OUTPUTS,
    TASKS,
    ModelSpec,
    RegistryError,
    frozen,
    parameters,
)


@functools.cache
def _section_config() -> pydantic.ConfigDict:
    """The built-ins' strictness; frozen is given per class (a subclass must match its base).
    (Imported late: the config package imports this module.)"""
    from jaxtrain.config.base import STRICT

    return pydantic.ConfigDict(**{k: v for k, v in STRICT.items() if k != "frozen"})


def kind_of(value: Any) -> str:
    return f"the class {value.__name__}" if inspect.isclass(value) else type(value).__name__


def is_flax_module(cls: type) -> bool:
    return is_linen(cls) or is_nnx(cls)


def is_linen(cls: type) -> bool:
    linen = sys.modules.get("flax.linen")
    return linen is not None and inspect.isclass(cls) and issubclass(cls, linen.Module)


def is_nnx(cls: type) -> bool:
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and inspect.isclass(cls) and issubclass(cls, nnx.Module)


Field = tuple[str, Any, Any]  # (key, type, default or dataclasses.MISSING)


def module_fields(cls: type, name: str) -> list[Field]:
    """The config keys of a module class: linen dataclass fields or NNX ``__init__``
    parameters, minus those filled in from the data."""
    if is_linen(cls):
        hints = _hints(cls)
        raw = [
            (f.name, hints.get(f.name, Any), _default_of(f))
            for f in dataclasses.fields(cls)
            if f.init and f.name not in ("parent", "name")
        ]
    else:
        return signature_fields(cls.__init__, name, skip=FILLED)
    return _expressible([r for r in raw if r[0] not in FILLED], name)


def _default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def signature_fields(function: Callable, name: str, skip: tuple[str, ...]) -> list[Field]:
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
        kind = config_type(key, annotation, default)
        if kind is None:
            if default is dataclasses.MISSING:
                raise RegistryError(
                    f"{name!r}: its setting {key!r} has no default and its type cannot be "
                    "written in a config; give it a default, or register the family with a "
                    "config class"
                )
            continue
        fields.append((key, kind, frozen(default)))
    return fields


def config_type(key: str, annotation: Any, default: Any) -> Any:
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
    if isinstance(default, tuple | list) and json_like(default):
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


def json_like(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, tuple | list):
        return all(json_like(v) for v in value)
    return False


def with_schedule(fields: list[Field]) -> list[Field]:
    """An optimizer's keys plus ``schedule`` (warmup and decay of the learning rate)."""
    if any(key == "schedule" for key, _, _ in fields):
        return fields
    from jaxtrain.config.schema import ScheduleConfig

    return [*fields, ("schedule", ScheduleConfig, dataclasses.MISSING, ScheduleConfig)]


def derived(name: str, fields: list, title: str) -> type:
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


def named(config_class: Any, name: str, kind: str) -> type:
    """``config_class`` with a ``name`` key (a subclass adds ``name: Literal[name]`` when the
    class has none), strict like the built-ins (unknown keys and wrong types are errors)."""
    if not (inspect.isclass(config_class) and dataclasses.is_dataclass(config_class)):
        raise RegistryError(
            f"{kind} {name!r}: config_class must be a (pydantic) dataclass, got "
            f"{kind_of(config_class)}"
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


def keys_of(section: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(section) if f.name != "name")


def is_float(section: type, key: str) -> bool:
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


def module_builder(cls: type) -> Callable[..., Any]:
    """``builder(config, num_outputs, input_shape[, rngs])`` of a module class: its keys from
    the config, the filled-in names from the data."""
    accepted = (
        parameters(cls.__init__) if is_nnx(cls) else {f.name for f in dataclasses.fields(cls)}
    )

    def filled(num_outputs: int, input_shape: tuple[int, ...]) -> dict[str, Any]:
        values = {"input_shape": tuple(input_shape), "in_features": math.prod(input_shape)}
        values.update({key: num_outputs for key in OUTPUTS})
        return {k: v for k, v in values.items() if k in accepted}

    def settings(config: Any) -> dict[str, Any]:
        return {
            f.name: frozen(getattr(config, f.name))
            for f in dataclasses.fields(config)
            if f.name != "name"
        }

    if is_nnx(cls):

        def build_nnx(config, num_outputs, input_shape, rngs):
            return cls(**settings(config), **filled(num_outputs, input_shape), rngs=rngs)

        return build_nnx

    def build_linen(config, num_outputs, input_shape):
        return cls(**settings(config), **filled(num_outputs, input_shape))

    return build_linen


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
        if json_like(value):
            values[field.name] = frozen(value)
    return values


def given_model_spec(name: str, instance: Any, settings: dict[str, Any]) -> ModelSpec:
    """A spec named ``name`` whose builder returns ``instance`` itself, its section holding
    ``settings`` (so config.yaml records them) with the instance's values as defaults."""
    fields = [(key, config_type(key, Any, value) or Any, value) for key, value in settings.items()]
    section = derived(name, fields, type(instance).__name__)
    return ModelSpec(lambda config, num_outputs, input_shape: instance, section, TASKS, None)
