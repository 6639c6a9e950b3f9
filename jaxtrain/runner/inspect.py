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

SPLITS = ("train", "validation", "test")
MAX_NEW_TOKENS = 1 << 20  # a sanity cap: generation is one token at a time


def evaluate_run(
    run_dir: str | Path,
    *,
    splits: tuple[str, ...] | None = None,
    checkpoint: str = "best",
    data_path: str | Path | None = None,
    predictions: str | Path | None = None,
) -> dict[str, Any]:
    """``jaxtrain eval``: evaluate a checkpoint of ``run_dir``.

    ``splits``: any of train, validation, test (default validation and test); ``checkpoint``:
    ``best`` (by the run's monitor), ``latest`` or a step number; ``data_path``: a table with
    the run's columns, scored through the run's fitted preprocessing (``data_stats.json``,
    see :mod:`jaxtrain.runner.score`) instead of a split; ``predictions``: a CSV with one row
    per example of the (last) evaluated split or file (its source row, the label and the
    prediction, and each class's probability). Writes ``eval.json`` (the default
    evaluation) or ``eval_<what>_<checkpoint>.json`` beside the run's other outputs and
    returns what it wrote: ``{"step", "checkpoint", <split or "data">: metrics, ...}``.
    """
    run_dir = existing_run(run_dir)
    if splits is not None and data_path is not None:
        raise RunError("--split and --data: give one (--data scores a file instead of a split)")
    bad = [s for s in splits or () if s not in SPLITS]
    if bad:
        raise RunError(f"--split: {bad[0]!r} is not one of {', '.join(SPLITS)}")
    if checkpoint not in ("best", "latest") and not str(checkpoint).isdigit():
        raise RunError(f"--checkpoint: {checkpoint!r}: expected best, latest or a step number")
    with run_lock(run_dir):
        return _evaluate_locked(run_dir, splits, str(checkpoint), data_path, predictions)


def _evaluate_locked(run_dir: Path, splits, checkpoint, data_path, predictions) -> dict[str, Any]:
    from jaxtrain.config.verbs import check_verb
    from jaxtrain.logging.outputs import RunOutputs
    from jaxtrain.models import is_fitted
    from jaxtrain.train.evaluate import evaluate, scalars
    from jaxtrain.train.fit import FITTED_DIR, evaluate_fitted
    from jaxtrain.train.pieces import build_pieces
    from jaxtrain.train.post_run import eval_step_for

    config = load_config(run_dir / CONFIG_FILE)
    check_verb(config, "eval", run_dir / CONFIG_FILE)
    stats = stored_stats(run_dir)
    data = checked_data(config, run_dir / CONFIG_FILE, stats)
    default = splits is None and data_path is None and checkpoint == "best"
    if is_fitted(config.model):
        if not (run_dir / FITTED_DIR).is_dir():
            raise RunError(f"{run_dir / FITTED_DIR}: no fitted model to evaluate")
        if not default or predictions is not None:
            raise RunError(
                f"{run_dir}: {config.model.name} is a fitted model: jaxtrain eval re-evaluates "
                "it on validation and test only (no --split, --checkpoint, --data or "
                "--predictions yet)"
            )
        result = evaluate_fitted(config, run_dir, data)
        write_result(run_dir, "eval.json", result)
        return result
    pieces = build_pieces(config, data, pretrained=False)
    step, state = _checkpoint(run_dir, config, pieces, checkpoint, "evaluate")
    eval_step = eval_step_for(pieces)
    batch = config.data.eval_batch_size
    result: dict[str, Any] = {"step": step, "checkpoint": checkpoint}
    evaluated: dict[str, Any] = {}  # name -> (split, source rows)
    if data_path is not None:
        from jaxtrain.runner.score import score_split

        split, labelled = score_split(config, stats or {}, data_path)
        result["data"] = str(data_path)
        if labelled:
            result["metrics"] = evaluate(eval_step, state, split, batch, pieces.task)
        evaluated["data"] = (split, np.arange(len(split)), labelled)
        name = f"eval_data_{Path(data_path).stem}_{checkpoint}.json"
    else:
        chosen = splits or ("validation", "test")
        for split_name in chosen:
            split = data.splits[split_name]
            result[split_name] = evaluate(eval_step, state, split, batch, pieces.task)
            rows = data.rows.get(split_name, np.arange(len(split)))
            evaluated[split_name] = (split, rows, True)
        name = "eval.json" if default else f"eval_{'_'.join(chosen)}_{checkpoint}.json"
    if predictions is not None:
        what, (split, rows, labelled) = list(evaluated.items())[-1]
        write_predictions(predictions, pieces, state, split, rows, labelled, batch)
        result["predictions"] = {"file": str(predictions), "split": what}
    write_result(run_dir, name, result)
    with RunOutputs(run_dir, config=config) as outputs:  # the tracker, when one is configured
        for key in ("train", "validation", "test", "metrics"):
            if key in result:
                prefix = "eval_data" if key == "metrics" else f"eval_{key}"
                outputs.metrics(step, prefix, scalars(result[key]))
    return result


def write_predictions(path, pieces, state, split, rows, labelled: bool, batch: int) -> Path:
    """One CSV row per example: ``row`` (its source row), ``label`` and ``prediction`` (class
    names, or targets in the data's units) and, for classes, ``p_<class>`` probabilities."""
    import csv

    import jax

    from jaxtrain.train.evaluate import predict
    from jaxtrain.train.step import apply_model

    task, data = pieces.task, pieces.data
    if task.name == "language_model":
        raise RunError("--predictions: per-example predictions are for classes and targets, "
                       "not a language model's bytes")  # fmt: skip
    model = pieces.model
    step = jax.jit(lambda s, x: apply_model(model, s, s.params, x, train=False)[0])
    outputs = predict(step, state, split, batch)
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise RunError(f"--predictions: {path.parent} does not exist")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if data.task == "classification":
            logits = outputs.astype(np.float64)  # softmax in float64 (JAX's would be f32)
            exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probs = exp / exp.sum(axis=-1, keepdims=True)
            names = list(data.class_names)
            writer.writerow(["row", "label", "prediction", *(f"p_{n}" for n in names)])
            for i in range(len(split)):
                label = names[int(split.labels[i])] if labelled else ""
                cells = [int(rows[i]), label, names[int(np.argmax(outputs[i]))]]
                writer.writerow(cells + [f"{p:.9g}" for p in probs[i]])
        else:
            scaler = data.target_normalizer
            values = outputs.reshape(len(split), -1) * scaler.scale + scaler.shift
            targets = split.labels.reshape(len(split), -1) * scaler.scale + scaler.shift
            columns = values.shape[1]
            suffix = [""] if columns == 1 else [f"_{j}" for j in range(columns)]
            header = ["row", *(f"label{s}" for s in suffix), *(f"prediction{s}" for s in suffix)]
            writer.writerow(header)
            for i in range(len(split)):
                label = [f"{t:.9g}" for t in targets[i]] if labelled else [""] * columns
                writer.writerow([int(rows[i]), *label, *(f"{v:.9g}" for v in values[i])])
    return path


def report_run(run_dir: str | Path) -> Path:
    """``jaxtrain report``: re-run the analysis stage of a finished run (held-out analysis,
    fairness, cost, plots, the full ``metrics.json`` and ``report.md``) from the run
    directory alone; for a sweep, its members table, plots and report. Returns report.md."""
    run_dir = existing_run(run_dir)
    with run_lock(run_dir):
        return _report_locked(run_dir)


def _report_locked(run_dir: Path) -> Path:
    from jaxtrain.config.verbs import check_verb
    from jaxtrain.logging.outputs import RunOutputs
    from jaxtrain.models import is_fitted
    from jaxtrain.train.pieces import build_pieces
    from jaxtrain.train.post_run import analyse_run, report_state

    config = load_config(run_dir / CONFIG_FILE)
    check_verb(config, "report", run_dir / CONFIG_FILE)  # a tracker it can log to
    if config.sweep is not None and (run_dir / "members.json").is_file():
        from jaxtrain.sweep.results import write_results

        write_results(run_dir, config, read_json(run_dir / "members.json", "members.json"))
        return run_dir / "report.md"
    if (run_dir / "learning_curve.json").is_file():
        from jaxtrain.learning_curve import write_curve_report

        curve = read_json(run_dir / "learning_curve.json", "learning_curve.json")
        with RunOutputs(run_dir, config=config) as outputs:
            write_curve_report(run_dir, config, curve, outputs)
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
    own are shown as U+FFFD). Prompt and output may be longer than the model's context
    (``data.sequence_length``): the window then slides (see
    :func:`jaxtrain.models.transformer.generate`). Raises RunError for a run that is not a
    language model and for an empty prompt.
    """
    import jax

    from jaxtrain.models import generate
    from jaxtrain.train.pieces import build_pieces

    run_dir = existing_run(run_dir)
    config = load_config(run_dir / CONFIG_FILE)
    if config.model.name != "transformer_lm":
        raise RunError(f"{run_dir}: model.name is {config.model.name}, not transformer_lm")
    tokens = np.frombuffer(prompt.encode("utf-8", errors="surrogateescape"), np.uint8)
    tokens = tokens.astype(np.int32)
    if len(tokens) == 0:
        raise RunError(
            "--prompt is empty: give at least one character to continue (the byte model has "
            "no start-of-text token to begin from)"
        )
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise RunError(f"--max-new-tokens: {max_new_tokens} is outside 1..{MAX_NEW_TOKENS:,}")
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
    return _checkpoint(run_dir, config, pieces, "best", purpose)


def _checkpoint(run_dir: Path, config, pieces, which: str, purpose: str):
    """``(step, state)`` of the checkpoint ``which`` (best, latest or a step number)."""
    with pieces.checkpoints(run_dir / "checkpoints", config) as checkpoints:
        steps = sorted(checkpoints.all_steps())
        if which == "best":
            step = checkpoints.best_step()
        elif which == "latest":
            step = checkpoints.latest_step()
        else:
            step = int(which)
            if step not in steps:
                raise RunError(
                    f"--checkpoint: {run_dir / 'checkpoints'} has no step {step} (kept: "
                    f"{', '.join(map(str, steps)) or 'none'}; train.checkpoint.keep decides)"
                )
        if step is None:
            raise RunError(f"{run_dir / 'checkpoints'}: no checkpoint to {purpose}")
        return step, checkpoints.restore(step, pieces.state)
