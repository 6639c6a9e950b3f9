"""Helpers shared by tests: paths and small, fast configs."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# How XLA compiles for the CPU in the default suite: LLVM at -O0, the older (non-MLIR)
# fusion emitters and no codegen threads (two workers share 2 cores). Together a tiny run's
# programs compile about 5x faster (2.6 s -> 0.5 s for the digits MLP's), and the suite's
# programs are too small to run slower for it (convolutions aside: docs/testing.md).
# The tests marked slow keep XLA's defaults, so CI checks the same invariants both ways.
FAST_COMPILE = (
    "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
    "--xla_cpu_parallel_codegen_split_count=1"
)


def xla_defaults() -> bool:
    """Whether this process compiles with XLA's default CPU flags, not :data:`FAST_COMPILE`
    (which ``tests/conftest.py`` sets for the default suite).

    Two *different* programs (a vmapped fit and single fits, a hand-written loop and the
    train step) agree bitwise under XLA's defaults; the fast flags may round one reduction
    of one of them differently (1-5 ulps seen). Such a test asserts float32 rounding under
    the fast flags and bitwise under the defaults, and carries ``@pytest.mark.default_xla``:
    ``make test-slow`` runs it again there."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    return not any(flag in flags for flag in FAST_COMPILE.split())


def small_mlp_yaml(name: str = "small_mlp") -> str:
    """A quick digits MLP config as YAML text."""
    return f"""
name: {name}
seed: 0
data: {{name: digits, batch_size: 32}}
model: {{name: mlp, hidden: [32]}}
optimizer: {{name: adamw, learning_rate: 0.003, schedule: {{name: cosine, warmup_steps: 5}}}}
train: {{epochs: 2, eval_every: 20, log_every: 5}}
"""


def forced_devices(count: int) -> str:
    """``XLA_FLAGS`` for a subprocess with ``count`` CPU devices. Its collectives may wait up
    to 10 minutes for every device's thread: XLA's default (40 s, then abort) is exceeded
    when two xdist workers share 2 cores, as CI's are (seen: a 4x2 mesh's all-reduce). The
    suite's own flags (:data:`FAST_COMPILE`) are kept, so a subprocess compiles
    as the test process does."""
    return (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count} "
        "--xla_cpu_collective_call_terminate_timeout_seconds=600"
    ).strip()
