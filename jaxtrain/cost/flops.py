"""FLOP counts: XLA's count of a compiled program and the analytic counts it is checked against."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

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
