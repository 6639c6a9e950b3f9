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

from jaxtrain.cost.devices import (
    DATASHEET_PEAKS,
    DEFAULT_POWER_W,
    TERA,
    Chip,
    default_power_w,
    device_peak_flops,
    energy_estimate,
    measure_matmul_peak,
    mfu,
    peak_memory_bytes,
)
from jaxtrain.cost.flops import (
    attention_flops,
    check_flops,
    compiled_flops,
    conv_flops,
    dense_flops,
    mlp_forward_flops,
    mlp_train_step_flops,
    train_step_flops,
)
from jaxtrain.cost.report import step_cost_report

__all__ = [
    "DATASHEET_PEAKS",
    "DEFAULT_POWER_W",
    "TERA",
    "Chip",
    "attention_flops",
    "check_flops",
    "compiled_flops",
    "conv_flops",
    "default_power_w",
    "dense_flops",
    "device_peak_flops",
    "energy_estimate",
    "measure_matmul_peak",
    "mfu",
    "mlp_forward_flops",
    "mlp_train_step_flops",
    "peak_memory_bytes",
    "step_cost_report",
    "train_step_flops",
]
