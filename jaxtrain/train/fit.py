"""Families fitted without the gradient loop: decision trees, random forests, least squares.

Each fit is one pure, jitted function of the training arrays; the fitted pytree is saved
with Orbax in ``checkpoints/fitted`` and evaluated by the same task sums as a trained model,
so ``metrics.json`` and ``report.md`` read exactly like a gradient run's.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxtrain.config import Config
from jaxtrain.data import PreparedData
from jaxtrain.files import read_json
from jaxtrain.models import Linear, fit_least_squares
from jaxtrain.models.trees import fit_forest, fit_tree, predict_forest, predict_tree
from jaxtrain.train.evaluate import evaluate, predict
from jaxtrain.train.outputs import write_outputs
from jaxtrain.train.tasks import Task, task_for

FITTED_DIR = "checkpoints/fitted"
_LOG_FLOOR = 1e-7  # probabilities of 0 become this in the log loss (scikit-learn clips too)


@dataclass(frozen=True)
class FittedFamily:
    """``fit(x, y, key) -> model pytree`` and ``outputs(model, x) -> task outputs``, both pure
    (x: f32[n, d] flattened examples); outputs are logits for classes, values for targets."""

    fit: Callable[[jax.Array, jax.Array, jax.Array], Any]
    outputs: Callable[[Any, jax.Array], jax.Array]


def fitted_family(config: Config, data: PreparedData) -> FittedFamily:
    """The fit and output functions for ``config.model`` on ``data``."""
    model = config.model
    task = data.task
    if model.name == "linear":
        n = len(data.splits["train"])
        # mean squared error + l2 * 0.5 ||w||^2, times n, is Ridge with alpha = n * l2 / 2.
        alpha = n * model.l2 / 2

        def fit_linear(x, y, key):
            del key  # the least-squares solution is unique
            return {"dense": fit_least_squares(x, y, alpha)}

        layer = Linear(data.num_outputs)
        return FittedFamily(fit_linear, lambda p, x: layer.apply({"params": p}, x))

    settings = dict(
        task=task,
        num_classes=data.num_classes if task == "classification" else None,
        criterion=model.criterion,
        max_depth=model.max_depth,
        min_samples_split=model.min_samples_split,
        min_samples_leaf=model.min_samples_leaf,
        max_features=model.max_features,
    )
    if model.name == "random_forest":
        fit = functools.partial(
            fit_forest,
            n_estimators=model.n_estimators,
            bootstrap=model.bootstrap,
            trees_per_step=_trees_per_step(),
            **settings,
        )
        predict = predict_forest
    else:
        fit, predict = functools.partial(fit_tree, **settings), predict_tree

    def outputs(tree, x):
        predicted = predict(tree, x)
        if task == "classification":
            return jnp.log(jnp.maximum(predicted, _LOG_FLOOR))
        return predicted

    return FittedFamily(lambda x, y, key: fit(x, y, key), outputs)


def _trees_per_step() -> int | None:
    """Trees fitted per vmapped step: all at once on accelerators; one at a time (lax.map) on
    CPU, where the full vmap measured 2.5-3x slower (scripts/bench_trees.py). The trees are
    the same either way (tests/test_families.py)."""
    return 1 if jax.default_backend() == "cpu" else None


def _flat(inputs: np.ndarray) -> jax.Array:
    return jnp.asarray(inputs.reshape(len(inputs), -1), jnp.float32)


def _eval_step(family: FittedFamily, task: Task) -> Callable:
    def eval_step(fitted, batch):
        x = batch["inputs"].reshape(batch["inputs"].shape[0], -1)
        return task.eval_sums(family.outputs(fitted, x), batch["labels"], batch["mask"])

    return jax.jit(eval_step)


def _abstract(family: FittedFamily, data: PreparedData, seed: int) -> Any:
    train = data.splits["train"]
    return jax.eval_shape(
        family.fit, _flat(train.inputs), jnp.asarray(train.labels), jax.random.key(seed)
    )


def fit_and_evaluate(config: Config, run_dir: str | Path, data: PreparedData) -> dict[str, Any]:
    """Fit ``config.model`` on the training split, evaluate validation and test, save the
    fitted arrays, write ``metrics.json``/``report.md``; returns the test metrics."""
    run_dir = Path(run_dir)
    family = fitted_family(config, data)
    train = data.splits["train"]
    x, y = _flat(train.inputs), jnp.asarray(train.labels)
    fit = jax.jit(family.fit)
    started = time.perf_counter()
    compiled = fit.lower(x, y, jax.random.key(config.seed)).compile()
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    fitted = jax.block_until_ready(compiled(x, y, jax.random.key(config.seed)))
    fit_s = time.perf_counter() - started
    save_fitted(run_dir, fitted)
    training = {
        "steps": 1,
        "compile_s": compile_s,
        "fit_s": fit_s,
        "wall_time_s": compile_s + fit_s,
        "examples_per_s": len(train) / fit_s if fit_s > 0 else None,
        "best_step": None,
    }
    return _write(config, run_dir, data, family, fitted, training)


def report_fitted(config: Config, run_dir: Path, data: PreparedData) -> dict[str, Any]:
    """The analysis stage of a fitted run, re-run from its directory (``jaxtrain report``):
    the saved arrays evaluated again, with the timing the fit recorded in metrics.json."""
    family = fitted_family(config, data)
    fitted = _restore_fitted(family, config, run_dir, data)
    training = read_json(Path(run_dir) / "metrics.json", "metrics.json")["training"]
    return _write(config, run_dir, data, family, fitted, training)


def _write(config, run_dir, data, family, fitted, training) -> dict[str, Any]:
    """Validation and test metrics, outputs and report of a fitted pytree."""
    task = task_for(data)
    eval_step = _eval_step(family, task)
    batch = config.data.eval_batch_size
    validation = evaluate(eval_step, fitted, data.splits["validation"], batch, task)
    test = evaluate(eval_step, fitted, data.splits["test"], batch, task)
    outputs = jax.jit(
        lambda fitted, inputs: family.outputs(fitted, inputs.reshape(len(inputs), -1))
    )
    write_outputs(
        config,
        Path(run_dir),
        data,
        num_params=int(sum(np.size(leaf) for leaf in jax.tree.leaves(fitted))),
        validation=validation,
        test=test,
        training=training,
        monitor="fitted once (no checkpoint selection)",
        test_outputs=predict(outputs, fitted, data.splits["test"], batch),
    )
    return test


def save_fitted(run_dir: Path, fitted: Any) -> None:
    """Write the fitted pytree to ``run_dir/checkpoints/fitted`` (Orbax, no pickle)."""
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save((run_dir / FITTED_DIR).absolute(), fitted)
        checkpointer.wait_until_finished()


def evaluate_fitted(config: Config, run_dir: Path, data: PreparedData) -> dict[str, Any]:
    """Restore a fitted run's arrays and evaluate them on validation and test."""
    family = fitted_family(config, data)
    task = task_for(data)
    fitted = _restore_fitted(family, config, run_dir, data)
    eval_step = _eval_step(family, task)
    batch, splits = config.data.eval_batch_size, data.splits
    return {
        "step": None,
        "validation": evaluate(eval_step, fitted, splits["validation"], batch, task),
        "test": evaluate(eval_step, fitted, splits["test"], batch, task),
    }


def _restore_fitted(family: FittedFamily, config: Config, run_dir: Path, data) -> Any:
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(
            (Path(run_dir) / FITTED_DIR).absolute(), _abstract(family, data, config.seed)
        )
