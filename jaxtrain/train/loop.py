"""The host loop: ``train_and_evaluate(config, run_dir)``, the entry every runner verb reaches.

Thin on purpose: arithmetic happens in the pure, jitted steps; this file moves batches in,
metrics out, and decides when to evaluate, checkpoint and stop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxtrain.checkpoint import Checkpoints
from jaxtrain.config import Config, config_to_dict
from jaxtrain.data import PreparedData, prepare_data, train_batches, train_index_batches
from jaxtrain.distributed import is_writer
from jaxtrain.logging import MetricWriter, truncate_after
from jaxtrain.models import build_model, build_penalty
from jaxtrain.train.augment import build_augment
from jaxtrain.train.callbacks import Callback, EarlyStopping, Plateau, chain
from jaxtrain.train.costs import training_cost
from jaxtrain.train.evaluate import evaluate, predict, scalars
from jaxtrain.train.fairness_audit import (
    count_groups,
    fairness_audit,
    sensitive_groups,
    training_weights,
)
from jaxtrain.train.fused import make_fused_steps
from jaxtrain.train.optim import PEAK, build_optimizer, scale_learning_rate
from jaxtrain.train.outputs import write_outputs
from jaxtrain.train.parallel import AXIS, build_placement
from jaxtrain.train.state import TrainState, count_params, create_train_state
from jaxtrain.train.step import apply_model, make_eval_step, make_train_step
from jaxtrain.train.tasks import Task, resolve_monitor, task_for
from jaxtrain.transfer import build_transfer, write_transfer_report

DATA_STATS_FILE = "data_stats.json"  # statistics fitted on the training split, reused later


@dataclass(frozen=True)
class RunResult:
    """What a call of :func:`train_and_evaluate` achieved.

    ``status`` is ``"finished"`` (all steps done, test metrics written) or ``"stopped"`` (a
    callback or signal stopped it; a checkpoint at ``step`` allows ``--resume``).
    """

    status: str
    step: int
    total_steps: int
    state: TrainState | None  # None for families fitted without the loop (trees, forests)
    test: dict[str, Any] | None
    run_dir: Path


@dataclass(frozen=True)
class Pieces:
    """Everything built from a config before the loop runs (shared by train and eval)."""

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

    def checkpoints(self, directory: Path, config: Config) -> Checkpoints:
        """The run's checkpoints, ranked by the task's monitored validation metric."""
        monitor, mode = resolve_monitor(self.task, config.train.monitor)
        return Checkpoints(directory, config.train.checkpoint, monitor, mode)


def build_pieces(
    config: Config, data: PreparedData | None = None, *, pretrained: bool = True
) -> Pieces:
    """Data, model, optimizer and the initial state for ``config`` (deterministic in its seeds).

    With a ``transfer:`` section the model and optimizer are the transfer's (adapters, frozen
    parameters, per-layer rates) and, with ``pretrained``, the initial state holds the
    pretrained weights (resume and eval restore a checkpoint instead, so they skip that)."""
    data = data or prepare_data(config.data)
    groups = sensitive_groups(config, data) if config.fairness else None
    data = training_weights(config, data, groups)
    total_steps = config.train.epochs * len(data.splits["train"]) // config.data.batch_size
    axis_name = AXIS if config.train.parallel == "pmap" else None  # BatchNorm syncs over it
    model = build_model(config.model, data.num_outputs, data.input_shape, axis_name)
    transfer = None
    if config.transfer is not None:
        steps_per_epoch = len(data.splits["train"]) / config.data.batch_size
        inputs_dtype = data.splits["train"].inputs.dtype
        transfer = build_transfer(
            config.transfer, model, data.input_shape, inputs_dtype, steps_per_epoch
        )
        model = transfer.model
    tx = build_optimizer(config.optimizer, total_steps, wrap=transfer and transfer.wrap)
    inputs = data.splits["train"].inputs
    state = create_train_state(model, tx, data.input_shape, config.seed, inputs.dtype)
    report = None
    if transfer is not None and pretrained:
        state, report = transfer.initialise(state, tx)
    penalty = build_penalty(config.model)
    task = task_for(data, config.train.label_smoothing)
    return Pieces(data, model, tx, state, total_steps, task, penalty, groups, transfer, report)


def train_and_evaluate(
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    data: PreparedData | None = None,
    callbacks: tuple[Callback, ...] = (),
    progress: bool = True,
) -> RunResult:
    """Train ``config`` in ``run_dir`` (which must exist), evaluate, checkpoint, report.

    Validation runs every ``train.eval_every`` steps (default: once per epoch) and at the end;
    each validation is a checkpoint ranked by ``train.checkpoint.monitor``. When all steps are
    done the best checkpoint is evaluated on the test split and ``metrics.json``, plots and
    ``report.md`` are written. With ``resume`` the latest checkpoint in ``run_dir`` is
    restored (state and data position) and training continues exactly where it stopped.
    """
    run_dir = Path(run_dir)
    pieces = build_pieces(config, data, pretrained=not resume)
    placement = build_placement(config.train.parallel)
    placement.check_batch(config.data.batch_size, "data.batch_size")
    placement.check_batch(config.data.eval_batch_size, "data.eval_batch_size")
    split = pieces.data.splits["train"]
    if config.train.fused_epochs:  # index batches: the fused call gathers on the device
        stream = train_index_batches(
            len(split), config.data.batch_size, config.train.epochs, config.data.seed
        )
    else:
        stream = train_batches(
            split,
            config.data.batch_size,
            config.train.epochs,
            config.data.seed,
            shard=placement.process_shard,
            devices=placement.pmap_devices,
        )
    if is_writer():
        (run_dir / DATA_STATS_FILE).write_text(json.dumps(pieces.data.stats()))
        if pieces.transfer_report is not None:
            write_transfer_report(run_dir, pieces.transfer_report)
    checkpoints = pieces.checkpoints(run_dir / "checkpoints", config)
    try:
        return _run(
            config,
            run_dir,
            pieces,
            placement,
            checkpoints,
            iter(stream),
            resume,
            callbacks,
            progress,
        )
    finally:
        checkpoints.close()  # also on errors, so no save thread outlives the call


COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # train.precision


def _step_fn(config, pieces, axis_name):
    """The run's pure ``train_step`` (see :func:`make_train_step`) with the config's options."""
    return make_train_step(
        pieces.model,
        pieces.tx,
        pieces.task,
        pieces.penalty,
        build_augment(config.train.augment),
        axis_name=axis_name,
        micro_batches=config.train.micro_batches,
        compute_dtype=COMPUTE_DTYPES[config.train.precision],
    )


def _advance_fn(config, pieces, placement, iterator):
    """``(advance, step_fn)``: ``advance(state, count) -> (state, metrics)`` runs the next
    ``count`` training steps of the pure ``step_fn``.

    Per-step (``count`` 1): one batch from the pipeline through the compiled step. Fused:
    ``count`` index batches from the same stream through one compiled ``lax.scan`` over the
    training split held on the devices (metrics stacked over the steps)."""
    step_fn = _step_fn(config, pieces, placement.axis_name)
    if not config.train.fused_epochs:
        train_step = placement.compile(step_fn)
        return (
            lambda state, count: train_step(state, placement.put_batch(next(iterator))),
            step_fn,
        )
    fused = placement.compile(make_fused_steps(step_fn))
    on_device = placement.put_replicated(pieces.data.splits["train"].batch())
    index, processes = placement.process_shard

    def advance(state, count):
        indices = np.stack([next(iterator) for _ in range(count)])
        rows = indices.shape[1] // processes  # this process's columns of every batch
        local = indices[:, index * rows : (index + 1) * rows]
        return fused(state, on_device, placement.put_indices(local))

    return advance, step_fn


def _run(
    config, run_dir, pieces, placement, checkpoints, iterator, resume, callbacks, progress
) -> RunResult:
    """The loop proper (see :func:`train_and_evaluate`)."""
    data, total_steps = pieces.data, pieces.total_steps
    steps_per_epoch = len(data.splits["train"]) / config.data.batch_size
    eval_every = config.train.eval_every or max(1, int(steps_per_epoch))
    log_every = config.train.log_every
    fused = config.train.fused_epochs
    config_dict = config_to_dict(config)
    task = pieces.task
    advance, step_fn = _advance_fn(config, pieces, placement, iterator)
    stopping = EarlyStopping.from_config(config.train.early_stopping, checkpoints)
    plateau_config = config.train.reduce_on_plateau
    plateau = plateau_config and Plateau(
        checkpoints.monitor, checkpoints.mode, plateau_config.patience, plateau_config.min_delta
    )
    reductions: list[dict[str, float]] = []
    eval_step = placement.compile_eval(make_eval_step(pieces.model, task))
    host_state = pieces.state  # the placement-free state checkpoints hold
    step = resumed_from = 0
    if resume:  # the newest checkpoint that restores intact (damaged ones are set aside)
        found, host_state = checkpoints.restore_latest_good(host_state, iterator)
        step = resumed_from = found or 0
        if is_writer():
            truncate_after(run_dir, step)  # log lines written after the checkpoint are redone
    state = placement.put_state(host_state)
    callback = chain(*callbacks)

    def validate_and_save(at_step: int) -> bool:
        nonlocal state
        current = placement.host_state(state)
        metrics = evaluate(
            eval_step, current, data.splits["validation"], config.data.eval_batch_size, task
        )
        writer.write(at_step, "validation", scalars(metrics))
        if plateau and plateau.stalled(metrics):  # before saving, so resume keeps the new rate
            reduced = _reduce_learning_rate(current, plateau_config, at_step, reductions)
            if reduced is not current:
                current, state = reduced, placement.put_state(reduced)
        checkpoints.save(at_step, current, iterator, config_dict, metrics=scalars(metrics))
        stopping.update(at_step, metrics)
        return callback.on_eval(at_step, metrics)

    status = "finished"
    window: list[tuple[Any, int | None]] = []  # device metrics: (per-step, None) or (stacked, n)
    rows: list[dict[str, float]] = []  # fetched per-step metrics not yet logged
    skipped = 0  # steps whose update was skipped for a non-finite loss or gradient
    rollbacks: list[dict[str, int]] = []
    lr_factor = 1.0
    start = (step, iterator.get_state())  # where a rollback with no checkpoint returns
    started = time.perf_counter()
    first_step_s = 0.0
    first_count = 0
    with (
        (
            MetricWriter(run_dir, purge_step=resumed_from + 1 if resumed_from else None)
            if is_writer()
            else _NoWriter()
        ) as writer,
        tqdm(
            total=total_steps,
            initial=step,
            disable=None if progress and is_writer() else True,  # None: off when not a tty
            desc=config.name,
            unit="step",
        ) as bar,
    ):
        while step < total_steps:
            # Fused: every stretch up to the next evaluation is one call; else one step.
            count = min(eval_every - step % eval_every, total_steps - step) if fused else 1
            state, step_metrics = advance(state, count)
            step += count
            if not first_step_s:  # compilation happens here; keep it out of the throughput
                jax.block_until_ready(step_metrics)
                first_step_s = time.perf_counter() - started
                first_count = count
            window.append((step_metrics, count if fused else None))
            if fused or step % log_every == 0 or step == total_steps:
                rows.extend(_fetch_rows(placement, window))
                window.clear()
            rolled_back = False
            # Log every completed log_every window among the fetched rows (several per
            # fused call), checking each for non-finite steps first.
            first_row = step - len(rows) + 1
            ends = [s for s in range(first_row, step + 1) if s % log_every == 0 or s == total_steps]
            for end in ends:
                fetched, rows = rows[: end - first_row + 1], rows[end - first_row + 1 :]
                first_row = end + 1
                bad = _check_finite(fetched, end, config, len(pieces.data.splits["train"]))
                if bad and config.train.nonfinite == "rollback":
                    lr_factor *= ROLLBACK_FACTOR
                    rollbacks.append({"at_step": end, "first_bad_step": bad[0]})
                    if len(rollbacks) > MAX_ROLLBACKS:
                        raise NonFiniteError(
                            f"non-finite loss or gradient again at step {bad[0]} after "
                            f"{MAX_ROLLBACKS} rollbacks with a lower learning rate; giving up"
                        )
                    host_state, step = _roll_back(pieces, checkpoints, iterator, start, lr_factor)
                    state = placement.put_state(host_state)
                    rollbacks[-1]["resumed_at"] = step
                    rows.clear()
                    if is_writer():
                        truncate_after(run_dir, step)
                    bar.n = step
                    bar.refresh()
                    rolled_back = True
                    break
                skipped += len(bad)
                logged = _mean(fetched)
                writer.write(end, "train", {"epoch": end / steps_per_epoch, **logged})
                bar.set_postfix({k: f"{logged[k]:.4f}" for k in _SHOWN if k in logged})
            if rolled_back:
                continue
            bar.update(count)
            evaluated = step % eval_every == 0 or step == total_steps
            stop = validate_and_save(step) if evaluated else False
            if stopping.triggered:
                break  # finished early: the test split is evaluated below
            if (callback.on_step(step) or stop) and step < total_steps:
                if not evaluated:  # an evaluation already saved this step
                    checkpoints.save(step, placement.host_state(state), iterator, config_dict)
                status = "stopped"
                break
    train_seconds = time.perf_counter() - started
    checkpoints.wait()
    final_state = placement.host_state(state)

    test = None
    if status == "finished":
        timed_steps = step - resumed_from - first_count
        # One global batch for XLA's cost analysis of the plain step.
        sample = data.splits["train"].batch(slice(config.data.batch_size))
        cost = training_cost(
            # XLA's count of one plain step on the global batch (on one device, the very
            # program the per-step loop compiled: traced and compiled once).
            jax.jit(step_fn if placement.axis_name is None else _step_fn(config, pieces, None)),
            placement.host_state(placement.put_state(pieces.state)),
            placement.put_batch(sample),
            model_config=config.model,
            optimizer_name=config.optimizer.name,
            input_shape=data.input_shape,
            num_outputs=data.num_outputs,
            num_params=count_params(final_state.params),
            step_seconds=(train_seconds - first_step_s) / timed_steps if timed_steps else None,
            train_seconds=train_seconds,
        )
        test = _finish(
            cost,
            config,
            run_dir,
            pieces,
            placement,
            checkpoints,
            eval_step,
            final_state,
            {
                "steps": step,
                "epochs": step / steps_per_epoch,
                "wall_time_s": train_seconds,
                "compile_s": first_step_s,
                "examples_per_s": _throughput(
                    timed_steps, config.data.batch_size, train_seconds - first_step_s
                ),
                "resumed_from": resumed_from or None,
                "early_stopped": stopping.report(),
                "skipped_nonfinite_steps": skipped,
                "learning_rate_reductions": reductions,
                "rollbacks": rollbacks,
                "parallel": {
                    "placement": placement.kind,
                    "devices": placement.width,
                    "processes": jax.process_count(),
                    "fused_epochs": fused,
                    "precision": config.train.precision,
                    "micro_batches": config.train.micro_batches,
                },
            },
        )
    return RunResult(status, step, total_steps, final_state, test, run_dir)


def _fetch_rows(placement, window) -> list[dict[str, float]]:
    """Device metrics (per-step dicts, or dicts stacked over a fused call's steps) fetched in
    one transfer and returned as one dict of floats per step."""
    fetched = [placement.host_metrics(metrics) for metrics, _ in window]
    rows: list[dict[str, float]] = []
    for metrics, (_, count) in zip(fetched, window, strict=True):
        if count is None:
            rows.append({key: float(value) for key, value in metrics.items()})
        else:
            rows.extend(
                {key: float(value[i]) for key, value in metrics.items()} for i in range(count)
            )
    return rows


class _NoWriter:
    """The metric writer of processes other than 0: they compute, process 0 writes."""

    def write(self, *args, **kwargs) -> None:
        pass

    def __enter__(self) -> _NoWriter:
        return self

    def __exit__(self, *exc) -> None:
        pass


def _finish(
    cost, config, run_dir, pieces, placement, checkpoints, eval_step, last_state, training
) -> dict:
    """Evaluate the best checkpoint on validation and test; write metrics.json, plots, report
    (process 0 writes; every process takes part in the evaluation)."""
    best_step = checkpoints.best_step()
    best_state = placement.host_state(
        placement.put_state(checkpoints.restore(best_step, pieces.state))
    )
    early = config.train.early_stopping
    if early is not None and not early.restore_best:
        best_step, best_state = training["steps"], last_state
    data, task = pieces.data, pieces.task
    batch = config.data.eval_batch_size
    validation = evaluate(eval_step, best_state, data.splits["validation"], batch, task)
    test = evaluate(eval_step, best_state, data.splits["test"], batch, task)
    model = pieces.model
    predict_step = placement.compile_eval(
        lambda state, inputs: apply_model(model, state, state.params, inputs, train=False)[0]
    )
    test_outputs = (
        predict(predict_step, best_state, data.splits["test"], batch)
        if task.name != "language_model"
        else None
    )
    fairness = None
    if pieces.groups is not None:
        fairness = fairness_audit(
            test_outputs,
            data.splits["test"].labels,
            pieces.groups["test"],
            predict(predict_step, best_state, data.splits["validation"], batch),
            data.splits["validation"].labels,
            pieces.groups["validation"],
            num_groups=count_groups(pieces.groups),
            constraint=config.fairness.constraint,
        )
    if not is_writer():
        return test
    if pieces.transfer is not None:  # LoRA: the best parameters with adapters merged
        pieces.transfer.export(run_dir, best_state.params)
    write_outputs(
        config,
        run_dir,
        data,
        num_params=count_params(best_state.params),
        validation=validation,
        test=test,
        training={**training, "best_step": best_step},
        monitor=f"validation {checkpoints.monitor} ({checkpoints.mode})",
        test_outputs=test_outputs,
        cost=cost,
        fairness=fairness,
    )
    return test


_SHOWN = ("loss", "accuracy", "mae", "bits_per_byte")  # progress-bar metrics, when logged


def _throughput(steps: int, batch_size: int, seconds: float) -> float | None:
    """Training examples per second after the first (compiling) step, evaluation included."""
    return steps * batch_size / seconds if steps > 0 and seconds > 0 else None


def _reduce_learning_rate(state, config, step: int, reductions: list) -> TrainState:
    """Scale the peak learning rate by ``config.factor`` (not below the floor); the change is
    in the state, so checkpoints and resume carry it."""
    peak = float(state.opt_state.hyperparams[PEAK])
    factor = max(config.factor, config.min_learning_rate / peak) if peak > 0 else 1.0
    if factor >= 1.0:
        return state
    reductions.append({"step": step, "peak_learning_rate": peak * factor})
    return state.replace(opt_state=scale_learning_rate(state.opt_state, factor))


def _mean(fetched: list[Mapping[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([m[key] for m in fetched])) for key in fetched[0]}


class NonFiniteError(RuntimeError):
    """Training met a NaN/inf loss or gradient and ``train.nonfinite`` is ``stop``."""


ROLLBACK_FACTOR = 0.5  # train.nonfinite: rollback halves the learning rate each time
MAX_ROLLBACKS = 3


def _roll_back(pieces, checkpoints, iterator, start, lr_factor: float) -> tuple[TrainState, int]:
    """The newest intact checkpoint (data position included), or the run's start, with the
    peak learning rate scaled by ``lr_factor`` relative to that state's own (a
    placement-free state)."""
    checkpoints.wait()
    found, state = checkpoints.restore_latest_good(pieces.state, iterator)
    if found is None:
        step, position = start
        iterator.set_state(position)
        state = pieces.state
    else:
        step = found
    return state.replace(opt_state=scale_learning_rate(state.opt_state, lr_factor)), step


def _check_finite(fetched: list[Mapping[str, Any]], step: int, config: Config, n: int) -> list[int]:
    """The window's skipped (non-finite) steps; with ``train.nonfinite: stop`` raise
    :class:`NonFiniteError` naming the first one and its batch. ``step`` is the window's last
    step; the stream's batch ``s - 1`` fed step ``s``."""
    first_step = step - len(fetched) + 1
    bad = [first_step + i for i, m in enumerate(fetched) if m["nonfinite"]]
    if bad and config.train.nonfinite == "stop":
        first = bad[0]
        batch = first - 1
        epoch, offset = divmod(batch * config.data.batch_size, n)
        raise NonFiniteError(
            f"non-finite loss or gradient at step {first} (batch {batch} of the training "
            f"stream: epoch {epoch}, examples {offset}..{offset + config.data.batch_size - 1} of "
            f"that epoch's order; {len(bad)} such step(s) in the last {len(fetched)}); the update "
            "was skipped and nothing after it was checkpointed. Lower the learning rate, clip "
            "gradients (optimizer.grad_clip_norm) or set train.nonfinite=skip or rollback"
        )
    return bad
