"""Computational cost of a step: FLOPs (XLA's count and an analytic one), time, MFU, memory,
energy.

Counting conventions (the usual ones in the MFU literature, e.g. Kaplan et al. 2020 and the
PaLM paper's appendix B):

- A multiply-add is 2 FLOPs: ``x @ w`` with x f32[b, m] and w f32[m, k] is ``2 b m k``.
- A train step is ~3x the forward pass: the backward pass computes, for every matmul, one
  matmul of the same size for the gradient of the weights and one for the gradient of the
  inputs, so backward = 2x forward. The first layer needs no input gradient, so its backward
  is 1x (``mlp_train_step_flops`` counts that exactly). Element-wise work (activations,
  softmax, the optimizer update) is left out of analytic counts; it is a few per cent for
  models of any useful size.
- XLA's count (``compiled_flops``) is what the compiled program does, recomputation and
  element-wise work included; on CPU, padded convolution taps are not counted.
- MFU uses the analytic (model) FLOPs when given, else XLA's; the peak comes from datasheets
  for known accelerators and from a measured matmul on CPU, so CPU MFU is relative to what
  this machine's BLAS achieves, not to a vendor figure.

Numbers here are estimates for reports (``metrics.json``), never inputs to training.
"""

from __future__ import annotations

import os
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

TERA = 1e12


class Chip(NamedTuple):
    """One accelerator's datasheet figures: dense peaks in TFLOP/s (None where the chip has no
    such hardware or the vendor publishes none) and board power (TDP) in watts."""

    match: str  # matched against device.device_kind, lower case, as whole words
    name: str
    float32: float | None
    tf32: float | None
    bfloat16: float | None
    float16: float | None
    tdp_w: float | None


# Dense (no structured sparsity) peak TFLOP/s per chip, and board power, from vendor datasheets.
# NVIDIA quotes tensor-core figures "with sparsity"; the dense figure is half of it. "float32"
# is the non-tensor-core FP32 peak. JAX's default matmul precision lets XLA run f32 matmuls as
# TF32 on Ampere and later, so an f32 run can exceed it; "tf32" is that ceiling. The first row
# whose ``match`` is found in the device kind wins, so specific variants come first.
DATASHEET_PEAKS: tuple[Chip, ...] = (
    # NVIDIA H200 Tensor Core GPU datasheet (2024): SXM FP32 67 TF, TF32 989 / BF16 1,979 TF
    # with sparsity, TDP up to 700 W; NVL FP32 60 TF, TF32 835 / BF16 1,671 sparse, 600 W.
    Chip("h200 nvl", "H200 NVL", 60.0, 417.5, 835.5, 835.5, 600.0),
    Chip("h200", "H200 SXM", 67.0, 494.5, 989.5, 989.5, 700.0),
    # NVIDIA H100 Tensor Core GPU datasheet (2023): SXM FP32 67 TF, TF32 989 / BF16 1,979 TF
    # sparse, 700 W; PCIe 51 TF, 756 / 1,513 TF, 350 W; NVL 60 TF, 835 / 1,671 TF, 400 W.
    Chip("h100 nvl", "H100 NVL", 60.0, 417.5, 835.5, 835.5, 400.0),
    Chip("h100 pcie", "H100 PCIe", 51.0, 378.0, 756.5, 756.5, 350.0),
    Chip("h100", "H100 SXM", 67.0, 494.5, 989.5, 989.5, 700.0),
    # NVIDIA A100 Tensor Core GPU datasheet (2021): FP32 19.5 TF, TF32 156 TF, BF16/FP16
    # 312 TF dense; 400 W SXM, 300 W PCIe 80GB, 250 W PCIe 40GB.
    Chip("a100-pcie", "A100 PCIe 40GB", 19.5, 156.0, 312.0, 312.0, 250.0),
    Chip("a100 80gb pcie", "A100 PCIe 80GB", 19.5, 156.0, 312.0, 312.0, 300.0),
    Chip("a100", "A100 SXM", 19.5, 156.0, 312.0, 312.0, 400.0),
    # NVIDIA L4 datasheet (2023): FP32 30.3 TF, TF32 120 / BF16 242 TF with sparsity, 72 W.
    Chip("l4", "L4", 30.3, 60.0, 121.0, 121.0, 72.0),
    # NVIDIA V100 datasheet (2020): SXM2 FP32 15.7 TF, tensor (FP16) 125 TF, 300 W; PCIe
    # 14 TF, 112 TF, 250 W. Volta has no BF16 or TF32 hardware (XLA emulates BF16).
    Chip("v100-pcie", "V100 PCIe", 14.0, None, None, 112.0, 250.0),
    Chip("v100", "V100 SXM2", 15.7, None, None, 125.0, 300.0),
    # NVIDIA T4 datasheet: FP32 8.1 TF, FP16 mixed precision 65 TF, 70 W. No BF16 hardware.
    Chip("t4", "T4", 8.1, None, None, 65.0, 70.0),
    # Google Cloud TPU system-architecture pages, peak BF16 per chip: v4 275 TF, v5e 197 TF,
    # v5p 459 TF, v6e (Trillium) 918 TF. Google publishes no FP32 peak and no chip TDP: at
    # JAX's default precision an f32 matmul runs as one BF16 pass on the MXU, so float32 falls
    # back to the BF16 figure (device_peak_flops says so). JAX names v5e "TPU v5 lite", v5p
    # "TPU v5" and v6e "TPU v6 lite".
    Chip("v6 lite", "TPU v6e", None, None, 918.0, None, None),
    Chip("v6e", "TPU v6e", None, None, 918.0, None, None),
    Chip("v5 lite", "TPU v5e", None, None, 197.0, None, None),
    Chip("v5e", "TPU v5e", None, None, 197.0, None, None),
    Chip("v5p", "TPU v5p", None, None, 459.0, None, None),
    Chip("tpu v5", "TPU v5p", None, None, 459.0, None, None),
    Chip("tpu v4", "TPU v4", None, None, 275.0, None, None),
)

# Power when no datasheet TDP is known. Assumptions, not measurements: "cpu" is per core (a
# server CPU's TDP, 150-350 W, over its 16-64 cores); "gpu" a mid-range datacenter card;
# "tpu" the order of the mean chip power reported for TPU v4 (Jouppi et al., ISCA 2023).
DEFAULT_POWER_W: dict[str, float] = {"cpu": 10.0, "gpu": 300.0, "tpu": 200.0}

_MEASURED_PEAKS: dict[tuple[Any, str], float] = {}


# ---------------------------------------------------------------------------------------------
# FLOP counts


def compiled_flops(fn: Callable, *args: Any, **kwargs: Any) -> float | None:
    """FLOPs of one call of ``fn(*args, **kwargs)`` as counted by XLA after compilation.

    ``fn`` may be plain or already jitted (a jitted function keeps its static arguments).
    Returns None when XLA reports no count: ``cost_analysis()`` is a dict in recent JAX, a
    one-element list of dicts in older JAX, and None (or a missing/negative "flops") on some
    backends.
    """
    lowerable = fn if hasattr(fn, "lower") else jax.jit(fn)
    try:
        analysis = lowerable.lower(*args, **kwargs).compile().cost_analysis()
    except Exception:  # noqa: BLE001 - a backend without cost analysis raises various errors
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not analysis:
        return None
    flops = analysis.get("flops")
    if flops is None or not np.isfinite(flops) or flops < 0:
        return None
    return float(flops)


def dense_flops(batch: int, d_in: int, d_out: int, bias: bool = True) -> int:
    """``x @ w (+ b)`` for x [batch, d_in]: ``2 batch d_in d_out``, plus ``batch d_out`` adds."""
    return 2 * batch * d_in * d_out + (batch * d_out if bias else 0)


def conv_flops(
    batch: int,
    out_hw: Sequence[int],
    c_in: int,
    c_out: int,
    kernel: Sequence[int],
    groups: int = 1,
    bias: bool = True,
) -> int:
    """A convolution producing ``[batch, *out_hw, c_out]`` with a ``kernel`` window:
    ``2 batch prod(out_hw) c_out prod(kernel) c_in / groups`` (+ bias adds).

    Every output sums over the full window, padding included (as the hardware does); XLA's CPU
    count skips taps that fall on "SAME" padding, so it is a few per cent lower there.
    """
    if c_in % groups or c_out % groups:
        raise ValueError(f"conv_flops: groups={groups} must divide c_in={c_in} and c_out={c_out}.")
    outputs = batch * int(np.prod(out_hw)) * c_out
    return 2 * outputs * int(np.prod(kernel)) * (c_in // groups) + (outputs if bias else 0)


def attention_flops(
    batch: int, seq: int, d_model: int, heads: int, kv_seq: int | None = None
) -> int:
    """Multi-head attention forward (matmuls only), for queries ``[batch, seq, d_model]``:

    - Q, K, V and output projections: ``4 x 2 batch seq d_model^2`` (K and V over ``kv_seq``);
    - scores ``Q K^T``: ``2 batch heads seq kv_seq d_head = 2 batch seq kv_seq d_model``;
    - ``softmax(scores) V``: the same again.

    The head count changes the shapes, not the total; softmax and biases are left out.
    """
    if d_model % heads:
        raise ValueError(f"attention_flops: heads={heads} must divide d_model={d_model}.")
    kv_seq = seq if kv_seq is None else kv_seq
    projections = 2 * batch * d_model * d_model * (2 * seq + 2 * kv_seq)
    return projections + 4 * batch * seq * kv_seq * d_model


def mlp_forward_flops(batch: int, sizes: Sequence[int], bias: bool = True) -> int:
    """Dense layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` (activations not counted)."""
    return sum(dense_flops(batch, a, b, bias) for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def mlp_train_step_flops(
    batch: int, sizes: Sequence[int], bias: bool = True, input_grad: bool = False
) -> int:
    """Forward + backward of an MLP: 3x forward, less the first layer's input-gradient matmul
    (``2 batch sizes[0] sizes[1]``) unless ``input_grad`` (gradients w.r.t. the inputs)."""
    total = 3 * mlp_forward_flops(batch, sizes, bias)
    return total if input_grad else total - 2 * batch * sizes[0] * sizes[1]


def train_step_flops(forward_flops: float) -> float:
    """The rule of thumb: a train step is 3x its forward pass (backward = 2x forward)."""
    return 3.0 * forward_flops


def check_flops(xla: float | None, analytic: float | None, rtol: float = 0.25) -> str | None:
    """A warning string when XLA gave no count, or when the two counts differ by more than
    ``rtol`` relative to the analytic one; None when they agree (or nothing to compare)."""
    if xla is None:
        return "XLA reported no FLOP count for this program; only the analytic count is known."
    if analytic is None or analytic <= 0:
        return None
    relative = abs(xla - analytic) / analytic
    if relative > rtol:
        return (
            f"FLOP counts disagree: XLA {xla:.4g}, analytic {analytic:.4g} (XLA/analytic = "
            f"{xla / analytic:.3f}, more than {rtol:.0%} apart). Check the analytic formula's "
            "shapes, or look for recomputation or unfused work in the compiled program."
        )
    return None


# ---------------------------------------------------------------------------------------------
# peaks and utilisation


def measure_matmul_peak(
    n: int | None = None,
    dtype: Any = jnp.float32,
    repeats: int = 10,
    device: jax.Device | None = None,
    inner: int | None = None,
) -> float:
    """FLOP/s of a jitted ``n x n`` matmul on ``device`` (default: the default device).

    Each timed call runs ``inner`` chained matmuls (one jitted program, so dispatch costs
    little); the result is the best of ``repeats`` calls after one warm-up. Defaults: n=1024
    and inner=1 on CPU, n=4096 and inner=10 on accelerators.
    """
    device = device or jax.devices()[0]
    on_cpu = device.platform == "cpu"
    n = n or (1024 if on_cpu else 4096)
    inner = inner or (1 if on_cpu else 10)
    keys = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(keys[0], (n, n), dtype), device)
    b = jax.device_put(jax.random.normal(keys[1], (n, n), dtype) / np.sqrt(n), device)

    @jax.jit
    def chain(a: jax.Array, b: jax.Array) -> jax.Array:
        return jax.lax.fori_loop(0, inner, lambda _, x: (x @ b).astype(dtype), a)

    jax.block_until_ready(chain(a, b))
    best = np.inf
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        jax.block_until_ready(chain(a, b))
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 * inner / best


def device_peak_flops(
    device: jax.Device | None = None, dtype: Any = jnp.float32
) -> tuple[float | None, str]:
    """(peak FLOP/s, where the number comes from) for ``device`` at ``dtype``.

    GPUs and TPUs whose ``device_kind`` is in ``DATASHEET_PEAKS`` use the datasheet figure
    (``dtype`` may also be "tf32"); anything else (CPU, unknown accelerators) uses
    ``measure_matmul_peak`` at that dtype, measured once per device and dtype per process.
    """
    device = device or jax.devices()[0]
    name = "tf32" if isinstance(dtype, str) and dtype == "tf32" else np.dtype(dtype).name
    chip = _datasheet_chip(device)
    if chip is not None:
        tflops = getattr(chip, name, None)
        if tflops is not None:
            return tflops * TERA, f"datasheet: {chip.name} dense {name} peak"
        if device.platform == "tpu" and name == "float32" and chip.bfloat16 is not None:
            return chip.bfloat16 * TERA, (
                f"datasheet: {chip.name} dense bfloat16 peak (f32 matmuls run as bf16 MXU "
                "passes at JAX's default precision; no f32 peak is published)"
            )
    key = (device, "float32" if name == "tf32" else name)
    if key not in _MEASURED_PEAKS:
        _MEASURED_PEAKS[key] = measure_matmul_peak(dtype=key[1], device=device)
    source = f"measured: best jitted {key[1]} matmul on {device.platform} ({device.device_kind})"
    return _MEASURED_PEAKS[key], source


def mfu(flops_per_step: float, step_seconds: float, peak: float) -> float:
    """Model FLOPs utilisation: ``flops_per_step / step_seconds / peak`` (a fraction)."""
    if step_seconds <= 0 or peak <= 0:
        raise ValueError(
            f"mfu: step_seconds and peak must be positive; got {step_seconds} and {peak}."
        )
    return flops_per_step / step_seconds / peak


# ---------------------------------------------------------------------------------------------
# memory and energy


def peak_memory_bytes(device: jax.Device | None = None) -> int:
    """Peak memory in bytes: the allocator's ``peak_bytes_in_use`` from
    ``device.memory_stats()`` where the backend has one (GPU, TPU), else the process's maximum
    resident set size from ``resource.getrusage`` (CPU: host memory of the whole process)."""
    return _peak_memory(device)[0]


def default_power_w(device: jax.Device | None = None) -> tuple[float, str]:
    """(watts, the assumption behind it) for one ``device`` running flat out."""
    device = device or jax.devices()[0]
    chip = _datasheet_chip(device)
    if chip is not None and chip.tdp_w is not None:
        return chip.tdp_w, f"power = {chip.name} datasheet TDP {chip.tdp_w:.0f} W"
    if device.platform == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        watts = DEFAULT_POWER_W["cpu"] * (cores or 1)
        return watts, (
            f"power = {DEFAULT_POWER_W['cpu']:.0f} W per core x {cores} cores (a server CPU's "
            "TDP per core; not measured)"
        )
    watts = DEFAULT_POWER_W.get(device.platform, DEFAULT_POWER_W["gpu"])
    return watts, f"power = {watts:.0f} W assumed for a {device.platform} ({device.device_kind})"


def energy_estimate(seconds: float, watts: float) -> dict[str, float]:
    """Energy of ``seconds`` at constant ``watts``: ``{"joules", "kwh"}`` (1 kWh = 3.6e6 J)."""
    joules = float(seconds) * float(watts)
    return {"joules": joules, "kwh": joules / 3.6e6}


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
    memory, memory_source = _peak_memory(device)
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


def _datasheet_chip(device: jax.Device) -> Chip | None:
    if device.platform not in ("gpu", "tpu", "cuda", "rocm"):
        return None
    kind = device.device_kind.lower()
    for chip in DATASHEET_PEAKS:  # whole words: "l4" must not match "NVIDIA L40S"
        if re.search(rf"\b{re.escape(chip.match)}\b", kind):
            return chip
    return None


def _peak_memory(device: jax.Device | None) -> tuple[int, str]:
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without allocator stats raise or return None
        stats = None
    if stats and stats.get("peak_bytes_in_use"):
        return int(stats["peak_bytes_in_use"]), f"{device.platform} allocator peak_bytes_in_use"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return int(rss) * scale, "process max resident set size (getrusage), host memory"
