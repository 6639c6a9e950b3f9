"""From a ``transfer:`` section to the pieces a run needs: the (adapted) model, the
optimizer wrapper, the stop-gradient mask and the initial state loaded from pretrained
weights, with its report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxtrain.config.transfer import TransferConfig
from jaxtrain.files import write_json, write_text_atomic
from jaxtrain.transfer.errors import TransferError
from jaxtrain.transfer.load import (
    TransferReport,
    load_pretrained,
    match,
    read_source,
    variables_flat,
)
from jaxtrain.transfer.lora import LoRAModel, merge
from jaxtrain.transfer.model import FrozenModel
from jaxtrain.transfer.paths import flatten
from jaxtrain.transfer.plan import FROZEN, TransferPlan, creation_order

REPORT_FILES = ("transfer_report.json", "transfer_report.md")
MERGED_FILE = "lora_merged.safetensors"  # a LoRA run's best parameters, adapters merged


@dataclass(frozen=True)
class Transfer:
    """``model``: the model to train (the configured one, with LoRA adapters if asked, its
    frozen parameters as constants); ``plan``: what trains; ``wrap``: pass to
    ``build_optimizer(..., wrap=)``; ``initialise``: the pretrained initial state."""

    config: TransferConfig
    model: Any
    plan: TransferPlan

    def wrap(self, inner: optax.GradientTransformation) -> optax.GradientTransformation:
        return self.plan.wrap(inner)

    def initialise(self, state: Any, tx: optax.GradientTransformation) -> tuple[Any, Any]:
        """``(state, report)``: ``state`` (freshly initialised with ``tx``) with the
        pretrained variables loaded and the optimizer state rebuilt for them."""
        params, model_state, report = load_pretrained(self.config, state.params, state.model_state)
        state = state.replace(params=params, model_state=model_state, opt_state=tx.init(params))
        return state, self.plan.describe(report, params)

    def check(self, input_shape: tuple[int, ...], input_dtype: Any) -> TransferReport:
        """Everything :meth:`initialise` checks (the source, patterns, shapes), on abstract
        parameters: cheap, for before a run directory exists. Raises TransferError."""
        integer = jnp.issubdtype(jnp.dtype(input_dtype), jnp.integer)
        dummy = jnp.zeros((1, *input_shape), jnp.int32 if integer else jnp.float32)
        variables = jax.eval_shape(
            lambda key: self.model.init({"params": key}, dummy, train=False),
            jax.random.key(0),
        )
        params = variables.pop("params")
        description, step, source = read_source(self.config)
        _, lists = match(variables_flat(params, variables), source, self.config.head, description)
        return TransferReport(description, step, **lists)

    def export(self, run_dir: str | Path, params: Any) -> Path | None:
        """With LoRA: write ``params`` with the adapters merged into the base kernels (the
        configured model's own tree, loadable with ``transfer.names``) as
        ``run_dir/lora_merged.safetensors``; entries are named by parameter path."""
        if self.config.lora is None:
            return None
        from jaxtrain.transfer.weights_file import write_weights_file

        merged = merge(jax.device_get(params), self.config.lora.alpha, self.config.lora.rank)
        return write_weights_file(Path(run_dir) / MERGED_FILE, flatten(merged))


def build_transfer(
    config: TransferConfig,
    model: Any,
    input_shape: tuple[int, ...],
    input_dtype: Any,
    steps_per_epoch: float,
) -> Transfer:
    """The transfer pieces for ``model`` (see :class:`Transfer`); raises TransferError for
    patterns that match nothing."""
    if config.lora is not None:
        lora = config.lora
        model = LoRAModel(model, tuple(lora.targets), lora.rank, lora.alpha)
    order = creation_order(model, input_shape, input_dtype)
    plan = TransferPlan(config, order, steps_per_epoch)
    frozen = frozenset(p for p in order if plan.label(p) == FROZEN)
    if frozen:
        model = FrozenModel(model, frozen)
    return Transfer(config, model, plan)


def write_transfer_report(run_dir: str | Path, report: TransferReport) -> None:
    """``transfer_report.json`` and ``transfer_report.md`` in ``run_dir``."""
    run_dir = Path(run_dir)
    write_json(run_dir / REPORT_FILES[0], report.to_dict())
    write_text_atomic(run_dir / REPORT_FILES[1], report.markdown())


def check_transfer(config: Any, data: Any) -> TransferReport:
    """Check ``config.transfer`` against the model ``config`` builds for ``data`` (source
    readable, patterns match, shapes fit) without initialising anything; the report of what
    would load. Raises TransferError (one line)."""
    from jaxtrain.models import build_model, is_fitted

    if is_fitted(config.model):
        raise TransferError(
            f"transfer: model.name {config.model.name} is fitted in one step, not trained "
            "from an initial state; nothing to transfer into"
        )
    model = build_model(config.model, data.num_outputs, data.input_shape)
    inputs = data.splits["train"].inputs
    steps_per_epoch = len(data.splits["train"]) / config.data.batch_size
    transfer = build_transfer(
        config.transfer, model, data.input_shape, inputs.dtype, steps_per_epoch
    )
    return transfer.check(data.input_shape, inputs.dtype)
