"""Helpers shared by tests: paths and small, fast configs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


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
    when two xdist workers share 2 cores, as CI's are (seen: a 4x2 mesh's all-reduce)."""
    return (
        f"--xla_force_host_platform_device_count={count} "
        "--xla_cpu_collective_call_terminate_timeout_seconds=600"
    )
