"""Accelerators: datasheet peaks, a measured CPU peak, MFU, memory, power and energy."""

from __future__ import annotations

import os
import re
import resource
import sys
import time
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
    return peak_memory(device)[0]


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


def _datasheet_chip(device: jax.Device) -> Chip | None:
    if device.platform not in ("gpu", "tpu", "cuda", "rocm"):
        return None
    kind = device.device_kind.lower()
    for chip in DATASHEET_PEAKS:  # whole words: "l4" must not match "NVIDIA L40S"
        if re.search(rf"\b{re.escape(chip.match)}\b", kind):
            return chip
    return None


def peak_memory(device: jax.Device | None) -> tuple[int, str]:
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
