"""The Optuna side of a search in rounds: the study in the run directory, its samplers, and
turning trials into sweep settings and results back into trials.

Only process 0 touches the study. Every ask is reproducible: before trial ``n`` is asked the
study gets a fresh sampler seeded by ``(sweep.seed, n)``, so what it proposes depends only on
the trials already in the study (told, or asked and running: TPE's constant liar, GP's batch
acquisition, CMA-ES's generation). A search stopped at any point and resumed therefore asks
the same trials and ends with the same study.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from jaxtrain.config.sweep import Choice, Distribution, SweepConfig, choices_of

STUDY_FILE = "study.db"
ROUND = "round"  # trial user attribute: the round that asked it


@contextlib.contextmanager
def quiet_optuna():
    """Optuna's per-trial INFO lines off while a search runs (the previous level restored)."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def storage_url(run_dir: Path) -> str:
    """The SQLite URL of a search directory's study (``optuna.load_study`` opens it)."""
    return f"sqlite:///{(Path(run_dir) / STUDY_FILE).resolve()}"


def open_study(
    run_dir: Path, name: str, direction: str
) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    """The search's study in ``run_dir/study.db`` (created, or loaded to resume), and its
    storage (:func:`close_study` closes it).

    SQLite keeps a write-ahead log (``study.db-wal`` beside it while open) and syncs at
    checkpoints rather than at every commit: Optuna commits each intermediate value on its
    own, and a sync each costs more than training a round of a small model. A killed
    process loses nothing committed; a power cut may lose the last commits (the resumed
    search then asks or tells them again)."""
    from sqlalchemy import event

    storage = optuna.storages.RDBStorage(storage_url(run_dir))

    @event.listens_for(storage.engine, "connect")
    def _pragmas(connection, _record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    storage.engine.dispose()  # connections made from now on get the pragmas
    study = optuna.create_study(
        study_name=name, storage=storage, direction=direction, load_if_exists=True
    )
    study.set_user_attr("jaxtrain", "study.db of a jaxtrain sweep (sweep.method with rounds)")
    return study, storage


def close_study(storage: optuna.storages.RDBStorage) -> None:
    """Close the study's connections (SQLite folds its write-ahead log back into study.db)."""
    storage.engine.dispose()


def make_sampler(sweep: SweepConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``sweep.method`` names, seeded by ``seed``."""
    samplers = optuna.samplers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if sweep.method == "tpe":
            startup = sweep.startup_trials or 10
            return samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
        if sweep.method == "gp":
            startup = sweep.startup_trials or 10
            return samplers.GPSampler(seed=seed, n_startup_trials=startup)
        if sweep.method == "cmaes":
            return samplers.CmaEsSampler(
                seed=seed, popsize=max(sweep.batch_size, 4), warn_independent_sampling=False
            )
        return samplers.RandomSampler(seed=seed)


def trial_seed(seed: int, number: int) -> int:
    """The sampler seed for trial ``number`` of a search seeded ``seed``."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


def ask_round(study: optuna.Study, sweep: SweepConfig, round_: int) -> list[list[Any]]:
    """``[[trial number, settings], ...]``: the ``sweep.batch`` trials of round ``round_``,
    those already asked (a resumed search) first, then new ones."""
    asked = []
    for trial in study.get_trials(deepcopy=False):
        tagged = trial.user_attrs.get(ROUND)
        if tagged is None and trial.state == TrialState.RUNNING:  # stopped before its tag
            study._storage.set_trial_user_attr(trial._trial_id, ROUND, round_)
        elif tagged != round_:
            continue
        settings = settings_of(sweep, trial.params)
        if settings is None:  # stopped while its settings were drawn: draw the rest
            study.sampler = make_sampler(sweep, trial_seed(sweep.seed, trial.number))
            settings = suggest(optuna.Trial(study, trial._trial_id), sweep)
        asked.append([trial.number, settings])
    while len(asked) < sweep.batch_size:
        number = len(study.get_trials(deepcopy=False))
        study.sampler = make_sampler(sweep, trial_seed(sweep.seed, number))
        trial = study.ask()
        trial.set_user_attr(ROUND, round_)
        asked.append([trial.number, suggest(trial, sweep)])
    return asked


def _encode(value: Any) -> Any:
    """A choice as Optuna stores categorical values (None, bool, int, float or str)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value)


def suggest(trial: optuna.Trial, sweep: SweepConfig) -> dict[str, Any]:
    """Draw every axis whose conditions the settings drawn so far meet, in axis order (define
    by run: ``optimizer.momentum`` is asked only of trials that chose ``sgd``)."""
    settings: dict[str, Any] = {}
    for key, axis in sweep.axes.items():
        if not sweep.active(key, settings):
            continue
        if isinstance(axis, list | Choice):
            choices = choices_of(axis)
            encoded = [_encode(v) for v in choices]
            settings[key] = choices[encoded.index(trial.suggest_categorical(key, encoded))]
        elif axis.distribution == "int_uniform":
            settings[key] = trial.suggest_int(key, int(axis.low), int(axis.high))
        else:
            log = axis.distribution == "log_uniform"
            settings[key] = trial.suggest_float(key, float(axis.low), float(axis.high), log=log)
    return settings


def settings_of(sweep: SweepConfig, params: dict[str, Any]) -> dict[str, Any] | None:
    """A trial's settings from its stored params; None if one it needs is missing."""
    settings: dict[str, Any] = {}
    for key, axis in sweep.axes.items():
        if not sweep.active(key, settings):
            continue
        if key not in params:
            return None
        value = params[key]
        if isinstance(axis, Distribution):
            settings[key] = int(value) if axis.distribution == "int_uniform" else float(value)
        else:
            choices = choices_of(axis)
            settings[key] = choices[[_encode(v) for v in choices].index(value)]
    return settings


def tell_finished(study: optuna.Study, records: dict[int, dict], metric: str) -> None:
    """Tell the study every running trial that has a finished record: its validation
    ``metric`` at each evaluation (intermediate values), then its outcome: ``finished`` ->
    COMPLETE with its best value, ``stopped at rung k`` -> PRUNED (Optuna keeps the last
    value), diverged -> COMPLETE with the best value reached before, or FAIL without one;
    invalid settings -> FAIL. Trials already told are left alone (a resumed search)."""
    storage = study._storage
    for trial in study.get_trials(deepcopy=False):
        record = records.get(trial.number)
        if trial.state != TrialState.RUNNING or record is None or record["status"] == "running":
            continue
        tid = trial._trial_id
        for entry in record["history"]:
            value = entry.get(f"validation_{metric}")
            if value is not None and math.isfinite(value):
                storage.set_trial_intermediate_value(tid, entry["step"], float(value))
        for key in ("status", "best_step", "step", "wall_time_s"):
            if record.get(key) is not None:
                storage.set_trial_user_attr(tid, key, record[key])
        best = record["best_value"]
        if record["status"].startswith("stopped at rung"):
            study.tell(trial.number, state=TrialState.PRUNED)
        elif best is None or not math.isfinite(best):
            study.tell(trial.number, state=TrialState.FAIL)
        else:
            study.tell(trial.number, float(best))


def importances(study: optuna.Study, seed: int) -> tuple[dict[str, float] | None, str]:
    """Each hyperparameter's importance (Optuna's fANOVA over the completed trials, the
    parameters every completed trial has), and a note on what was measured or why not."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    try:
        values = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    except (ValueError, RuntimeError) as err:
        return None, f"no importance: {' '.join(str(err).split())}"
    if not values:
        return None, "no importance: no parameter is shared by every completed trial"
    note = (
        f"fANOVA (optuna.importance) over the {len(complete)} completed trials; "
        "settings that only some trials have (conditional axes) are left out"
    )
    return {k: float(v) for k, v in values.items()}, note
