"""``jaxtrain.fit``: your model, your data, your optimizer, and the whole run.

:func:`fit` is ``jaxtrain train`` for objects held in Python: it registers the given Flax
module (linen or NNX), data and optax transformation under names (for the duration of the
call), builds the config that names them, and runs the very verb the CLI runs: the same
checks, the same run directory (``config.yaml``, checkpoints, ``metrics.jsonl``,
``metrics.json``, plots, ``report.md``), the same loop
(:func:`jaxtrain.train.loop.train_and_evaluate`) and the same resume.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxtrain import registry
from jaxtrain.config import Config, ConfigError, config_to_dict, load_config, validate
from jaxtrain.config.load import apply_overrides, load_yaml, parse_overrides
from jaxtrain.config.verbs import check_verb

SOURCE = "jaxtrain.fit"
GIVEN_OPTIMIZER = "given"  # optimizer.name of an optax transformation passed to fit
ARRAYS = "arrays"  # data.name of in-memory data, unless the config names it


def fit(
    model: Any,
    data: Any,
    config: Config | str | Path | Mapping[str, Any] | Sequence[str] | None = None,
    *,
    optimizer: Any = None,
    variables: Any = None,
    runs_dir: str | Path | None = None,
    resume: str | Path | None = None,
    callbacks: tuple = (),
    progress: bool = True,
    report: bool = True,
):
    """Train ``model`` on ``data`` as ``jaxtrain train`` would; returns the
    :class:`~jaxtrain.train.loop.RunResult` (``status``, ``step``, ``state``, ``test``
    metrics, ``run_dir``).

    - ``model``: a Flax linen module or an NNX module instance (its own parameters are the
      initial ones; a linen module is initialised from ``config.seed``, or from
      ``variables``, a dict with ``params`` and any other collections); None: the config's
      ``model:`` section. The run records the module by its import path
      (``package.module:Class``) and, for linen, its settings.
    - ``data``: ``(inputs, labels)`` arrays, a dict of splits, a TFDS or grain source, a
      pandas DataFrame (with ``data.label_column``), a file path (as ``data.path``), a
      :class:`~jaxtrain.data.PreparedData` (see :mod:`jaxtrain.data.arrays`); None: the
      config's ``data:`` section. Prepared as any source: cleaning, the splits the data
      lacks carved from train, normalisation fitted on train (``data.normalize: none`` keeps
      the arrays as they are). Data held in Python is known to this process only: evaluate
      or resume such a run through ``fit`` (``resume=``), not the CLI.
    - ``config``: a :class:`~jaxtrain.config.Config`, a YAML file, a mapping (nested
      sections or dotted keys: ``{"train.epochs": 3}``) or ``key=value`` overrides, on top
      of the defaults (``name`` defaults to the model's class name).
    - ``optimizer``: an ``optax.GradientTransformation`` used as it is (recorded as
      ``optimizer.name: given``); None: the config's ``optimizer:`` section.
    - ``resume``: a run directory this call (with the same model and data) stopped; the run's
      own config.yaml is used, and only ``train.*`` settings of ``config`` may change.

    Raises :class:`~jaxtrain.config.ConfigError`, :class:`~jaxtrain.data.DatasetError` or
    :class:`~jaxtrain.runner.RunError` with one line, before anything is written.
    """
    with _given(model, data, config, optimizer, variables, SOURCE) as (raw, prepared):
        if resume is not None:
            return _resume(raw, resume, prepared, callbacks, progress, report)
        config = validate(raw, SOURCE)
        check_verb(config, "train", SOURCE)
        return _new_run(config, prepared, runs_dir, callbacks, progress, report)


def sweep_model(
    model: Any,
    data: Any,
    settings: Mapping[str, Any],
    config: Config | str | Path | Mapping[str, Any] | Sequence[str] | None = None,
    *,
    optimizer: Any = None,
    seeds: int | Sequence[int] = 0,
    devices: int | None = None,
):
    """Train one member per row of ``settings`` as one vmapped program and evaluate each on
    the validation split; returns a :class:`~jaxtrain.sweep.custom.PopulationResult`
    (``validation`` metrics per member, ``best``, the final population ``state``).

    ``settings``: optimizer hyperparameters by name, one column of K values each (e.g.
    ``jaxtrain.grid(learning_rate=[1e-3, 3e-3])``): names as the optimizer's state has them
    (``optax.inject_hyperparams(optax.adamw)(learning_rate=...)`` exposes ``learning_rate``,
    ``b1`` ...; the config's own optimizers their keys). ``seeds``: the init/dropout seed of
    each member (one int: all the same). ``model``, ``data``, ``config``, ``optimizer`` as
    in :func:`fit`; ``train.epochs``, ``data.batch_size`` and the step's options (precision,
    micro-batches, augmentation, label smoothing) apply to every member. Member *k* equals
    the standalone run of its settings (the same step, data order and seed). Nothing is
    written."""
    from jaxtrain.runner.checks import checked_data
    from jaxtrain.sweep.custom import train_population
    from jaxtrain.train.pieces import build_pieces, build_step
    from jaxtrain.train.state import make_init
    from jaxtrain.train.step import make_eval_step
    from jaxtrain.train.tasks import resolve_monitor

    source = "jaxtrain.sweep_model"
    with _given(model, data, config, optimizer, None, source) as (raw, prepared):
        config = validate(raw, source)
        check_verb(config, "sweep", source)
        data = prepared or checked_data(config, source)
        pieces = build_pieces(config, data)
        train = pieces.data.splits["train"]
        return train_population(
            build_step(config, pieces),
            make_eval_step(pieces.model, pieces.task),
            make_init(pieces.model, pieces.tx, data.input_shape, train.inputs.dtype),
            train,
            pieces.data.splits["validation"],
            settings,
            seeds,
            epochs=config.train.epochs,
            batch_size=config.data.batch_size,
            eval_batch_size=config.data.eval_batch_size,
            data_seed=config.data.seed,
            task=pieces.task,
            monitor=resolve_monitor(pieces.task, config.train.monitor),
            devices=devices,
        )


@contextlib.contextmanager
def _given(model, data, config, optimizer, variables, source: str):
    """The given model, data and optimizer registered under names for the block; yields the
    raw config naming them and the PreparedData when ``data`` was one."""
    from jaxtrain.data import PreparedData

    prepared = data if isinstance(data, PreparedData) else None
    with contextlib.ExitStack() as stack:
        raw = _raw_config(config)
        if model is not None:
            raw["model"] = stack.enter_context(_given_model(model, variables))
        elif variables is not None:
            raise ConfigError(f"{source}: variables: only with a model given to fit")
        raw.setdefault("name", _run_name(model))
        data_section = dict(raw.get("data") or {})
        if data is None:
            pass  # the config's own data section
        elif isinstance(data, str | Path):
            data_section["path"] = str(data)
        elif prepared is not None:
            data_section.setdefault("name", prepared.name)
        else:
            name = data_section.setdefault("name", ARRAYS)
            stack.enter_context(registry.registered("dataset", name, _loader(data)))
        raw["data"] = data_section
        if optimizer is not None:
            spec = registry.OptimizerSpec(transformation=_checked_optimizer(optimizer))
            stack.enter_context(registry.registered("optimizer", GIVEN_OPTIMIZER, spec))
            raw["optimizer"] = {"name": GIVEN_OPTIMIZER}
        yield raw, prepared


def _new_run(config: Config, prepared, runs_dir, callbacks, progress, report):
    from jaxtrain.runner.checks import checked_data
    from jaxtrain.runner.run_dirs import check_runs_dir, run_lock, start_run

    check_runs_dir(runs_dir)
    data = prepared or checked_data(config, SOURCE)
    _check_outputs(config, data)
    run_dir = start_run(config, runs_dir, data)
    with run_lock(run_dir):
        return _train(config, run_dir, data, False, callbacks, progress, report)


def _resume(raw: dict, resume, prepared, callbacks, progress, report):
    from jaxtrain.runner.checks import check_resumable, checked_data
    from jaxtrain.runner.run_dirs import CONFIG_FILE, existing_run, run_lock, stored_stats
    from jaxtrain.runner.verbs import RESUMABLE_PREFIX

    run_dir = existing_run(resume)
    stored = load_config(run_dir / CONFIG_FILE)
    given = validate(raw, SOURCE)
    for section in ("model", "optimizer"):
        if getattr(given, section).name != getattr(stored, section).name:
            raise ConfigError(
                f"{run_dir / CONFIG_FILE}: {section}.name: the run trained "
                f"{getattr(stored, section).name!r}; resume it with the same {section} "
                f"(given: {getattr(given, section).name!r})"
            )
    changed = [f"{k}={v}" for k, v in _changed_train(config_to_dict(stored), raw).items()]
    check_resumable(run_dir, changed, (RESUMABLE_PREFIX,), "train.* settings")
    config = load_config(run_dir / CONFIG_FILE, changed)
    check_verb(config, "train", run_dir / CONFIG_FILE)
    with run_lock(run_dir):
        data = prepared or checked_data(config, run_dir / CONFIG_FILE, stored_stats(run_dir))
        if changed:
            from jaxtrain.config import dump_config

            dump_config(config, run_dir / CONFIG_FILE)
        return _train(config, run_dir, data, True, callbacks, progress, report)


def _changed_train(stored: dict, raw: dict) -> dict[str, Any]:
    """The ``train.*`` settings of the given config that differ from the run's, as dotted
    keys (what a resume may change)."""
    given = raw.get("train") or {}
    changed = {}

    def walk(node: Mapping, saved: Mapping, prefix: str) -> None:
        for key, value in node.items():
            old = saved.get(key) if isinstance(saved, Mapping) else None
            if isinstance(value, Mapping) and isinstance(old, Mapping):
                walk(value, old, f"{prefix}{key}.")
            elif value != old:
                changed[f"{prefix}{key}"] = value

    walk(given, stored.get("train") or {}, "train.")
    return {k: _yaml_text(v) for k, v in changed.items()}


def _yaml_text(value: Any) -> str:
    import json

    return json.dumps(value)  # JSON is YAML: the override parses back to the same value


def _train(config, run_dir, data, resume: bool, callbacks, progress, report):
    from jaxtrain.train import stop_on_signals, train_and_evaluate

    with stop_on_signals() as preemption:
        return train_and_evaluate(
            config,
            run_dir,
            resume=resume,
            data=data,
            callbacks=(preemption, *callbacks),
            progress=progress,
            report=report,
        )


# --- the config ------------------------------------------------------------------------------


def _raw_config(config: Any) -> dict[str, Any]:
    """A plain mapping of sections from whatever form ``config`` takes."""
    if config is None:
        return {}
    if isinstance(config, Config):
        return config_to_dict(config)
    if isinstance(config, str | Path):
        return load_yaml(config)
    if isinstance(config, Mapping):
        return apply_overrides({}, _dotted(config))
    if isinstance(config, Sequence):
        return apply_overrides({}, parse_overrides(list(config)))
    raise ConfigError(
        f"{SOURCE}: config: expected a Config, a YAML path, a mapping or key=value overrides, "
        f"got {type(config).__name__}"
    )


def _dotted(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys (``{"train": {"epochs": 3}}`` -> ``train.epochs``), so
    a partial section only sets what it names on top of the defaults; ``sweep.axes`` (whose
    keys hold dots) is kept whole."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and dotted not in ("sweep.axes",):
            flat.update(_dotted(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _run_name(model: Any) -> str:
    """A run name from the model's class (runs/<name>/<stamp>/)."""
    name = type(model).__name__ if model is not None else "fit"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:100] or "fit"


# --- the given pieces ------------------------------------------------------------------------


@contextlib.contextmanager
def _given_model(model: Any, variables: Any) -> Iterator[dict[str, Any]]:
    """``model`` registered under its import path for the block; yields its config section."""
    from jaxtrain.models.adapters import LinenModel, as_model, is_nnx

    adapter = as_model(model)  # a TypeError now for something that is not a Flax module
    if variables is not None:
        if not isinstance(adapter, LinenModel):
            raise ConfigError(
                f"{SOURCE}: variables: an NNX module holds its own parameters; set them on "
                "the module (nnx.update) instead"
            )
        if not isinstance(variables, Mapping) or "params" not in variables:
            raise ConfigError(f"{SOURCE}: variables: a dict with 'params' expected")
        adapter = LinenModel(model, variables)
    elif isinstance(adapter, LinenModel):
        adapter = model  # as the built-ins: initialised from the run's seed
    cls = type(model)
    name = f"{cls.__module__}:{cls.__qualname__}"
    settings = {} if is_nnx(model) else registry.recorded_settings(model)
    spec = registry.given_model_spec(name, adapter, settings)
    with registry.registered("model", name, spec):
        yield {"name": name, **settings}


def _loader(data: Any):
    def load():
        return data

    return registry.DatasetSpec(load)


def _checked_optimizer(optimizer: Any) -> Any:
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise ConfigError(
            f"{SOURCE}: optimizer: expected an optax.GradientTransformation, got "
            f"{type(optimizer).__name__}"
        )
    return optimizer


def _check_outputs(config: Config, data) -> None:
    """The model's outputs per example must match the data's (classes or targets): a clear
    error now instead of a shape error inside the loss."""
    import jax
    import jax.numpy as jnp

    from jaxtrain.models import build_model, is_fitted
    from jaxtrain.models.adapters import as_model

    if is_fitted(config.model) or data.task == "language_model":
        return
    model = as_model(build_model(config.model, data.num_outputs, data.input_shape))
    inputs = jax.ShapeDtypeStruct((2, *data.input_shape), jnp.float32)

    def outputs(inputs):
        params, state = model.init(jax.random.key(0), inputs[:1])
        return model.apply(params, state, inputs, train=False)[0]

    try:
        shape = jax.eval_shape(outputs, inputs).shape
    except Exception as err:  # noqa: BLE001 - the user's module: any failure is named
        raise ConfigError(
            f"{SOURCE}: model: {config.model.name} cannot run on examples of shape "
            f"{data.input_shape} ({type(err).__name__}: {_first_line(err)})"
        ) from None
    if tuple(shape) != (2, data.num_outputs):
        what = "classes" if data.task == "classification" else "targets"
        raise ConfigError(
            f"{SOURCE}: model: {config.model.name} gives outputs of shape {tuple(shape)[1:]} per "
            f"example; the data has {data.num_outputs} {what}, so ({data.num_outputs},) is needed"
        )


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


__all__ = ["fit", "sweep_model"]
