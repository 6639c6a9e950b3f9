"""What each verb honours: a setting a verb cannot honour is refused, never ignored.

Every verb trains with the one step (:func:`jaxtrain.train.pieces.build_step`), so every
setting of the step (label smoothing, augmentation, precision, micro-batches, penalties,
example weights) changes a sweep member or a federated client exactly as it changes a
``train`` run. What is left are settings of the *host loop* that only ``train`` has: those are
refused here, with the reason, when the config is read (the CLI exits 2, nothing written).
"""

from __future__ import annotations

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
        if config.distributed is not None:
            raise ConfigError(
                f"{source}: distributed: jaxtrain {verb} runs in one process; remove the "
                "distributed section"
            )
        if config.transfer is not None:
            raise ConfigError(
                f"{source}: transfer: jaxtrain {verb} does not start from pretrained weights "
                "yet; use jaxtrain train (or set transfer=null)"
            )
    if verb == "federated" and config.federated is not None:
        batch = config.federated.batch_size or config.data.batch_size
        if batch % train.micro_batches:
            raise ConfigError(
                f"{source}: train.micro_batches: {train.micro_batches} does not divide the "
                f"clients' batch of {batch} (federated.batch_size or data.batch_size)"
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
