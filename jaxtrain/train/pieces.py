"""From a config to the pieces every verb trains with, and the one step builder.

:func:`build_pieces` makes the data, model, optimizer and initial state; :func:`build_step`
makes the run's pure ``train_step`` with every option of the config (task and label
smoothing, penalty, augmentation, precision, micro-batches) and the placement's collective
axis. Every verb (train, fused epochs, sweep members, federated clients, learning curves,
``--check-determinism``) gets its step from :func:`build_step`, so a setting changes all of
them the same way; what a verb cannot honour is refused by
:func:`jaxtrain.config.verbs.check_verb` before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxtrain.checkpoint import Checkpoints
from jaxtrain.config import Config
from jaxtrain.config.verbs import can_stream
from jaxtrain.data import PreparedData, prepare_data
from jaxtrain.models import build_model, build_penalty
from jaxtrain.train.augment import build_augment, step_conversion
from jaxtrain.train.fairness_audit import sensitive_groups, training_weights
from jaxtrain.train.optim import build_optimizer
from jaxtrain.train.parallel import AXIS
from jaxtrain.train.private import PrivacyPlan, privacy_plan
from jaxtrain.train.state import TrainState, create_train_state
from jaxtrain.train.step import Penalty, make_train_step
from jaxtrain.train.tasks import Task, resolve_monitor, task_for
from jaxtrain.transfer import build_transfer

COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # train.precision


@dataclass(frozen=True)
class Pieces:
    """Everything built from a config before the loop runs (shared by every verb)."""

    data: PreparedData
    model: Any
    tx: Any
    state: TrainState | None  # None for families fitted without the loop (trees, forests)
    total_steps: int
    task: Task
    penalty: Any = None
    groups: dict[str, np.ndarray] | None = None  # fairness: each split's group ids
    transfer: Any = None  # jaxtrain.transfer.Transfer with a transfer: section
    transfer_report: Any = None  # what loading the pretrained weights did (a new run only)
    privacy: PrivacyPlan | None = None  # train.dp: sampling, noise and the account

    def checkpoints(self, directory: Path, config: Config) -> Checkpoints:
        """The run's checkpoints, ranked by the task's monitored validation metric."""
        monitor, mode = resolve_monitor(self.task, config.train.monitor)
        return Checkpoints(directory, config.train.checkpoint, monitor, mode)


def total_steps(config: Config, train_size: int) -> int:
    """Training steps of a run: ``epochs`` passes over ``train_size`` examples in full batches."""
    return config.train.epochs * train_size // config.data.batch_size


def build_pieces(
    config: Config,
    data: PreparedData | None = None,
    *,
    pretrained: bool = True,
    steps: int | None = None,
    extensions: tuple = (),
) -> Pieces:
    """Data, model, optimizer and the initial state for ``config`` (deterministic in its seeds).

    ``steps`` is the length the optimizer's schedule spans (default: the run's total steps;
    a federated client's schedule spans one round). With a ``transfer:`` section the model
    and optimizer are the transfer's (adapters, frozen parameters, per-layer rates) and, with
    ``pretrained``, the initial state holds the pretrained weights (resume and eval restore a
    checkpoint instead, so they skip that). ``extensions``: the later stages of an extended
    run (with ``steps`` the first stage's length; see :mod:`jaxtrain.train.extend`)."""
    data = data or prepare_data(config.data, streamable=can_stream(config, "train"))
    groups = sensitive_groups(config, data) if config.fairness else None
    data = training_weights(config, data, groups)
    train = data.splits["train"]
    total = total_steps(config, len(train))
    axis_name = AXIS if config.train.parallel == "pmap" else None  # BatchNorm syncs over it
    model = build_model(config.model, data.num_outputs, data.input_shape, axis_name,
                        COMPUTE_DTYPES[config.train.precision])  # fmt: skip
    transfer = None
    if config.transfer is not None:
        steps_per_epoch = len(train) / config.data.batch_size
        transfer = build_transfer(
            config.transfer, model, data.input_shape, train.inputs.dtype, steps_per_epoch
        )
        model = transfer.model
    tx = build_optimizer(
        config.optimizer, steps or total, wrap=transfer and transfer.wrap, extensions=extensions
    )
    state = create_train_state(model, tx, data.input_shape, config.seed, train.inputs.dtype)
    report = None
    if transfer is not None and pretrained:
        state, report = transfer.initialise(state, tx)
    penalty = build_penalty(config.model)
    task = task_for(data, config.train.label_smoothing)
    privacy = privacy_plan(config, len(train), total)
    return Pieces(data, model, tx, state, total, task, penalty, groups, transfer, report, privacy)


def build_step(
    config: Config,
    pieces: Pieces,
    *,
    axis_name: str | None = None,
    loss_hook: Penalty | None = None,
):
    """The run's pure ``train_step(state, batch) -> (state, metrics)``: :func:`make_train_step`
    with every option ``config`` sets (the task with its label smoothing and the model's
    penalty come from ``pieces``). ``axis_name``: the collective axis of a ``pmap``
    placement; ``loss_hook``: an extra objective term (federated FedProx and SCAFFOLD)."""
    return make_train_step(
        pieces.model,
        pieces.tx,
        pieces.task,
        pieces.penalty,
        build_augment(config.train.augment, step_conversion(config, pieces.data)),
        axis_name=axis_name,
        micro_batches=config.train.micro_batches,
        compute_dtype=COMPUTE_DTYPES[config.train.precision],
        loss_hook=loss_hook,
        dp=pieces.privacy and pieces.privacy.gradient,
    )
