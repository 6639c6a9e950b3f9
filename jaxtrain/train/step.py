"""The pure steps. Every way of running training is a transformation of ``train_step``."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxtrain.train.state import TrainState
from jaxtrain.train.tasks import Task, classification

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
Penalty = Callable[[object], jax.Array]


def apply_model(model: nn.Module, state: TrainState, params, inputs, *, train: bool, rng=None):
    """Run the model; returns (outputs, new model_state). model_state is updated only in train."""
    variables = {"params": params, **state.model_state}
    rngs = {"dropout": rng} if rng is not None else None
    if train and state.model_state:
        outputs, updates = model.apply(
            variables, inputs, train=True, rngs=rngs, mutable=list(state.model_state)
        )
        return outputs, dict(updates)
    return model.apply(variables, inputs, train=train, rngs=rngs), state.model_state


def weighted_mean(losses: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Mean of per-example ``losses`` f32[b]; with ``weights`` f32[b], ``mean(weights * losses)``
    (scikit-learn's ``sample_weight`` up to the constant 1/b)."""
    return jnp.mean(losses if weights is None else weights * losses)


def make_loss_fn(model: nn.Module, task: Task, penalty: Penalty | None = None):
    """``loss_fn(params, state, batch, rng) -> (loss, (outputs, model_state))``, differentiable
    in ``params``: the task's mean (optionally ``batch["weights"]``-weighted) loss plus
    ``penalty(params)``. Steps that change the objective (FedProx, SCAFFOLD) wrap this one."""

    def loss_fn(params, state: TrainState, batch: Batch, rng):
        outputs, model_state = apply_model(
            model, state, params, batch["inputs"], train=True, rng=rng
        )
        loss = weighted_mean(task.loss(outputs, batch["labels"]), batch.get("weights"))
        if penalty is not None:
            loss = loss + penalty(params)
        return loss, (outputs, model_state)

    return loss_fn


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    task: Task | None = None,
    penalty: Penalty | None = None,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """``train_step(state, batch) -> (state, metrics)``, pure and unjitted.

    batch: ``inputs`` [b, ...], ``labels`` (the task's targets) and optionally ``weights``
    f32[b]. ``task`` defaults to classification; ``augment(inputs, key)`` transforms the
    inputs first, with a key folded from the step's. Metrics are f32 scalars: the mean ``loss``
    (penalty included), the task's batch metrics (e.g. ``accuracy``), the global
    ``grad_norm``, the ``learning_rate`` used and ``nonfinite`` (1 when the loss or the
    gradient was NaN/inf: that update was skipped, the state carried over unchanged).
    """
    task = task or classification(0)  # the class count only matters for evaluation
    loss_fn = make_loss_fn(model, task, penalty)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        step_key = jax.random.fold_in(state.rng, state.step)
        if augment is not None:
            # A key of its own (the dropout key stays the step key, as without augmentation).
            batch = {**batch, "inputs": augment(batch["inputs"], jax.random.fold_in(step_key, 1))}
        (loss, (outputs, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state, batch, step_key
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        grad_norm = optax.global_norm(grads)
        # A non-finite loss or gradient skips the update (state kept, step still counted) and
        # says so in the metrics; the host decides what to do when it next reads them.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updated = (optax.apply_updates(state.params, updates), opt_state, model_state)
        kept = (state.params, state.opt_state, state.model_state)
        params, opt_state, model_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), updated, kept
        )
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state
        )
        metrics = {
            "loss": loss,
            **task.batch_metrics(outputs, batch["labels"]),
            "grad_norm": grad_norm,
            "learning_rate": jnp.asarray(opt_state.hyperparams["learning_rate"], jnp.float32),
            "nonfinite": (~finite).astype(jnp.float32),
        }
        return new_state, metrics

    return train_step


def make_eval_step(model: nn.Module, task: Task | int) -> Callable[[TrainState, Batch], Metrics]:
    """``eval_step(state, batch) -> sums`` for one padded batch (``mask`` bool[b] marks real rows).

    Returns the task's additive sums (classification: ``loss_sum`` f32[], ``count`` i32[],
    ``confusion`` i32[K, K], rows true, columns predicted). An int ``task`` means
    classification with that many classes.
    """
    if isinstance(task, int):
        task = classification(task)

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        outputs, _ = apply_model(model, state, state.params, batch["inputs"], train=False)
        return task.eval_sums(outputs, batch["labels"], batch["mask"])

    return eval_step
