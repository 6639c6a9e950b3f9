"""After the last step: the final evaluation, then the analysis stage.

:func:`final_evaluation` (always, every process) evaluates the best checkpoint on validation
and test and writes the core ``metrics.json`` (what was trained, how it was chosen, how it
scored, what training measured). :func:`analyse_run` is a separate stage: held-out analysis
with bootstrap intervals, ROC/ECE, the fairness audit, the cost account, plots and
``report.md``. A run calls it at its end; ``jaxtrain report RUN_DIR`` re-runs it from the
run directory alone; tests may skip it (``report=False``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import jax

from jaxtrain.config import Config
from jaxtrain.distributed import is_writer
from jaxtrain.files import read_json
from jaxtrain.logging.outputs import SUMMARY_FILE, RunOutputs
from jaxtrain.train.costs import training_cost
from jaxtrain.train.evaluate import evaluate, predict
from jaxtrain.train.fairness_audit import count_groups, fairness_audit
from jaxtrain.train.outputs import write_outputs
from jaxtrain.train.parallel import Placement, build_placement
from jaxtrain.train.pieces import Pieces, build_step
from jaxtrain.train.state import count_params
from jaxtrain.train.step import apply_model, make_eval_step


def final_evaluation(
    config: Config,
    run_dir: Path,
    pieces: Pieces,
    placement: Placement,
    checkpoints,
    eval_step,
    last_state,
    training: dict[str, Any],
    outputs: RunOutputs,
) -> tuple[Any, dict[str, Any]]:
    """Evaluate the best checkpoint (or, with ``early_stopping.restore_best: false``, the last
    state) on validation and test, export LoRA-merged weights, write the core
    ``metrics.json``; returns ``(best_state, summary)`` (every process takes part)."""
    best_step = checkpoints.best_step()
    best_state = placement.host_state(
        placement.put_state(checkpoints.restore(best_step, pieces.state))
    )
    early = config.train.early_stopping
    if early is not None and not early.restore_best:
        best_step, best_state = training["steps"], last_state
    batch, data = config.data.eval_batch_size, pieces.data
    summary = {
        "name": config.name,
        "model": config.model.name,
        "task": data.task,
        "best_step": best_step,
        "monitor": f"validation {checkpoints.monitor} ({checkpoints.mode})",
        "validation": evaluate(
            eval_step, best_state, data.splits["validation"], batch, pieces.task
        ),
        "test": evaluate(eval_step, best_state, data.splits["test"], batch, pieces.task),
        "training": {**training, "best_step": best_step},
    }
    if pieces.privacy is not None:  # train.dp: what the whole run spent
        report = pieces.privacy.report(training["steps"])
        summary["privacy"] = {k: v for k, v in report.items() if k != "lines"}
    if is_writer() and pieces.transfer is not None:  # LoRA: the best parameters, merged
        pieces.transfer.export(run_dir, best_state.params)
    outputs.summary(summary)
    return best_state, summary


def analyse_run(
    config: Config,
    run_dir: Path,
    pieces: Pieces,
    state,
    *,
    placement: Placement | None = None,
    step_fn=None,
    outputs: RunOutputs | None = None,
    with_cost: bool = True,
    sections: dict[str, list[str]] | None = None,
    curves: tuple[str, ...] = ("loss", "accuracy"),
    core: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The analysis stage over the run's core ``metrics.json`` and its evaluated ``state``:
    test outputs, analysis, fairness, cost, plots, the full ``metrics.json`` and
    ``report.md``. ``step_fn`` (the run's pure step, for XLA's FLOP count) and ``placement``
    default to the plain one-device step. A verb adds report ``sections`` and the logged
    ``curves`` to plot; entries of the core summary other than the standard ones (a federated
    run's algorithm, partition, privacy) are kept. ``core`` is that summary when the caller
    has it (every process of a multi-process run must pass it: only process 0 writes the
    file). Returns the full summary."""
    own = outputs is None  # ``jaxtrain report``: this stage's own writer, closed at its end
    outputs = outputs or RunOutputs(run_dir, enabled=is_writer(), config=config)
    placement = placement or build_placement("none")
    core = core or read_json(run_dir / SUMMARY_FILE, "metrics.json")
    data, task, batch = pieces.data, pieces.task, config.data.eval_batch_size
    model = pieces.model
    predict_step = placement.compile_eval(
        lambda state, inputs: apply_model(model, state, state.params, inputs, train=False)[0]
    )
    test_outputs = None
    if task.name != "language_model":
        test_outputs = predict(predict_step, state, data.splits["test"], batch)
    fairness = None
    if pieces.groups is not None:
        fairness = fairness_audit(
            test_outputs,
            data.splits["test"].labels,
            pieces.groups["test"],
            predict(predict_step, state, data.splits["validation"], batch),
            data.splits["validation"].labels,
            pieces.groups["validation"],
            num_groups=count_groups(pieces.groups),
            constraint=config.fairness.constraint,
        )
    training = core["training"]
    cost = _cost(config, pieces, placement, step_fn, training) if with_cost else None
    if not is_writer():
        return core
    extra = {k: v for k, v in core.items() if k not in _CORE}
    if pieces.privacy is not None:
        sections = {**(sections or {}), "Privacy (DP-SGD)": pieces.privacy.report(
            training["steps"])["lines"]}  # fmt: skip
    with outputs if own else contextlib.nullcontext():  # the caller closes its own
        return write_outputs(
            config,
            run_dir,
            data,
            num_params=count_params(state.params),
            validation=core["validation"],
            test=core["test"],
            training=training,
            monitor=core["monitor"],
            test_outputs=test_outputs,
            cost=cost,
            fairness=fairness,
            outputs=outputs,
            extra=extra,
            sections=sections,
            curves=curves,
        )


_CORE = ("name", "model", "task", "best_step", "monitor", "validation", "test", "training",
         "baselines", "analysis", "diagnosis", "cost", "fairness")  # fmt: skip


def _cost(config: Config, pieces: Pieces, placement: Placement, step_fn, training) -> dict:
    """XLA's count of one plain step on the global batch (on one device: the very program the
    per-step loop compiled, when the run passes its own step), with the run's timing."""
    if step_fn is None or placement.axis_name is not None:
        step_fn = build_step(config, pieces)
    sample = pieces.data.splits["train"].batch(slice(config.data.batch_size))
    data = pieces.data
    return training_cost(
        jax.jit(step_fn),
        placement.host_state(placement.put_state(pieces.state)),
        placement.put_batch(sample),
        model_config=config.model,
        optimizer_name=config.optimizer.name,
        input_shape=data.input_shape,
        num_outputs=data.num_outputs,
        num_params=count_params(pieces.state.params),
        step_seconds=training.get("step_time_s"),
        train_seconds=training.get("wall_time_s") or 0.0,
    )


def report_state(config: Config, run_dir: Path, pieces: Pieces):
    """The state :func:`analyse_run` evaluates when re-run from a directory: the step the core
    ``metrics.json`` names as evaluated (the best checkpoint, or the last with early stopping
    that does not restore the best)."""
    core = read_json(run_dir / SUMMARY_FILE, "metrics.json")
    checkpoints = pieces.checkpoints(run_dir / "checkpoints", config)
    try:
        step = core.get("best_step") or checkpoints.best_step()
        if step not in checkpoints.all_steps():
            step = checkpoints.latest_step()
        return checkpoints.restore(step, pieces.state)
    finally:
        checkpoints.close()


def eval_step_for(pieces: Pieces, placement: Placement | None = None):
    """The compiled evaluation step of ``pieces`` for ``placement`` (default one device)."""
    placement = placement or build_placement("none")
    return placement.compile_eval(make_eval_step(pieces.model, pieces.task))
