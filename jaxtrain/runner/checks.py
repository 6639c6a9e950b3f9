"""Every check a user's mistake can fail, run before a run directory is created or changed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jaxtrain import registry
from jaxtrain.config import Config, ConfigError, dump_config, load_config
from jaxtrain.runner.run_dirs import CONFIG_FILE, stored_stats

MAX_STEPS = 2**31 - 1  # TrainState.step is i32


def checked_data(
    config: Config, source: str | Path, stats: dict | None = None, *, verb: str = "train"
):
    """Load and split the data; every problem becomes one error line naming ``source`` (the
    config file) and the key. ``verb``: train (and eval) may stream the data
    (``data.stream``); the others hold it in memory."""
    from jaxtrain.config.verbs import can_stream
    from jaxtrain.data import DatasetError, check_available, prepare_data
    from jaxtrain.models import check_model_fits_data
    from jaxtrain.train.fairness_audit import sensitive_groups
    from jaxtrain.train.tasks import resolve_monitor, task_for

    try:
        registered = config.data.path is None and registry.find("dataset", config.data.name)
        if config.data.path is None and not registered:
            check_available(config.data.name, config.data.data_dir)
        streamable = can_stream(config, verb)
        data = prepare_data(
            config.data, _source_normalizer(config, stats), stats=stats, streamable=streamable
        )
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
        steps = config.train.epochs * train_size // config.data.batch_size
        if steps > MAX_STEPS:
            raise DatasetError(
                f"train.epochs: {config.train.epochs} epochs of {train_size} examples in "
                f"batches of {config.data.batch_size} are {steps:,} steps, more than "
                f"{MAX_STEPS:,} (the step counter is a 32-bit integer)"
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


def _checked_transfer(config: Config, data, source: str | Path) -> None:
    """The pretrained source, the patterns and the shapes, checked before anything is
    written; a problem is one line naming the key or the parameter."""
    from jaxtrain.transfer import TransferError, check_transfer

    try:
        check_transfer(config, data)
    except TransferError as err:
        raise ConfigError(f"{source}: {err}") from None


def check_resumable(
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


def resumed_config(
    run_dir: Path, overrides: Sequence[str], writer: bool = True, *, verb: str = "train"
):
    """The run's own config with ``overrides`` (written back when there are any) and its data
    prepared with the statistics stored at the start. Call holding the run's lock."""
    config = load_config(run_dir / CONFIG_FILE, overrides)
    data = checked_data(config, run_dir / CONFIG_FILE, stored_stats(run_dir), verb=verb)
    if overrides and writer:
        dump_config(config, run_dir / CONFIG_FILE)
    return config, data
