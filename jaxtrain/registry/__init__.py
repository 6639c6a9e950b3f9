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
  (``nnx.Rngs(key)`` from the run's seed).
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
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jaxtrain.registry.sections import (
    derived,
    given_model_spec,
    is_flax_module,
    is_float,
    keys_of,
    kind_of,
    module_builder,
    module_fields,
    named,
    recorded_settings,
    signature_fields,
    with_schedule,
)
from jaxtrain.registry.specs import (
    BUILTIN_MODELS,
    BUILTIN_OPTIMIZERS,
    FILLED,
    GROUPS,
    OPEN_TAG,
    OUTPUTS,
    PEAK,
    TASKS,
    DatasetSpec,
    Family,
    ModelSpec,
    OptimizerSpec,
    RegistryError,
    parameters,
)

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


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
    ``factory(learning_rate=..., **settings)`` (see :class:`OptimizerSpec`). A ready
    ``optax.GradientTransformation`` instead of a factory is used as it is (``optimizer:
    {name: <name>}``; its schedule is its own)."""
    if _is_transformation(factory):
        if config_class is not None:
            raise RegistryError(
                f"register_optimizer: {name!r} is a ready transformation, which takes no "
                "settings; pass a factory to use config_class"
            )
        spec = OptimizerSpec(transformation=factory)
    else:
        spec = OptimizerSpec(factory, config_class)
    _register("optimizer", name, spec, replace)


def _is_transformation(value: Any) -> bool:
    """An ``optax.GradientTransformation`` (a pair of init/update functions, not callable)."""
    return (
        not callable(value)
        and callable(getattr(value, "init", None))
        and callable(getattr(value, "update", None))
    )


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
    if kind == "optimizer" and name == "given":
        return (
            "'given' is an optax transformation that was passed to jaxtrain.fit; it exists "
            "only in the process that trained: continue or evaluate the run through "
            "jaxtrain.fit (resume=...) with the same optimizer"
        )
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    article = "an" if kind[0] in "aeiou" else "a"
    return (
        f"{name!r} is not {article} {kind}{hint}: not built in ({', '.join(builtins)}), not "
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
        section = named(spec.config_class, name, "model")
        return Family(kind, name, spec, section, keys_of(section))
    if kind == "optimizer":
        spec = _optimizer_spec(spec, name)
        if spec.transformation is not None:
            section = derived(name, [], "given")
            return Family(kind, name, spec, section, ())
        if spec.config_class is None:
            fields = signature_fields(spec.factory, name, skip=())
            section = derived(name, with_schedule(fields), spec.factory.__name__.title())
        else:
            section = named(spec.config_class, name, "optimizer")
        keys = keys_of(section)
        if "learning_rate" not in keys:
            raise RegistryError(
                f"optimizer {name!r}: its config has no learning_rate key (every optimizer "
                "takes one)"
            )
        floats = tuple(k for k in keys if k != "schedule" and is_float(section, k))
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
    if inspect.isclass(target) and is_flax_module(target):
        fields = module_fields(target, name)
        section = derived(name, fields, target.__name__)
        return ModelSpec(module_builder(target), section, TASKS, None)
    raise RegistryError(
        f"model {name!r}: expected a Flax module class (linen or NNX) or a "
        f"jaxtrain.registry.ModelSpec, got {kind_of(target)}"
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
        f"(such as optax:adamw) or a jaxtrain.registry.OptimizerSpec, got {kind_of(target)}"
    )


# --- builders of what an import path named -------------------------------------------------


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


__all__ = [
    "BUILTIN_MODELS",
    "BUILTIN_OPTIMIZERS",
    "FILLED",
    "GROUPS",
    "OPEN_TAG",
    "OUTPUTS",
    "PEAK",
    "TASKS",
    "DatasetSpec",
    "Family",
    "ModelSpec",
    "OptimizerSpec",
    "RegistryError",
    "find",
    "given_model_spec",
    "is_import_path",
    "optimizer_hyperparams",
    "parameters",
    "recorded_settings",
    "register_dataset",
    "register_model",
    "register_optimizer",
    "registered",
    "registered_names",
    "resolve",
    "section_keys",
    "unregister",
    "validate_section",
]
