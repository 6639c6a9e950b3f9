"""The pure steps. Every way of running training is a transformation of ``train_step``."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

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


def cast_floating(tree, dtype):
    """Every floating-point leaf of ``tree`` as ``dtype`` (integer leaves, e.g. tokens, kept)."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def make_loss_fn(model: nn.Module, task: Task, penalty: Penalty | None = None, compute_dtype=None):
    """``loss_fn(params, state, batch, rng) -> (loss, (outputs, model_state))``, differentiable
    in ``params``: the task's mean (optionally ``batch["weights"]``-weighted) loss plus
    ``penalty(params)``.

    With ``compute_dtype`` (e.g. ``jnp.bfloat16``) the forward and backward passes run in that
    dtype: float parameters and inputs are cast to it inside the function, so the gradient
    with respect to the float32 ``params`` is float32 again; the outputs are cast back to
    float32 before the loss (a mixed-precision policy: params f32, compute bf16, loss f32)."""

    def loss_fn(params, state: TrainState, batch: Batch, rng):
        inputs, used = batch["inputs"], params
        if compute_dtype is not None:
            inputs, used = cast_floating((inputs, params), compute_dtype)
        outputs, model_state = apply_model(model, state, used, inputs, train=True, rng=rng)
        outputs = cast_floating(outputs, jnp.float32)
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
    *,
    axis_name: str | None = None,
    micro_batches: int = 1,
    compute_dtype=None,
    loss_hook: Penalty | None = None,
    dp: PrivateGradient | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """``train_step(state, batch) -> (state, metrics)``, pure and unjitted.

    batch: ``inputs`` [b, ...], ``labels`` (the task's targets) and optionally ``weights``
    f32[b]. ``task`` defaults to classification; ``augment(inputs, key)`` transforms the
    inputs first, with a key folded from the step's. Metrics are f32 scalars: the mean ``loss``
    (penalty included), the task's batch metrics (e.g. ``accuracy``), the global
    ``grad_norm``, the ``learning_rate`` used and ``nonfinite`` (1 when the loss, the
    gradient or the update was NaN/inf: that update was skipped, the state carried over
    unchanged).

    The same step serves every way of running it:

    - ``axis_name``: the step runs under ``jax.pmap(..., axis_name)`` (or ``shard_map``) on a
      per-device slice of the batch; gradients, loss and metrics are averaged across devices
      (``pmean``), so every replica applies the same update, and each device draws its own
      dropout/augmentation key. BatchNorm synchronises its statistics only when the model
      was built with the same ``axis_name`` (see :func:`jaxtrain.models.build_model`).
    - ``micro_batches``: gradient accumulation; the batch is cut into that many equal
      micro-batches, run one after another by ``lax.scan`` (peak activation memory of one
      micro-batch), and their mean gradient makes one update. Without dropout or BatchNorm
      this equals the full-batch step up to float rounding.
    - ``compute_dtype``: mixed precision (see :func:`make_loss_fn`).
    - ``loss_hook(params) -> f32[]``: a term added to the objective that is differentiated
      with it but not reported in ``metrics["loss"]``. Verbs that change the objective use
      it instead of a second update rule: FedProx's proximal term, SCAFFOLD's correction
      (see :mod:`jaxtrain.federated.client`).
    - ``dp``: DP-SGD. The batch carries a ``mask`` bool[b] (a Poisson sample padded to ``b``
      rows); each real row's gradient of the data loss (``jax.vmap`` of the same loss over
      rows: no hooks) is clipped to ``dp.clip_norm``, the rows are summed, Gaussian noise of
      standard deviation ``dp.noise_multiplier * dp.clip_norm`` added and the sum divided by
      ``dp.expected_batch_size`` (:func:`jaxtrain.privacy.dpsgd.private_gradient`); the
      penalty's gradient, which no example moves, is added after. Reported metrics are means
      over the real rows (outside the privacy guarantee).

    ``tx`` is any ``optax.GradientTransformation``; ``learning_rate`` is reported when its
    state exposes one (``inject_hyperparams``), else left out.
    """
    task = task or classification(0)  # the class count only matters for evaluation
    loss_fn = make_loss_fn(model, task, penalty, compute_dtype)
    if loss_hook is not None:
        data_loss_fn = loss_fn

        def loss_fn(params, state, batch, rng):
            loss, (outputs, model_state) = data_loss_fn(params, state, batch, rng)
            # The hook's value rides in the aux output so the reported loss leaves it out.
            return loss + loss_hook(params), (outputs, model_state, loss)

    loss_and_grad = _accumulated(loss_fn, micro_batches) if micro_batches > 1 else None
    if dp is not None:
        loss_and_grad = _private(make_loss_fn(model, task, None, compute_dtype), penalty, dp)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        step_key = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:  # each replica its own randomness (as rows of one batch)
            step_key = jax.random.fold_in(step_key, jax.lax.axis_index(axis_name))
        if augment is not None:
            # A key of its own (the dropout key stays the step key, as without augmentation).
            batch = {**batch, "inputs": augment(batch["inputs"], jax.random.fold_in(step_key, 1))}
        differentiate = loss_and_grad or jax.value_and_grad(loss_fn, has_aux=True)
        (loss, aux), grads = differentiate(state.params, state, batch, step_key)
        outputs, model_state = aux[:2]
        if loss_hook is not None:
            loss = aux[2]
        batch_metrics = _batch_metrics(task, outputs, batch["labels"], batch.get("mask"))
        if axis_name is not None:
            grads, loss, batch_metrics = jax.lax.pmean((grads, loss, batch_metrics), axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        grad_norm = optax.global_norm(grads)
        # A non-finite loss, gradient or update (a finite gradient times an infinite rate)
        # skips the update (state kept, step still counted) and says so in the metrics; the
        # host decides what to do when it next reads them.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        finite &= jnp.isfinite(optax.global_norm(updates))
        updated = (optax.apply_updates(state.params, updates), opt_state, model_state)
        kept = (state.params, state.opt_state, state.model_state)
        params, opt_state, model_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), updated, kept
        )
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state
        )
        metrics = {"loss": loss, **batch_metrics, "grad_norm": grad_norm}
        learning_rate = current_learning_rate(opt_state)
        if learning_rate is not None:
            metrics["learning_rate"] = learning_rate
        metrics["nonfinite"] = (~finite).astype(jnp.float32)
        return new_state, metrics

    return train_step


class PrivateGradient(NamedTuple):
    """DP-SGD's settings in the step (see :func:`make_train_step`)."""

    clip_norm: float
    noise_multiplier: float
    expected_batch_size: float


def _private(data_loss_fn, penalty: Penalty | None, dp: PrivateGradient):
    """``loss_and_grad(params, state, batch, key)`` of DP-SGD: per-row gradients by ``vmap``,
    clipped, summed, noised and normalised; the masked mean loss (penalty included)."""
    from jaxtrain.privacy.dpsgd import private_gradient

    def one_row(params, state, row, key):
        single = jax.tree.map(lambda x: x[None], row)
        return jax.value_and_grad(data_loss_fn, has_aux=True)(params, state, single, key)

    def loss_and_grad(params, state: TrainState, batch: Batch, key):
        mask = batch["mask"]
        rows = {k: v for k, v in batch.items() if k != "mask"}
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(mask.shape[0]))
        (losses, (outputs, _)), grads = jax.vmap(one_row, in_axes=(None, None, 0, 0))(
            params, state, rows, keys
        )
        grads, _ = private_gradient(
            grads,
            mask,
            jax.random.fold_in(key, mask.shape[0]),  # the rows took 0 .. b - 1
            clip_norm=dp.clip_norm,
            noise_multiplier=dp.noise_multiplier,
            expected_batch_size=dp.expected_batch_size,
        )
        real = mask.astype(jnp.float32)
        loss = jnp.sum(real * losses) / jnp.maximum(jnp.sum(real), 1.0)
        if penalty is not None:
            loss = loss + penalty(params)
            grads = jax.tree.map(jnp.add, grads, jax.grad(penalty)(params))
        outputs = jax.tree.map(lambda x: x.reshape(x.shape[0], *x.shape[2:]), outputs)
        return (loss, (outputs, state.model_state)), grads

    return loss_and_grad


def _batch_metrics(task: Task, outputs, labels, mask) -> Metrics:
    """The task's batch metrics; with a ``mask`` (a padded batch) the mean over real rows."""
    if mask is None:
        return task.batch_metrics(outputs, labels)
    per_row = jax.vmap(lambda o, y: task.batch_metrics(o[None], y[None]))(outputs, labels)
    real = mask.astype(jnp.float32)
    return {k: jnp.sum(real * v) / jnp.maximum(jnp.sum(real), 1.0) for k, v in per_row.items()}


def current_learning_rate(opt_state) -> jax.Array | None:
    """The learning rate the last update used, f32[], when the optimizer state exposes one
    (``optax.inject_hyperparams`` and jaxtrain's own optimizers keep it in ``hyperparams``,
    possibly nested inside ``optax.chain``); None for an optimizer that keeps it private."""
    found = []

    def visit(node):
        hyperparams = getattr(node, "hyperparams", None)
        if isinstance(hyperparams, dict) and "learning_rate" in hyperparams:
            found.append(hyperparams["learning_rate"])
            return
        if isinstance(node, tuple | list):
            for child in node:
                visit(child)

    visit(opt_state)
    return jnp.asarray(found[0], jnp.float32) if found else None


def _accumulated(loss_fn, micro_batches: int):
    """``value_and_grad(loss_fn)`` over ``micro_batches`` equal slices of the batch, scanned:
    returns the mean loss, the outputs of every row (in order), the model state after the last
    slice, and the mean gradient."""

    def loss_and_grad(params, state: TrainState, batch: Batch, key):
        size = jax.tree.leaves(batch)[0].shape[0]
        if size % micro_batches:
            raise ValueError(
                f"train.micro_batches={micro_batches} does not divide the batch of {size} rows"
            )
        sliced = jax.tree.map(
            lambda x: x.reshape(micro_batches, size // micro_batches, *x.shape[1:]), batch
        )

        def one(carry, xs):
            grad_sum, loss_sum, model_state = carry
            micro, index = xs
            (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                params,
                state.replace(model_state=model_state),
                micro,
                jax.random.fold_in(key, index),
            )
            outputs, model_state, *rest = aux
            grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
            return (grad_sum, loss_sum + loss, model_state), (outputs, *rest)

        zeros = jax.tree.map(jnp.zeros_like, params)
        (grad_sum, loss_sum, model_state), (outputs, *rest) = jax.lax.scan(
            one,
            (zeros, jnp.zeros((), jnp.float32), state.model_state),
            (sliced, jnp.arange(micro_batches)),
        )
        outputs = jax.tree.map(lambda x: x.reshape(size, *x.shape[2:]), outputs)
        grads = jax.tree.map(lambda g: g / micro_batches, grad_sum)
        rest = [jnp.mean(r) for r in rest]  # the data loss without the hook, per micro-batch
        return (loss_sum / micro_batches, (outputs, model_state, *rest)), grads

    return loss_and_grad


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
