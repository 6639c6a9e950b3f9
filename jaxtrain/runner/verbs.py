"""The verbs that train: ``train``, ``sweep``, ``federated``, ``learning-curve`` and
``--check-determinism``. Each one checks everything a user's mistake can fail (config, what
the verb honours, the data) before it creates its run directory, so a bad invocation writes
nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxtrain.config import ConfigError, dump_config, load_config
from jaxtrain.config.verbs import check_verb
from jaxtrain.runner.checks import check_resumable, checked_data, resumed_config
from jaxtrain.runner.run_dirs import (
    CONFIG_FILE,
    DATA_STATS_FILE,
    RunError,
    check_runs_dir,
    existing_run,
    run_lock,
    start_run,
)
from jaxtrain.runner.stages import begin_stage, plan_extension, read_stages

RESUMABLE_PREFIX = "train."  # settings a resumed run may change (length, logging, keeping)
# ... and where it runs: a checkpoint of any placement restores into any other.
RESUMABLE_PREFIXES = (RESUMABLE_PREFIX, "distributed.", "tracking.")
MAX_CURVE_STEPS = 2**31 - 1  # the step counter is a 32-bit integer
MAX_CURVE_SEEDS = 100  # a sanity cap: every seed of every fraction is a full run
FEDERATED_RESUMABLE = ("train.", "federated.rounds", "federated.eval_every",
                       "federated.checkpoint_every")  # fmt: skip


def train(
    config_path: str | Path | None,
    overrides: Sequence[str] = (),
    *,
    runs_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    report: bool = True,
):
    """``jaxtrain train``: a new run of ``config_path``, or continue the run dir ``resume``.

    When resuming, the run's own resolved ``config.yaml`` is used (``overrides`` apply on top,
    e.g. ``train.epochs=30`` to extend); ``config_path``, if given, is ignored. ``report``
    False skips the analysis stage (``jaxtrain report`` runs it later).
    """
    import jax

    from jaxtrain.distributed import broadcast_text, is_writer
    from jaxtrain.distributed import initialize as initialize_distributed
    from jaxtrain.logging.progress import announce
    from jaxtrain.train.parallel import check_placement

    if resume is not None:
        run_dir = existing_run(resume)
        allowed = f"{RESUMABLE_PREFIX}*, distributed.* and tracking.* settings"
        check_resumable(run_dir, overrides, RESUMABLE_PREFIXES, allowed)
        config = load_config(run_dir / CONFIG_FILE, overrides)
        check_verb(config, "train", run_dir / CONFIG_FILE)
        initialize_distributed(config.distributed)
        check_placement(config, run_dir / CONFIG_FILE)  # before the run directory changes
        with _writer_lock(run_dir):  # checked before anything in the directory changes
            before = load_config(run_dir / CONFIG_FILE)
            config, data = resumed_config(run_dir, overrides, writer=False)
            stages = _extension(run_dir, before, config, data)  # may refuse: nothing written
            if is_writer():
                announce(run_dir, "resuming run directory")
                if overrides:
                    dump_config(config, run_dir / CONFIG_FILE)
                if stages is not None:
                    moved = begin_stage(run_dir, stages)
                    _announce_stage(run_dir, stages, moved)
            stages = read_stages(run_dir) if stages is None else stages
            return _train_locked(config, run_dir, data, resume, progress, report, stages)
    if config_path is None:
        raise ConfigError("a config file is required (or --resume RUN_DIR)")
    config = load_config(config_path, overrides)
    check_verb(config, "train", config_path)
    check_runs_dir(runs_dir)
    initialize_distributed(config.distributed)
    check_placement(config, config_path)  # before a run directory exists
    data = checked_data(config, config_path)
    # Process 0 creates the run directory; the others learn its name from it.
    run_dir = start_run(config, runs_dir, data) if is_writer() else None
    if jax.process_count() > 1:
        run_dir = Path(broadcast_text(str(run_dir) if run_dir else None))
    with _writer_lock(run_dir):
        return _train_locked(config, run_dir, data, resume, progress, report)


def _extension(run_dir: Path, before, after, data) -> list[dict] | None:
    """The run's stages when this resume extends it (see :mod:`jaxtrain.runner.stages`)."""
    from jaxtrain.models import is_fitted
    from jaxtrain.train.extend import rate_at
    from jaxtrain.train.pieces import total_steps

    if is_fitted(after.model):
        return None
    train_size = len(data.splits["train"])
    steps_before, steps_after = total_steps(before, train_size), total_steps(after, train_size)
    if steps_after == steps_before:
        return None
    stages = read_stages(run_dir)
    final = rate_at(before.optimizer, stages, steps_before)
    return plan_extension(run_dir, before, after, steps_before, steps_after, final)


def _announce_stage(run_dir: Path, stages: list[dict], moved: Path | None) -> None:
    import sys

    stage = stages[-1]
    kept = f"; stage {stages[-2]['stage']}'s results are kept in {moved}" if moved else ""
    print(
        f"jaxtrain: stage {stage['stage']}: steps {stage['start_step']}..{stage['end_step']} "
        f"(train.epochs={stage['epochs']}), learning rate schedule: {stage['schedule']}{kept}",
        file=sys.stderr,
        flush=True,
    )


def _writer_lock(run_dir: Path):
    """The run directory's lock, held by the process that writes it (process 0)."""
    from jaxtrain.distributed import is_writer

    return run_lock(run_dir) if is_writer() else contextlib.nullcontext()


def _train_locked(config, run_dir, data, resume, progress, report, stages=()):
    from jaxtrain.files import write_json
    from jaxtrain.models import is_fitted
    from jaxtrain.train import RunResult, stop_on_signals, train_and_evaluate
    from jaxtrain.train.fit import fit_and_evaluate

    if is_fitted(config.model):
        if resume is not None:
            raise RunError(
                f"{run_dir}: {config.model.name} is fitted in one step; nothing to resume"
            )
        write_json(run_dir / DATA_STATS_FILE, data.stats())
        test = fit_and_evaluate(config, run_dir, data)
        return RunResult("finished", 1, 1, None, test, run_dir)
    with stop_on_signals() as preemption:
        return train_and_evaluate(
            config,
            run_dir,
            resume=resume is not None,
            data=data,
            callbacks=(preemption,),
            progress=progress,
            report=report,
            stages=stages,
        )


def federated_run(
    config_path: str | Path | None,
    overrides: Sequence[str] = (),
    *,
    runs_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``jaxtrain federated``: simulate the config's ``federated:`` section (clients as one
    vmapped program per round), or continue the run directory ``resume``."""
    from jaxtrain.federated import check_federated, run_federated
    from jaxtrain.logging.progress import announce
    from jaxtrain.train import stop_on_signals

    if resume is not None:
        run_dir = existing_run(resume)
        allowed = "train.*, federated.rounds, eval_every and checkpoint_every"
        check_resumable(run_dir, overrides, FEDERATED_RESUMABLE, allowed)
        check_verb(load_config(run_dir / CONFIG_FILE, overrides), "federated", run_dir)
        with run_lock(run_dir):
            config, data = resumed_config(run_dir, overrides, verb="federated")
            _check_calibrated_rounds(config, overrides)
            announce(run_dir, "resuming run directory")
            with stop_on_signals() as preemption:
                return run_federated(
                    config, run_dir, data, resume=True, progress=progress, callbacks=(preemption,)
                )
    if config_path is None:
        raise ConfigError("a config file is required (or --resume RUN_DIR)")
    config = load_config(config_path, overrides)
    if config.federated is None:
        raise ConfigError(f"{config_path}: federated: the config has no federated section")
    check_verb(config, "federated", config_path)
    check_runs_dir(runs_dir)
    data = checked_data(config, config_path, verb="federated")
    try:
        check_federated(config, data)
    except ValueError as err:
        raise ConfigError(f"{config_path}: {err}") from None
    run_dir = start_run(config, runs_dir, data)
    with run_lock(run_dir), stop_on_signals() as preemption:
        return run_federated(config, run_dir, data, progress=progress, callbacks=(preemption,))


def _check_calibrated_rounds(config, overrides: Sequence[str]) -> None:
    """A noise calibrated to a target epsilon holds for the rounds it was calibrated for."""
    dp = config.federated.dp if config.federated else None
    changed = any(o.split("=", 1)[0].strip() == "federated.rounds" for o in overrides)
    if dp is not None and dp.target_epsilon is not None and changed:
        raise ConfigError(
            "federated.rounds: cannot change on resume when federated.dp.target_epsilon "
            "calibrated the noise to the total rounds"
        )


def sweep_run(
    config_path: str | Path | None,
    overrides: Sequence[str] = (),
    *,
    runs_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """``jaxtrain sweep``: train the config's ``sweep:`` population as vmapped programs
    (see :mod:`jaxtrain.sweep`), or continue the sweep directory ``resume``."""
    import jax

    from jaxtrain.distributed import broadcast_text, is_writer
    from jaxtrain.distributed import initialize as initialize_distributed
    from jaxtrain.logging.progress import announce
    from jaxtrain.sweep import expand, run_sweep

    if resume is not None:
        run_dir = existing_run(resume)
        config = load_config(run_dir / CONFIG_FILE)
        check_verb(config, "sweep", run_dir / CONFIG_FILE)
        initialize_distributed(config.distributed)
        with _writer_lock(run_dir):
            checked_data(config, run_dir / CONFIG_FILE, verb="sweep")
            if is_writer():
                announce(run_dir, "resuming sweep directory")
            return run_dir, run_sweep(config, run_dir, resume=True, progress=progress)
    if config_path is None:
        raise ConfigError("a config file is required (or --resume SWEEP_DIR)")
    config = load_config(config_path, overrides)
    if config.sweep is None:
        raise ConfigError(f"{config_path}: sweep: the config has no sweep section")
    check_verb(config, "sweep", config_path)
    if not config.sweep.search:  # a search's members are known only when asked
        for group in expand(config, str(config_path)):  # every member honours what it asks
            for member in group.members:
                check_verb(member.config, "sweep", f"{config_path} (sweep member {member.index})")
    check_runs_dir(runs_dir)
    initialize_distributed(config.distributed)
    data = checked_data(config, config_path, verb="sweep")
    # Process 0 creates the sweep directory; the others learn its name from it.
    run_dir = start_run(config, runs_dir, data, what="sweep directory") if is_writer() else None
    if jax.process_count() > 1:
        run_dir = Path(broadcast_text(str(run_dir) if run_dir else None))
    with _writer_lock(run_dir):
        return run_dir, run_sweep(config, run_dir, progress=progress)


def check_determinism(
    config_path: str | Path, overrides: Sequence[str] = (), steps: int = 20
) -> dict[str, Any]:
    """``jaxtrain train CONFIG --check-determinism N``: run the first ``steps`` training steps
    twice from scratch (same config and seeds, fresh state and data stream each time) with
    the run's own step and placement (every option of the config on), and compare SHA-256
    digests of the parameters. Writes nothing."""
    import jax

    from jaxtrain.checkpoint import state_digest
    from jaxtrain.train.advance import make_advance, training_stream
    from jaxtrain.train.parallel import build_placement
    from jaxtrain.train.pieces import build_pieces

    if steps < 1:
        raise ConfigError(f"--check-determinism: {steps} steps; give at least 1")
    config = load_config(config_path, overrides)
    check_verb(config, "train", config_path)
    data = checked_data(config, config_path)
    digests = []
    for _ in range(2):
        pieces = build_pieces(config, data)
        placement = build_placement(config.train.parallel, pieces)
        iterator = iter(training_stream(config, pieces, placement))
        advance, _ = make_advance(config, pieces, placement, iterator)
        count = min(steps, pieces.total_steps)
        state = placement.put_state(pieces.state)
        for chunk in [count] if config.train.fused_epochs else [1] * count:
            state, _ = advance(state, chunk)
        digests.append(state_digest(placement.host_state(state).params))
    return {
        "steps": count,
        "digests": digests,
        "deterministic": digests[0] == digests[1],
        "platform": jax.default_backend(),
    }


def learning_curve_run(
    config_path: str | Path,
    overrides: Sequence[str] = (),
    fractions: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    *,
    runs_dir: str | Path | None = None,
    progress: bool = True,
    steps: int | None = None,
    seeds: int = 1,
) -> tuple[Path, dict[str, Any]]:
    """``jaxtrain learning-curve``: train ``config_path`` on growing shares of its training
    split (see :mod:`jaxtrain.learning_curve`), each for ``steps`` steps (default:
    ``train.epochs`` over the share) and ``seeds`` times; returns the directory and the
    result."""
    from jaxtrain.data import DatasetError
    from jaxtrain.learning_curve import learning_curve

    bad = [f for f in fractions if not 0 < f <= 1]
    if bad or not fractions:
        raise ConfigError(f"--fractions: each must be in (0, 1], got {list(fractions)}")
    if len(set(fractions)) != len(fractions):
        raise ConfigError(f"--fractions: each share once, got {list(fractions)}")
    if steps is not None and not 1 <= steps <= MAX_CURVE_STEPS:
        raise ConfigError(f"--steps: {steps} is outside 1..{MAX_CURVE_STEPS:,}")
    if not 1 <= seeds <= MAX_CURVE_SEEDS:
        raise ConfigError(f"--seeds: {seeds} is outside 1..{MAX_CURVE_SEEDS}")
    config = load_config(config_path, overrides)
    check_verb(config, "learning-curve", config_path)
    if steps is not None and config.train.dp is not None:
        raise ConfigError(
            f"{config_path}: train.dp: --steps changes the run's length, but the DP-SGD plan "
            "(noise, privacy account) is laid out for train.epochs; leave out --steps"
        )
    check_runs_dir(runs_dir)
    data = checked_data(config, config_path, verb="learning-curve")
    smallest = round(min(fractions) * len(data.splits["train"]))
    if smallest < config.data.batch_size:
        raise DatasetError(
            f"{config_path}: --fractions: {min(fractions)} keeps about {smallest} training "
            f"examples, fewer than data.batch_size={config.data.batch_size}"
        )
    run_dir = start_run(config, runs_dir, data, suffix="_learning_curve")
    return run_dir, learning_curve(
        config, run_dir, data, fractions, progress=progress, steps=steps, seeds=seeds
    )
