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
