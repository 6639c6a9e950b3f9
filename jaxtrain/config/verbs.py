"""What each verb honours: a setting a verb cannot honour is refused, never ignored.

Every verb trains with the one step (:func:`jaxtrain.train.pieces.build_step`), so every
setting of the step (label smoothing, augmentation, precision, micro-batches, penalties,
example weights) changes a sweep member or a federated client exactly as it changes a
``train`` run. What is left are settings of the *host loop* that only ``train`` has: those are
refused here, with the reason, when the config is read (the CLI exits 2, nothing written).
"""

from __future__ import annotations

import importlib.util

from jaxtrain.config.load import ConfigError
from jaxtrain.config.schema import Config, TrainConfig

_DEFAULT_TRAIN = TrainConfig()

# verb -> [(train key, reason)]: refused when set to anything but its default.
_LOOP_ONLY = {
    "sweep": [
        ("parallel", "a sweep places its members on devices itself (sweep.devices)"),
        ("early_stopping", "stop weak members with sweep.halving instead"),
        ("reduce_on_plateau", "a sweep has no per-member plateau schedule; sweep the rate"),
        ("extend_schedule", "a sweep is not extended by --resume; start a longer sweep"),
        ("dp", "members train on fixed-size batches; DP-SGD needs Poisson-sampled ones"),
    ],
    "federated": [
        ("parallel", "a round places its clients itself (one vmapped program)"),
        ("early_stopping", "federated runs train for federated.rounds"),
        ("reduce_on_plateau", "the client optimizer restarts every round"),
        ("epochs", "federated runs train for federated.rounds (federated.local_epochs per round)"),
        ("eval_every", "use federated.eval_every (rounds)"),
        ("fused_epochs", "clients always train as one scan on the device"),
        ("extend_schedule", "a client's schedule spans one round; add federated.rounds"),
    ],
    "learning-curve": [
        ("extend_schedule", "every point is a new run, never extended"),
    ],
}


def check_verb(config: Config, verb: str, source: object = "config") -> None:
    """Raise :class:`ConfigError` naming ``source`` and the key when ``config`` sets something
    ``verb`` (``train``, ``sweep``, ``federated``, ``learning-curve``, ``eval``) cannot
    honour."""
    _check_tracking(config, verb, source)
    train = config.train
    if verb in ("train", "learning-curve"):  # one run: a section for another verb is not run
        for section, other in (("sweep", "sweep"), ("federated", "federated")):
            if getattr(config, section) is not None:
                raise ConfigError(
                    f"{source}: {section}: jaxtrain {verb} trains one model centrally and would "
                    f"not run this section; use jaxtrain {other}, or set {section}=null"
                )
    for key, reason in _LOOP_ONLY.get(verb, []):
        if getattr(train, key) != getattr(_DEFAULT_TRAIN, key):
            raise ConfigError(
                f"{source}: train.{key}: jaxtrain {verb} cannot honour it ({reason}); remove it"
            )
    if verb in ("sweep", "federated"):
        if train.nonfinite == "rollback":
            raise ConfigError(
                f"{source}: train.nonfinite: rollback needs the train loop's checkpoints; "
                f"jaxtrain {verb} honours stop and skip"
            )
        if config.distributed is not None and verb == "federated":
            raise ConfigError(
                f"{source}: distributed: jaxtrain {verb} runs in one process; remove the "
                "distributed section"
            )
        if config.transfer is not None:
            raise ConfigError(
                f"{source}: transfer: jaxtrain {verb} does not start from pretrained weights "
                "yet; use jaxtrain train (or set transfer=null)"
            )
    if verb == "sweep" and config.sweep is not None:
        _check_search(config, source)
    _check_data_path(config, verb, source)
    if verb == "federated" and config.federated is not None:
        batch = config.federated.batch_size or config.data.batch_size
        if batch % train.micro_batches:
            raise ConfigError(
                f"{source}: train.micro_batches: {train.micro_batches} does not divide the "
                f"clients' batch of {batch} (federated.batch_size or data.batch_size)"
            )


# sweep.method -> the packages it imports (the `search` extra: pip install 'jaxtrain[search]')
_SEARCH_PACKAGES = {
    "tpe": ("optuna",),
    "random": ("optuna",),
    "cmaes": ("optuna", "cmaes"),
    "gp": ("optuna", "torch"),  # Optuna's GPSampler is written in PyTorch
}


def _check_search(config: Config, source: object) -> None:
    """No axis may sweep what a sweep cannot honour per member (the keys refused above); a
    search in rounds needs Optuna (and what its sampler needs); under ``distributed:`` the
    members spread over every process's devices, so ``sweep.devices`` cannot pick."""
    sweep = config.sweep
    loop_only = [f"train.{key}" for key, _ in _LOOP_ONLY["sweep"]]
    for key, axis in sweep.axes.items():
        section = key.split(".")[0]
        swept = next((k for k in loop_only if key == k or key.startswith(k + ".")), None)
        if swept or section in ("distributed", "transfer"):
            raise ConfigError(
                f"{source}: sweep.axes.{key}: jaxtrain sweep cannot honour "
                f"{swept or section} per member; remove the axis"
            )
        if key == "train.nonfinite" and "rollback" in (axis if isinstance(axis, list) else []):
            raise ConfigError(
                f"{source}: sweep.axes.train.nonfinite: rollback needs the train loop's "
                "checkpoints; jaxtrain sweep honours stop and skip"
            )
    if config.distributed is not None and sweep.devices is not None:
        raise ConfigError(
            f"{source}: sweep.devices: under distributed: the members are spread over every "
            "process's devices; remove sweep.devices"
        )
    if not sweep.search:
        return
    for package in _SEARCH_PACKAGES[sweep.method]:
        if importlib.util.find_spec(package) is None:
            how = "pip install torch" if package == "torch" else "pip install 'jaxtrain[search]'"
            raise ConfigError(
                f"{source}: sweep.method: {sweep.method} needs the Python package {package!r}, "
                f"which is not installed ({how})"
            )


_DEFAULT_DATA = {"workers": 0, "prefetch": 2}
_IN_DEVICE_MEMORY = {
    "sweep": "a sweep trains its members from the training split held on the devices",
    "federated": "clients train from their data held on the devices",
}


def _check_data_path(config: Config, verb: str, source: object) -> None:
    """Streaming (``data.stream``), grain workers and prefetching, and host augmentation
    (``train.augment.where: workers``) belong to the per-step input pipeline of ``train``:
    refused where the data sits whole in device memory instead."""
    data, fused = config.data, config.train.fused_epochs
    reason = _IN_DEVICE_MEMORY.get(verb)
    if reason is None and fused:
        reason = "train.fused_epochs gathers batches on the device from the split held there"
    if data.stream is True and not can_stream(config, verb):
        why = reason or (
            "a learning curve trains on subsets of the training split in memory"
            if verb == "learning-curve"
            else "the fairness audit joins each example's group by its row in memory"
        )
        raise ConfigError(
            f"{source}: data.stream: true: jaxtrain {verb} cannot honour it ({why}); use "
            "data.stream: auto (held in memory) or false"
        )
    if reason and config.train.augment.where == "workers":
        raise ConfigError(
            f"{source}: train.augment.where: workers: jaxtrain {verb} cannot honour it "
            f"({reason}, no workers make its batches); use where: step"
        )
    if reason:
        for key, default in _DEFAULT_DATA.items():
            if getattr(data, key) != default:
                raise ConfigError(
                    f"{source}: data.{key}: jaxtrain {verb} cannot honour it ({reason}, "
                    "no input pipeline runs); remove it"
                )


def can_stream(config: Config, verb: str) -> bool:
    """Whether ``verb`` can train ``config`` on streamed data (``data.stream``): only the
    per-step loop of ``train`` (and ``eval``, which uses the train verb's data), without a
    fairness audit (it joins groups by row in memory)."""
    return (
        verb == "train"
        and not config.train.fused_epochs
        and config.fairness is None
        and config.train.dp is None  # DP-SGD samples every example each step (in memory)
    )


def _check_tracking(config: Config, verb: str, source: object) -> None:
    """Every verb logs to the configured trackers (train, sweep members, federated rounds,
    learning-curve points, evaluations); a tracker whose library is missing is refused."""
    import importlib.util

    tracking = config.tracking
    if tracking is not None and tracking.mlflow is not None:
        if importlib.util.find_spec("mlflow") is None:
            raise ConfigError(
                f"{source}: tracking.mlflow: the mlflow package is not installed, so jaxtrain "
                f"{verb} cannot log to MLflow; pip install 'jaxtrain[mlflow]' (or remove "
                "tracking.mlflow)"
            )
