"""Runner verbs: from a config file (or a run directory) to a finished run directory.

Every check a user's mistake can fail (config, dataset, batch size) runs before the run
directory is created, so a bad invocation writes nothing.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from jaxtrain.checkpoint import Checkpoints
from jaxtrain.config import Config, ConfigError, dump_config, load_config
from jaxtrain.data import DatasetError, Normalizer, PreparedData, check_available, prepare_data
from jaxtrain.models import check_input_shape
from jaxtrain.train import RunResult, build_pieces, stop_on_signals, train_and_evaluate
from jaxtrain.train.evaluate import evaluate
from jaxtrain.train.loop import DATA_STATS_FILE
from jaxtrain.train.step import make_eval_step

RUNS_DIR_ENV = "JAXTRAIN_RUNS_DIR"
CONFIG_FILE = "config.yaml"
RESUMABLE_PREFIX = "train."  # settings a resumed run may change (length, logging, keeping)


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
        frozen = [o for o in overrides if not o.startswith(RESUMABLE_PREFIX)]
        if frozen:
            raise ConfigError(
                f"{run_dir / CONFIG_FILE}: {frozen[0].partition('=')[0]}: only "
                f"{RESUMABLE_PREFIX}* settings can change when resuming (the checkpoint was "
                "made with the rest); start a new run instead"
            )
        config = load_config(run_dir / CONFIG_FILE, overrides)
        data = _checked_data(config, run_dir / CONFIG_FILE, _stored_normalizer(run_dir))
        if overrides:
            dump_config(config, run_dir / CONFIG_FILE)
    else:
        if config_path is None:
            raise ConfigError("a config file is required (or --resume RUN_DIR)")
        config = load_config(config_path, overrides)
        data = _checked_data(config, config_path)
        run_dir = new_run_dir(Path(runs_dir) if runs_dir else default_runs_dir(), config.name)
        dump_config(config, run_dir / CONFIG_FILE)
        (run_dir / "environment.json").write_text(json.dumps(environment(), indent=2))
    with stop_on_signals() as preemption:
        return train_and_evaluate(
            config,
            run_dir,
            resume=resume is not None,
            data=data,
            callbacks=(preemption,),
            progress=progress,
        )


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """``jaxtrain eval``: re-evaluate the best checkpoint of ``run_dir`` on validation and test.

    Writes ``eval.json`` beside the run's other outputs and returns what it wrote.
    """
    run_dir = _existing_run(run_dir)
    config = load_config(run_dir / CONFIG_FILE)
    data = _checked_data(config, run_dir / CONFIG_FILE, _stored_normalizer(run_dir))
    pieces = build_pieces(config, data)
    checkpoints = Checkpoints(run_dir / "checkpoints", config.train.checkpoint)
    step = checkpoints.best_step()
    if step is None:
        raise RunError(f"{run_dir / 'checkpoints'}: no checkpoint to evaluate")
    state = checkpoints.restore(step, pieces.state)
    checkpoints.close()
    eval_step = jax.jit(make_eval_step(pieces.model, pieces.data.num_classes))
    batch = config.data.eval_batch_size
    result = {
        "step": step,
        "validation": evaluate(eval_step, state, pieces.data.splits["validation"], batch),
        "test": evaluate(eval_step, state, pieces.data.splits["test"], batch),
    }
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    return result


def _stored_normalizer(run_dir: Path) -> Normalizer | None:
    """The normalisation fitted when the run started, so later calls reuse it exactly."""
    path = run_dir / DATA_STATS_FILE
    return Normalizer.from_dict(json.loads(path.read_text())) if path.is_file() else None


def _existing_run(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(f"{run_dir}: not a jaxtrain run directory (no {CONFIG_FILE})")
    return run_dir


def _checked_data(
    config: Config, source: str | Path, normalizer: Normalizer | None = None
) -> PreparedData:
    """Load and split the data; every problem becomes one error line naming ``source`` (the
    config file) and the key."""
    try:
        check_available(config.data.name, config.data.data_dir)
        data = prepare_data(config.data, normalizer)
        check_input_shape(config.model, data.input_shape)
        train_size = len(data.splits["train"])
        if config.data.batch_size > train_size:
            raise DatasetError(
                f"data.batch_size: {config.data.batch_size} is larger than the training split "
                f"({train_size} examples)"
            )
    except (DatasetError, ValueError) as err:
        raise DatasetError(f"{source}: {err}") from None
    return data
