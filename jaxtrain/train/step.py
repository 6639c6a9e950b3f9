"""The pure steps. Every way of running training is a transformation of ``train_step``."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxtrain.metrics import confusion_matrix
from jaxtrain.train.losses import softmax_cross_entropy
from jaxtrain.train.state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def _apply(model: nn.Module, state: TrainState, params, inputs, *, train: bool, rng=None):
    """Run the model; returns (logits, new model_state). model_state is updated only in train."""
    variables = {"params": params, **state.model_state}
    rngs = {"dropout": rng} if rng is not None else None
    if train and state.model_state:
        logits, updates = model.apply(
            variables, inputs, train=True, rngs=rngs, mutable=list(state.model_state)
        )
        return logits, dict(updates)
    return model.apply(variables, inputs, train=train, rngs=rngs), state.model_state


def make_train_step(
    model: nn.Module, tx: optax.GradientTransformation
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """``train_step(state, batch) -> (state, metrics)``, pure and unjitted.

    batch: ``inputs f32[b, ...]``, ``labels i32[b]``. Metrics are f32 scalars: mean ``loss``
    and ``accuracy`` over the batch, the global ``grad_norm`` and the ``learning_rate`` used.
    """

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        step_key = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            logits, model_state = _apply(
                model, state, params, batch["inputs"], train=True, rng=step_key
            )
            loss = softmax_cross_entropy(logits, batch["labels"]).mean()
            return loss, (logits, model_state)

        (loss, (logits, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            model_state=model_state,
        )
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["labels"]),
            "grad_norm": optax.global_norm(grads),
            "learning_rate": jnp.asarray(opt_state.hyperparams["learning_rate"], jnp.float32),
        }
        return new_state, metrics

    return train_step


def make_eval_step(model: nn.Module, num_classes: int) -> Callable[[TrainState, Batch], Metrics]:
    """``eval_step(state, batch) -> sums`` for one padded batch (``mask`` bool[b] marks real rows).

    Returns sums to accumulate over batches: ``loss_sum`` f32[], ``count`` i32[] and
    ``confusion`` i32[num_classes, num_classes] (rows true, columns predicted).
    """

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        logits, _ = _apply(model, state, state.params, batch["inputs"], train=False)
        mask = batch["mask"]
        losses = softmax_cross_entropy(logits, batch["labels"])
        return {
            "loss_sum": jnp.sum(jnp.where(mask, losses, 0.0)),
            "count": jnp.sum(mask.astype(jnp.int32)),
            "confusion": confusion_matrix(
                batch["labels"], jnp.argmax(logits, -1), num_classes, mask
            ),
        }

    return eval_step
