"""Runner verbs: from a config file (or a run directory) to a finished run directory.

Every check a user's mistake can fail (config, dataset, batch size) runs before the run
directory is created, so a bad invocation writes nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxtrain.config import Config, ConfigError, dump_config, load_config
from jaxtrain.data import (
    DatasetError,
    PreparedData,
    check_available,
    prepare_data,
    write_data_report,
)
from jaxtrain.distributed import broadcast_text, is_writer
from jaxtrain.distributed import initialize as initialize_distributed
from jaxtrain.models import check_model_fits_data, is_fitted
from jaxtrain.train import RunResult, build_pieces, stop_on_signals, train_and_evaluate
from jaxtrain.train.evaluate import evaluate
from jaxtrain.train.fairness_audit import sensitive_groups
from jaxtrain.train.fit import FITTED_DIR, evaluate_fitted, fit_and_evaluate
from jaxtrain.train.loop import DATA_STATS_FILE
from jaxtrain.train.step import make_eval_step
from jaxtrain.train.tasks import resolve_monitor, task_for

RUNS_DIR_ENV = "JAXTRAIN_RUNS_DIR"
CONFIG_FILE = "config.yaml"
RESUMABLE_PREFIX = "train."  # settings a resumed run may change (length, logging, keeping)
# ... and where it runs: a checkpoint of any placement restores into any other.
RESUMABLE_PREFIXES = (RESUMABLE_PREFIX, "distributed.")


class RunError(ValueError):
    """A run directory that cannot be used as asked (missing, not a jaxtrain run, ...)."""


def default_runs_dir() -> Path:
    """``$JAXTRAIN_RUNS_DIR``, else ``./runs``."""
    return Path(os.environ.get(RUNS_DIR_ENV, "runs"))


def new_run_dir(runs_dir: Path, name: str) -> Path:
    """Create ``runs_dir/name/<YYYYmmdd-HHMMSS>[-k]/``, never reusing an existing folder."""
    parent = runs_dir / name
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        candidate = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RunError(f"{parent}: could not find a free run directory name")


def start_run(
    config: Config, runs_dir: str | Path | None, data: PreparedData, suffix: str = ""
) -> Path:
    """A new run directory for ``config`` (under ``runs_dir``, default :func:`default_runs_dir`)
    holding the resolved ``config.yaml``, ``environment.json`` and, where data preparation
    reported anything, ``data_report.md``/``.json``. Called only after every check passed."""
    parent = Path(runs_dir) if runs_dir else default_runs_dir()
    run_dir = new_run_dir(parent, config.name + suffix)
    dump_config(config, run_dir / CONFIG_FILE)
    (run_dir / "environment.json").write_text(json.dumps(environment(), indent=2))
    if data.report is not None:
        write_data_report(run_dir, data.report)
    return run_dir


def environment() -> dict[str, Any]:
    """Versions, platform, devices and the git revision of the working directory."""
    import flax
    import jaxlib
    import optax

    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        revision = None
    return {
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "platform": platform.platform(),
        "devices": [str(d) for d in jax.devices()],
        "git_revision": revision,
    }


LOCK_FILE = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` for the block, or raise RunError at once if
    another process holds it. The OS releases the lock when its holder exits, even by
    ``kill -9``, so a crashed run never leaves its directory locked."""
    path = run_dir / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunError(
            f"{run_dir}: in use by another jaxtrain process (pid {holder}); wait for it or "
            "stop it before resuming or evaluating here"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def train(
    config_path: str | Path | None,
    overrides: Sequence[str] = (),
    *,
    runs_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
) -> RunResult:
    """``jaxtrain train``: a new run of ``config_path``, or continue the run dir ``resume``.

    When resuming, the run's own resolved ``config.yaml`` is used (``overrides`` apply on top,
    e.g. ``train.epochs=30`` to extend); ``config_path``, if given, is ignored.
    """
    if resume is not None:
        run_dir = _existing_run(resume)
        allowed = f"{RESUMABLE_PREFIX}* and distributed.* settings"
        _check_resumable(run_dir, overrides, RESUMABLE_PREFIXES, allowed)
        initialize_distributed(load_config(run_dir / CONFIG_FILE, overrides).distributed)
        with _writer_lock(run_dir):  # checked before anything in the directory changes
            config, data = _resumed_config(run_dir, overrides)
            return _train_locked(config, run_dir, data, resume, progress)
    if config_path is None:
        raise ConfigError("a config file is required (or --resume RUN_DIR)")
    config = load_config(config_path, overrides)
    initialize_distributed(config.distributed)
    data = _checked_data(config, config_path)
    # Process 0 creates the run directory; the others learn its name from it.
    run_dir = start_run(config, runs_dir, data) if is_writer() else None
    if jax.process_count() > 1:
        run_dir = Path(broadcast_text(str(run_dir) if run_dir else None))
    with _writer_lock(run_dir):
        return _train_locked(config, run_dir, data, resume, progress)


def _writer_lock(run_dir: Path):
    """The run directory's lock, held by the process that writes it (process 0)."""
    return run_lock(run_dir) if is_writer() else contextlib.nullcontext()


def _check_resumable(
    run_dir: Path, overrides: Sequence[str], prefixes: tuple[str, ...], allowed: str
) -> None:
    """Refuse overrides outside ``prefixes``: the checkpoint was made with the rest."""
    frozen = [o for o in overrides if not o.startswith(prefixes)]
    if frozen:
        raise ConfigError(
            f"{run_dir / CONFIG_FILE}: {frozen[0].partition('=')[0]}: only {allowed} can "
            "change when resuming (the checkpoint was made with the rest); start a new run "
            "instead"
        )


def _resumed_config(run_dir: Path, overrides: Sequence[str]) -> tuple[Config, PreparedData]:
    """The run's own config with ``overrides`` (written back when there are any) and its data
    prepared with the statistics stored at the start. Call holding the run's lock."""
    config = load_config(run_dir / CONFIG_FILE, overrides)
    data = _checked_data(config, run_dir / CONFIG_FILE, _stored_stats(run_dir))
    if overrides and is_writer():
        dump_config(config, run_dir / CONFIG_FILE)
    return config, data


def _train_locked(config, run_dir, data, resume, progress) -> RunResult:
    if is_fitted(config.model):
        if resume is not None:
            raise RunError(
                f"{run_dir}: {config.model.name} is fitted in one step; nothing to resume"
            )
        (run_dir / DATA_STATS_FILE).write_text(json.dumps(data.stats()))
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
        )


FEDERATED_RESUMABLE = ("train.", "federated.rounds", "federated.eval_every",
                       "federated.checkpoint_every")  # fmt: skip


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

    if resume is not None:
        run_dir = _existing_run(resume)
        allowed = "train.*, federated.rounds, eval_every and checkpoint_every"
        _check_resumable(run_dir, overrides, FEDERATED_RESUMABLE, allowed)
        with run_lock(run_dir):
            config, data = _resumed_config(run_dir, overrides)
            with stop_on_signals() as preemption:
                return run_federated(
                    config, run_dir, data, resume=True, progress=progress, callbacks=(preemption,)
                )
    if config_path is None:
        raise ConfigError("a config file is required (or --resume RUN_DIR)")
    config = load_config(config_path, overrides)
    _no_transfer(config, config_path, "federated")
    data = _checked_data(config, config_path)
    try:
        check_federated(config, data)
    except ValueError as err:
        raise ConfigError(f"{config_path}: {err}") from None
    run_dir = start_run(config, runs_dir, data)
    with run_lock(run_dir), stop_on_signals() as preemption:
        return run_federated(config, run_dir, data, progress=progress, callbacks=(preemption,))


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
    from jaxtrain.sweep import run_sweep

    if resume is not None:
        run_dir = _existing_run(resume)
        with run_lock(run_dir):
            config = load_config(run_dir / CONFIG_FILE)
            _checked_data(config, run_dir / CONFIG_FILE)
            return run_dir, run_sweep(config, run_dir, resume=True, progress=progress)
    if config_path is None:
        raise ConfigError("a config file is required (or --resume SWEEP_DIR)")
    config = load_config(config_path, overrides)
    if config.sweep is None:
        raise ConfigError(f"{config_path}: sweep: the config has no sweep section")
    _no_transfer(config, config_path, "sweep")
    run_dir = start_run(config, runs_dir, _checked_data(config, config_path))
    with run_lock(run_dir):
        return run_dir, run_sweep(config, run_dir, progress=progress)


def check_determinism(
    config_path: str | Path, overrides: Sequence[str] = (), steps: int = 20
) -> dict[str, Any]:
    """``jaxtrain train CONFIG --check-determinism N``: run the first ``steps`` training steps
    twice from scratch (same config and seeds, fresh state and data stream each time) and
    compare SHA-256 digests of the parameters. Writes nothing."""
    from jaxtrain.checkpoint import state_digest
    from jaxtrain.data import train_batches
    from jaxtrain.train.augment import build_augment
    from jaxtrain.train.step import make_train_step

    if steps < 1:
        raise ConfigError(f"--check-determinism: {steps} steps; give at least 1")
    config = load_config(config_path, overrides)
    data = _checked_data(config, config_path)
    digests = []
    for _ in range(2):
        pieces = build_pieces(config, data)
        step = jax.jit(
            make_train_step(
                pieces.model,
                pieces.tx,
                pieces.task,
                pieces.penalty,
                build_augment(config.train.augment),
            )
        )
        stream = iter(
            train_batches(
                data.splits["train"], config.data.batch_size, config.train.epochs, config.data.seed
            )
        )
        state = pieces.state
        for _ in range(min(steps, pieces.total_steps)):
            state, _ = step(state, next(stream))
        digests.append(state_digest(state.params))
    return {
        "steps": min(steps, pieces.total_steps),
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
) -> tuple[Path, dict[str, Any]]:
    """``jaxtrain learning-curve``: train ``config_path`` on growing shares of its training
    split (see :mod:`jaxtrain.learning_curve`); returns the directory and the result."""
    from jaxtrain.learning_curve import learning_curve

    bad = [f for f in fractions if not 0 < f <= 1]
    if bad or not fractions:
        raise ConfigError(f"--fractions: each must be in (0, 1], got {list(fractions)}")
    config = load_config(config_path, overrides)
    data = _checked_data(config, config_path)
    smallest = round(min(fractions) * len(data.splits["train"]))
    if smallest < config.data.batch_size:
        raise DatasetError(
            f"{config_path}: --fractions: {min(fractions)} keeps about {smallest} training "
            f"examples, fewer than data.batch_size={config.data.batch_size}"
        )
    run_dir = start_run(config, runs_dir, data, suffix="_learning_curve")
    return run_dir, learning_curve(config, run_dir, data, fractions, progress=progress)


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """``jaxtrain eval``: re-evaluate the best checkpoint of ``run_dir`` on validation and test.

    Writes ``eval.json`` beside the run's other outputs and returns what it wrote.
    """
    run_dir = _existing_run(run_dir)
    with run_lock(run_dir):
        return _evaluate_locked(run_dir)


def _evaluate_locked(run_dir: Path) -> dict[str, Any]:
    config = load_config(run_dir / CONFIG_FILE)
    data = _checked_data(config, run_dir / CONFIG_FILE, _stored_stats(run_dir))
    if is_fitted(config.model):
        if not (run_dir / FITTED_DIR).is_dir():
            raise RunError(f"{run_dir / FITTED_DIR}: no fitted model to evaluate")
        result = evaluate_fitted(config, run_dir, data)
        (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
        return result
    pieces = build_pieces(config, data, pretrained=False)
    checkpoints = pieces.checkpoints(run_dir / "checkpoints", config)
    step = checkpoints.best_step()
    if step is None:
        raise RunError(f"{run_dir / 'checkpoints'}: no checkpoint to evaluate")
    state = checkpoints.restore(step, pieces.state)
    checkpoints.close()
    eval_step = jax.jit(make_eval_step(pieces.model, pieces.task))
    batch, splits = config.data.eval_batch_size, pieces.data.splits
    result = {
        "step": step,
        "validation": evaluate(eval_step, state, splits["validation"], batch, pieces.task),
        "test": evaluate(eval_step, state, splits["test"], batch, pieces.task),
    }
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    return result


def generate_text(
    run_dir: str | Path,
    prompt: str,
    *,
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int | None = 20,
    seed: int = 0,
) -> str:
    """``jaxtrain generate``: continue ``prompt`` with the best checkpoint of a language-model
    run (bytes sampled with ``temperature`` and ``top_k``, through the KV cache).

    Returns the prompt followed by the generated text (bytes that are not valid UTF-8 on their
    own are shown as U+FFFD). Raises RunError for a run that is not a language model, and when
    prompt plus new tokens exceed the model's context (``data.sequence_length``).
    """
    from jaxtrain.models import generate

    run_dir = _existing_run(run_dir)
    config = load_config(run_dir / CONFIG_FILE)
    if config.model.name != "transformer_lm":
        raise RunError(f"{run_dir}: model.name is {config.model.name}, not transformer_lm")
    tokens = np.frombuffer(prompt.encode("utf-8"), np.uint8).astype(np.int32)
    context = config.data.sequence_length
    if not 1 <= len(tokens) + max_new_tokens <= context or len(tokens) == 0:
        raise RunError(
            f"--prompt ({len(tokens)} bytes) + --max-new-tokens ({max_new_tokens}) must be "
            f"between 1 and the model's context of {context} bytes (data.sequence_length)"
        )
    if top_k is not None and not 1 <= top_k <= 256:
        raise RunError(f"--top-k: {top_k} is outside 1..256 (the byte vocabulary)")
    if temperature < 0:
        raise RunError(f"--temperature: {temperature} is negative; use 0 for greedy decoding")
    data = _checked_data(config, run_dir / CONFIG_FILE, _stored_stats(run_dir))
    pieces = build_pieces(config, data, pretrained=False)
    checkpoints = pieces.checkpoints(run_dir / "checkpoints", config)
    step = checkpoints.best_step()
    if step is None:
        raise RunError(f"{run_dir / 'checkpoints'}: no checkpoint to generate from")
    state = checkpoints.restore(step, pieces.state)
    checkpoints.close()
    output = generate(
        pieces.model,
        state.params,
        jax.numpy.asarray(tokens)[None, :],
        jax.random.key(seed),
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
    )
    return bytes(np.asarray(output[0], np.uint8)).decode("utf-8", errors="replace")


def _stored_stats(run_dir: Path) -> dict | None:
    """The statistics fitted when the run started, so later calls reuse them exactly."""
    path = run_dir / DATA_STATS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _existing_run(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(f"{run_dir}: not a jaxtrain run directory (no {CONFIG_FILE})")
    return run_dir


def _checked_data(config: Config, source: str | Path, stats: dict | None = None) -> PreparedData:
    """Load and split the data; every problem becomes one error line naming ``source`` (the
    config file) and the key."""
    try:
        if config.data.path is None:
            check_available(config.data.name, config.data.data_dir)
        data = prepare_data(config.data, _source_normalizer(config, stats), stats=stats)
        check_model_fits_data(config.model, data)
        if config.fairness is not None:
            sensitive_groups(config, data)
        resolve_monitor(task_for(data), config.train.monitor)
        train_size = len(data.splits["train"])
        if config.data.batch_size > train_size:
            raise DatasetError(
                f"data.batch_size: {config.data.batch_size} is larger than the training split "
                f"({train_size} examples)"
            )
    except (DatasetError, ValueError) as err:
        raise DatasetError(f"{source}: {err}") from None
    if config.transfer is not None and stats is None:  # a new run: check the pretrained source
        _checked_transfer(config, data, source)
    return data


def _source_normalizer(config: Config, stats: dict | None):
    """A new transfer run with ``transfer.normalizer: source``: the input normaliser the
    pretrained run used (stored in its data_stats.json), else None (fit on the new data)."""
    transfer = config.transfer
    if stats is not None or transfer is None or transfer.normalizer != "source":
        return None
    from jaxtrain.data.dataset import fitted_stats
    from jaxtrain.transfer.load import source_stats

    return fitted_stats(source_stats(transfer))[0]


def _checked_transfer(config: Config, data: PreparedData, source: str | Path) -> None:
    """The pretrained source, the patterns and the shapes, checked before anything is
    written; a problem is one line naming the key or the parameter."""
    from jaxtrain.transfer import TransferError, check_transfer

    try:
        check_transfer(config, data)
    except TransferError as err:
        raise ConfigError(f"{source}: {err}") from None


def _no_transfer(config: Config, source: str | Path, verb: str) -> None:
    if config.transfer is not None:
        raise ConfigError(
            f"{source}: transfer: jaxtrain {verb} does not start from pretrained weights yet; "
            "use jaxtrain train (or set transfer=null)"
        )
