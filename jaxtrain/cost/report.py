"""One step's cost report: FLOPs, time, MFU, memory and energy together."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.cost.devices import default_power_w, device_peak_flops, energy_estimate, peak_memory
from jaxtrain.cost.flops import check_flops, compiled_flops

# ---------------------------------------------------------------------------------------------
# one report


def step_cost_report(
    step_fn: Callable,
    *args: Any,
    batch_size: int,
    step_time_s: float | None = None,
    analytic_flops: float | None = None,
    params: Any = None,
    device: jax.Device | None = None,
    dtype: Any = jnp.float32,
    num_steps: int = 1,
    repeats: int = 5,
) -> dict[str, Any]:
    """The cost of one step of ``step_fn(*args)`` as a JSON-ready dict (for metrics.json).

    Args:
      step_fn: the step, plain or jitted; it is compiled (not run) to read XLA's FLOP count.
      *args: example arguments of one step.
      batch_size: examples per step.
      step_time_s: seconds per step if already measured (by the training loop); else the step
        is run ``1 + repeats`` times here and the median of the timed runs is used.
      analytic_flops: the model FLOPs of one step, e.g. ``mlp_train_step_flops(...)``.
      params: parameter pytree (or an int count), for the ``params`` entry.
      device: where it runs (default: the default device); dtype: the compute dtype for the
        peak. num_steps: steps the energy estimate covers.

    Returns:
      ``params``, ``flops_per_step`` ({"xla", "analytic"}), ``flops_warning``,
      ``step_time_s``, ``examples_per_s``, ``achieved_flops`` (model FLOPs / s: analytic if
      given, else XLA's), ``peak_flops``, ``peak_flops_source``, ``mfu``,
      ``peak_memory_bytes``, ``energy_j``, ``energy_kwh`` (for ``num_steps`` steps) and
      ``assumptions`` (list of str).
    """
    device = device or jax.devices()[0]
    jitted = step_fn if hasattr(step_fn, "lower") else jax.jit(step_fn)
    xla = compiled_flops(jitted, *args)
    if step_time_s is None:
        step_time_s = _time_step(jitted, args, repeats)
    flops = analytic_flops if analytic_flops is not None else xla
    peak, peak_source = device_peak_flops(device, dtype)
    memory, memory_source = peak_memory(device)
    watts, power_source = default_power_w(device)
    energy = energy_estimate(step_time_s * num_steps, watts)
    achieved = flops / step_time_s if flops is not None else None
    return {
        "params": _count_params(params),
        "flops_per_step": {"xla": xla, "analytic": analytic_flops},
        "flops_warning": check_flops(xla, analytic_flops),
        "step_time_s": step_time_s,
        "examples_per_s": batch_size / step_time_s,
        "achieved_flops": achieved,
        "peak_flops": peak,
        "peak_flops_source": peak_source,
        "mfu": achieved / peak if achieved is not None and peak else None,
        "peak_memory_bytes": memory,
        "energy_j": energy["joules"],
        "energy_kwh": energy["kwh"],
        "assumptions": [
            "FLOPs: 2 per multiply-add; train step = 3x forward (backward = 2x forward)",
            f"MFU uses {'analytic' if analytic_flops is not None else 'XLA'} FLOPs per step",
            f"peak: {peak_source}",
            f"memory: {memory_source}",
            f"energy: {power_source}, for {num_steps} step(s) of {step_time_s:.4g} s on one "
            "device; idle, host and cooling power not included",
        ],
    }


def _time_step(jitted: Callable, args: tuple, repeats: int) -> float:
    """Median seconds of ``repeats`` runs after one warm-up (which also compiles)."""
    jax.block_until_ready(jitted(*args))
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        jax.block_until_ready(jitted(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _count_params(params: Any) -> int | None:
    if params is None:
        return None
    if isinstance(params, (int, np.integer)):
        return int(params)
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))
