"""The verbs that read a finished run: ``eval``, ``generate`` and ``report``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxtrain.config import load_config
from jaxtrain.files import read_json
from jaxtrain.runner.checks import checked_data
from jaxtrain.runner.run_dirs import (
    CONFIG_FILE,
    RunError,
    existing_run,
    run_lock,
    stored_stats,
    write_result,
)


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """``jaxtrain eval``: re-evaluate the best checkpoint of ``run_dir`` on validation and test.

    Writes ``eval.json`` beside the run's other outputs and returns what it wrote.
    """
    run_dir = existing_run(run_dir)
    with run_lock(run_dir):
        return _evaluate_locked(run_dir)


def _evaluate_locked(run_dir: Path) -> dict[str, Any]:
    from jaxtrain.models import is_fitted
    from jaxtrain.train.evaluate import evaluate
    from jaxtrain.train.fit import FITTED_DIR, evaluate_fitted
    from jaxtrain.train.pieces import build_pieces
    from jaxtrain.train.post_run import eval_step_for

    config = load_config(run_dir / CONFIG_FILE)
    data = checked_data(config, run_dir / CONFIG_FILE, stored_stats(run_dir))
    if is_fitted(config.model):
        if not (run_dir / FITTED_DIR).is_dir():
            raise RunError(f"{run_dir / FITTED_DIR}: no fitted model to evaluate")
        result = evaluate_fitted(config, run_dir, data)
        write_result(run_dir, "eval.json", result)
        return result
    pieces = build_pieces(config, data, pretrained=False)
    step, state = _best_checkpoint(run_dir, config, pieces, "evaluate")
    eval_step = eval_step_for(pieces)
    batch, splits = config.data.eval_batch_size, pieces.data.splits
    result = {
        "step": step,
        "validation": evaluate(eval_step, state, splits["validation"], batch, pieces.task),
        "test": evaluate(eval_step, state, splits["test"], batch, pieces.task),
    }
    write_result(run_dir, "eval.json", result)
    return result


def report_run(run_dir: str | Path) -> Path:
    """``jaxtrain report``: re-run the analysis stage of a finished run (held-out analysis,
    fairness, cost, plots, the full ``metrics.json`` and ``report.md``) from the run
    directory alone; for a sweep, its members table, plots and report. Returns report.md."""
    run_dir = existing_run(run_dir)
    with run_lock(run_dir):
        return _report_locked(run_dir)


def _report_locked(run_dir: Path) -> Path:
    from jaxtrain.models import is_fitted
    from jaxtrain.train.pieces import build_pieces
    from jaxtrain.train.post_run import analyse_run, report_state

    config = load_config(run_dir / CONFIG_FILE)
    if config.sweep is not None and (run_dir / "members.json").is_file():
        from jaxtrain.sweep.results import write_results

        write_results(run_dir, config, read_json(run_dir / "members.json", "members.json"))
        return run_dir / "report.md"
    if (run_dir / "learning_curve.json").is_file():
        from jaxtrain.learning_curve import write_curve_report

        write_curve_report(run_dir, config.name, read_json(run_dir / "learning_curve.json"))
        return run_dir / "report.md"
    if not (run_dir / "metrics.json").is_file():
        raise RunError(f"{run_dir}: the run has not finished (no metrics.json); resume it first")
    data = checked_data(config, run_dir / CONFIG_FILE, stored_stats(run_dir))
    if is_fitted(config.model):
        from jaxtrain.train.fit import report_fitted

        report_fitted(config, run_dir, data)
    elif config.federated is not None and "algorithm" in read_json(run_dir / "metrics.json"):
        from jaxtrain.federated.runner import report_federated

        report_federated(config, run_dir, data)
    else:
        pieces = build_pieces(config, data, pretrained=False)
        analyse_run(config, run_dir, pieces, report_state(config, run_dir, pieces))
    return run_dir / "report.md"


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
    import jax

    from jaxtrain.models import generate
    from jaxtrain.train.pieces import build_pieces

    run_dir = existing_run(run_dir)
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
    data = checked_data(config, run_dir / CONFIG_FILE, stored_stats(run_dir))
    pieces = build_pieces(config, data, pretrained=False)
    _, state = _best_checkpoint(run_dir, config, pieces, "generate from")
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


def _best_checkpoint(run_dir: Path, config, pieces, purpose: str):
    """``(step, state)`` of the run's best checkpoint; a RunError when there is none."""
    with pieces.checkpoints(run_dir / "checkpoints", config) as checkpoints:
        step = checkpoints.best_step()
        if step is None:
            raise RunError(f"{run_dir / 'checkpoints'}: no checkpoint to {purpose}")
        return step, checkpoints.restore(step, pieces.state)
