"""The host loop of a train run: ``train_and_evaluate(config, run_dir)``.

Thin on purpose: the arithmetic is the pure step (:mod:`jaxtrain.train.step`), moved forward
by :mod:`jaxtrain.train.advance`; the loop is :func:`jaxtrain.train.periodic.run_periodic`
with the run's periodic actions (log every ``train.log_every`` steps, evaluate and checkpoint
every ``train.eval_every``, early stopping, the plateau schedule and the non-finite policy);
what happens after the last step is :mod:`jaxtrain.train.post_run`.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from jaxtrain.config import Config, config_to_dict
from jaxtrain.data import PreparedData
from jaxtrain.distributed import is_writer
from jaxtrain.files import write_json
from jaxtrain.logging import truncate_after
from jaxtrain.logging.outputs import RunOutputs
from jaxtrain.logging.progress import Progress
from jaxtrain.train.advance import make_advance, training_stream
from jaxtrain.train.callbacks import Callback, EarlyStopping, PlateauSchedule, chain
from jaxtrain.train.evaluate import evaluate, scalars
from jaxtrain.train.extend import from_stages
from jaxtrain.train.optim import PEAK, scale_learning_rate
from jaxtrain.train.parallel import build_placement
from jaxtrain.train.periodic import Every, Halt, Jump, run_periodic
from jaxtrain.train.pieces import build_pieces
from jaxtrain.train.post_run import analyse_run, eval_step_for, final_evaluation
from jaxtrain.train.state import TrainState
from jaxtrain.train.train_log import NonFiniteError, TrainLog
from jaxtrain.transfer import write_transfer_report

DATA_STATS_FILE = "data_stats.json"  # statistics fitted on the training split, reused later
ROLLBACK_FACTOR = 0.5  # train.nonfinite: rollback halves the learning rate each time
MAX_ROLLBACKS = 3

__all__ = ["DATA_STATS_FILE", "NonFiniteError", "RunResult", "build_pieces", "train_and_evaluate"]


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


def train_and_evaluate(
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    data: PreparedData | None = None,
    callbacks: tuple[Callback, ...] = (),
    progress: bool = True,
    report: bool = True,
    stages: Sequence[dict] = (),
    total_steps: int | None = None,
) -> RunResult:
    """Train ``config`` in ``run_dir`` (which must exist), evaluate, checkpoint, report.

    Validation runs every ``train.eval_every`` steps (default: once per epoch) and at the end;
    each validation is a checkpoint ranked by ``train.checkpoint.monitor``. When all steps are
    done the best checkpoint is evaluated on the test split and ``metrics.json`` written; with
    ``report`` the analysis stage follows (plots, ``report.md``; ``jaxtrain report`` can run
    it later). With ``resume`` the latest intact checkpoint in ``run_dir`` is restored (state
    and data position) and training continues exactly where it stopped. ``stages``: the
    run's ``stages.json`` records when it was extended (the schedule then spans each stage,
    see :mod:`jaxtrain.train.extend`). ``total_steps``: train exactly that many steps (a
    learning curve's fixed budget; ``train.epochs`` must cover them) instead of
    ``train.epochs`` full passes.
    """
    run_dir = Path(run_dir)
    first_stage, extensions = from_stages(stages)
    pieces = build_pieces(
        config,
        data,
        pretrained=not resume,
        steps=first_stage or total_steps,
        extensions=extensions,
    )
    if total_steps is not None:
        if total_steps > pieces.total_steps:
            raise ValueError(f"total_steps={total_steps} is more than train.epochs cover")
        pieces = dataclasses.replace(pieces, total_steps=total_steps)
    placement = build_placement(config.train.parallel, pieces)
    placement.check_batch(config.data.batch_size, "data.batch_size")
    placement.check_batch(config.data.eval_batch_size, "data.eval_batch_size")
    iterator = iter(training_stream(config, pieces, placement))
    if is_writer() and not resume:
        write_json(run_dir / DATA_STATS_FILE, pieces.data.stats())
        if pieces.transfer_report is not None:
            write_transfer_report(run_dir, pieces.transfer_report)
    checkpoints = pieces.checkpoints(run_dir / "checkpoints", config)
    try:
        return _train(config, run_dir, pieces, placement, checkpoints, iterator, resume,
                      chain(*callbacks), progress, report)  # fmt: skip
    finally:
        checkpoints.close()  # also on errors, so no save thread outlives the call
        getattr(iterator, "close", lambda: None)()  # prefetch thread, grain workers


def _train(config, run_dir, pieces, placement, checkpoints, iterator, resume, callback,
           progress, report) -> RunResult:  # fmt: skip
    """The loop proper (see :func:`train_and_evaluate`)."""
    data, total = pieces.data, pieces.total_steps
    train_size = len(data.splits["train"])
    eval_every = config.train.eval_every or max(1, int(train_size / config.data.batch_size))
    config_dict = config_to_dict(config)
    advance, step_fn = make_advance(config, pieces, placement, iterator)
    eval_step = eval_step_for(pieces, placement)
    stopping = EarlyStopping.from_config(config.train.early_stopping, checkpoints)
    plateau = config.train.reduce_on_plateau and PlateauSchedule(
        config.train.reduce_on_plateau,
        checkpoints.monitor,
        checkpoints.mode,
        config.optimizer.learning_rate,
    )
    epsilon_at = pieces.privacy.curve(eval_every) if pieces.privacy else {}
    host_state, step = pieces.state, 0
    if resume:
        found, host_state = checkpoints.restore_latest_good(host_state, iterator)
        step = found or 0
        if found is None and is_writer():
            print(f"jaxtrain: warning: {run_dir}: no checkpoint yet; training restarts from "
                  "step 0 and earlier log lines are replaced", file=sys.stderr)  # fmt: skip
        if is_writer():
            truncate_after(run_dir, step)  # log lines written after the checkpoint are redone
    resumed_from = step
    start = (step, iterator.get_state(), host_state)  # where a rollback with no checkpoint goes
    record = {"reductions": [], "rollbacks": [], "lr_factor": 1.0, "first_call_s": 0.0,
              "first_count": 0, "saved": None, "state": None}  # fmt: skip
    outputs = RunOutputs(
        run_dir, enabled=is_writer(), purge_step=step + 1 if step else None, config=config
    )
    bar = Progress(total, initial=step, desc=config.name, enabled=progress and is_writer(),
                   examples_per_step=config.data.batch_size,
                   steps_per_epoch=train_size / config.data.batch_size)  # fmt: skip

    def write(at: int, split: str, metrics) -> None:
        outputs.log(at, split, metrics)
        bar.record(at, split, metrics)

    def save(at: int, state, metrics=None) -> None:
        log.flush(at)  # every step before a checkpoint is checked first
        checkpoints.save(at, placement.host_state(state), iterator, config_dict, metrics)
        record["saved"] = at

    def validate_and_save(at: int, state):
        current = placement.host_state(state)
        metrics = evaluate(
            eval_step, current, data.splits["validation"], config.data.eval_batch_size, pieces.task
        )
        spent = {"epsilon": epsilon_at[at]} if at in epsilon_at else {}  # train.dp
        write(at, "validation", {**scalars(metrics), **spent})
        factor = plateau.update(metrics) if plateau else 1.0
        if factor < 1.0:  # before saving, so resume keeps the new rate
            peak = float(current.opt_state.hyperparams[PEAK]) * factor
            record["reductions"].append({"step": at, "peak_learning_rate": peak})
            current = current.replace(opt_state=scale_learning_rate(current.opt_state, factor))
            state = placement.put_state(current)
        save(at, state, scalars(metrics))
        record["state"] = state  # what the loop continues (or ends) with
        stopping.update(at, metrics)
        if stopping.triggered:
            raise Halt("finished")  # early: the test split is still evaluated below
        if callback.on_eval(at, metrics) and at < total:
            raise Halt("stopped")
        return state

    def roll_back(first_bad: int, at: int) -> None:
        record["lr_factor"] *= ROLLBACK_FACTOR
        record["rollbacks"].append({"at_step": at, "first_bad_step": first_bad})
        if len(record["rollbacks"]) > MAX_ROLLBACKS:
            raise NonFiniteError(
                f"non-finite loss or gradient again at step {first_bad} after {MAX_ROLLBACKS} "
                "rollbacks with a lower learning rate; giving up"
            )
        checkpoints.wait()
        found, state = checkpoints.restore_latest_good(pieces.state, iterator)
        if found is None:
            found, position, state = start
            iterator.set_state(position)
        state = state.replace(opt_state=scale_learning_rate(state.opt_state, record["lr_factor"]))
        record["rollbacks"][-1]["resumed_at"] = found
        log.reset(found)
        if is_writer():
            truncate_after(run_dir, found)
        raise Jump(placement.put_state(state), found)

    def timed_advance(state, count):
        if record["first_count"]:
            return advance(state, count)
        state, metrics = advance(state, count)  # compilation happens here: kept out of rates
        jax.block_until_ready(metrics)
        record["first_call_s"], record["first_count"] = time.perf_counter() - started, count
        return state, metrics

    log = TrainLog(config, write, placement.host_metrics, train_size, total, roll_back)
    log.reset(step)
    started = time.perf_counter()
    with outputs, bar:
        outcome = run_periodic(
            placement.put_state(host_state),
            step,
            total,
            timed_advance,
            [Every(eval_every, validate_and_save)],
            chunked=config.train.fused_epochs,
            sink=log,
            should_stop=callback.on_step,
            progress=bar.update,
        )
        state = record["state"] if record["saved"] == outcome.step else outcome.state
        if outcome.status == "stopped" and record["saved"] != outcome.step:
            save(outcome.step, state)
        train_seconds = time.perf_counter() - started
        checkpoints.wait()
        final_state = placement.host_state(state)
        if outcome.status == "stopped":
            outputs.status = "KILLED"  # the tracked run is resumable, not finished
            return RunResult("stopped", outcome.step, total, final_state, None, run_dir)
        timed = outcome.step - resumed_from - record["first_count"]
        step_seconds = (train_seconds - record["first_call_s"]) / timed if timed > 0 else None
        training = {
            "steps": outcome.step,
            "epochs": outcome.step / (train_size / config.data.batch_size),
            "wall_time_s": train_seconds,
            "compile_s": record["first_call_s"],
            "step_time_s": step_seconds,
            "examples_per_s": config.data.batch_size / step_seconds if step_seconds else None,
            "resumed_from": resumed_from or None,
            "early_stopped": stopping.report(),
            "skipped_nonfinite_steps": log.skipped,
            "learning_rate_reductions": record["reductions"],
            "rollbacks": record["rollbacks"],
            "parallel": {
                **placement.describe(),
                "processes": jax.process_count(),
                "fused_epochs": config.train.fused_epochs,
                "precision": config.train.precision,
                "micro_batches": config.train.micro_batches,
            },
        }
        best_state, summary = final_evaluation(
            config, run_dir, pieces, placement, checkpoints, eval_step, final_state, training,
            outputs,
        )  # fmt: skip
        if report:
            analyse_run(config, run_dir, pieces, best_state, placement=placement,
                        step_fn=step_fn, outputs=outputs, core=summary)  # fmt: skip
    return RunResult("finished", outcome.step, total, final_state, summary["test"], run_dir)
