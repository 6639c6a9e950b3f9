"""What a run cost: parameters, FLOPs per step (XLA's count checked against an analytic one),
step time, throughput, FLOP/s and MFU against the device's peak, peak memory and energy.

Host-side glue over the pure accounting in :mod:`jaxtrain.cost`; the step time is the one the
run measured (training steps after the compiling first one, evaluations included), not a
separate benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax

from jaxtrain import cost

# Element-wise FLOPs per parameter of one optimizer update (moments, bias correction, decay,
# apply), counted once from XLA's cost analysis of the bare optax update (exact and
# size-independent): a constant per parameter that matters for small models.
OPTIMIZER_FLOPS_PER_PARAM = {"adamw": 15, "adam": 17, "sgd": 6}


def analytic_train_flops(
    model_config: Any, optimizer_name: str, input_shape, num_outputs: int, batch: int
) -> float | None:
    """Analytic FLOPs of one training step for dense-only families (MLP, linear): forward
    and backward matmuls plus the optimizer's element-wise update; None for the rest, whose
    count comes from XLA alone."""
    if model_config.name == "transformer_lm":
        return _transformer_lm_flops(
            model_config, optimizer_name, input_shape[0], num_outputs, batch
        )
    features = math.prod(input_shape)
    if model_config.name == "mlp":
        sizes = [features, *model_config.hidden, num_outputs]
    elif model_config.name == "linear":
        sizes = [features, num_outputs]
    else:
        return None
    params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    update = OPTIMIZER_FLOPS_PER_PARAM[optimizer_name] * params
    return float(cost.mlp_train_step_flops(batch, sizes) + update)


def _transformer_lm_flops(config, optimizer_name: str, seq: int, vocab: int, batch: int) -> float:
    """Matmul FLOPs of a decoder-only LM step: per layer the attention (Q, K, V and output
    projections, scores and the weighted sum over all ``seq`` keys) and the two MLP matmuls,
    then the tied output head; a train step is three forward passes (backward = 2x forward),
    plus the optimizer's element-wise update. Norms, softmax and embeddings are left out."""
    d, hidden = config.d_model, config.d_model * config.mlp_ratio
    per_layer = cost.attention_flops(batch, seq, d, config.num_heads) + 2 * cost.dense_flops(
        batch * seq, d, hidden, bias=False
    )
    forward = config.num_layers * per_layer + cost.dense_flops(batch * seq, d, vocab, bias=False)
    params = vocab * d + config.num_layers * (4 * d * d + 2 * d * hidden)
    return float(
        cost.train_step_flops(forward) + OPTIMIZER_FLOPS_PER_PARAM[optimizer_name] * params
    )


def training_cost(
    train_step: Callable,
    state: Any,
    batch: Any,
    *,
    model_config: Any,
    optimizer_name: str,
    input_shape,
    num_outputs: int,
    num_params: int,
    step_seconds: float | None,
    train_seconds: float,
) -> dict[str, Any]:
    """The cost section of ``metrics.json`` (see the module docstring). ``train_step`` is the
    jitted step the run used, ``batch`` one of its batches."""
    batch_size = int(jax.tree.leaves(batch)[0].shape[0])
    xla = cost.compiled_flops(train_step, state, batch)
    analytic = analytic_train_flops(
        model_config, optimizer_name, input_shape, num_outputs, batch_size
    )
    flops = analytic if analytic is not None else xla
    device = jax.devices()[0]
    peak, peak_source = cost.device_peak_flops(device)
    watts, power_assumption = cost.default_power_w(device)
    result: dict[str, Any] = {
        "params": num_params,
        "flops_per_step": {"xla": xla, "analytic": analytic},
        "flops_warning": cost.check_flops(xla, analytic),
        "step_time_s": step_seconds,
        "examples_per_s": batch_size / step_seconds if step_seconds else None,
        "peak_flops": peak,
        "peak_source": peak_source,
        "peak_memory_bytes": cost.peak_memory_bytes(device),
        "energy": cost.energy_estimate(train_seconds, watts),
        "assumptions": {"power": power_assumption},
    }
    if flops and step_seconds:
        result["achieved_flops"] = flops / step_seconds
        result["mfu"] = cost.mfu(flops, step_seconds, peak) if peak else None
    return result
