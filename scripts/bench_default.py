"""Benchmark the default experiment: wall time and examples/second, beside a bare JAX loop.

Run: ``.venv/bin/python scripts/bench_default.py [CONFIG]`` (default configs/digits_cnn.yaml).

(a) ``jaxtrain train CONFIG`` end to end in a fresh process (imports, data, compile, training,
    per-epoch validation, async checkpoints, test evaluation, plots, report): wall time, and the
    training loop's examples/second as the run itself recorded it;
(b) the same model, optimizer, batch size and number of steps as a bare jitted loop over
    in-memory numpy batches (no pipeline, evaluation, logging or checkpoints), in this process.
The last line is ``default_vs_bare_loop: X.XX``: (a)'s training examples/s over (b)'s, i.e.
how much of a bare loop's speed the full toolkit keeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxtrain.config import load_config  # noqa: E402
from jaxtrain.train import build_pieces, make_train_step  # noqa: E402


def run_toolkit(config_path: Path, runs_dir: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxtrain",
            "train",
            str(config_path),
            "--runs-dir",
            str(runs_dir),
            "--no-progress",
        ],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    (metrics_file,) = runs_dir.glob("*/*/metrics.json")
    return wall, json.loads(metrics_file.read_text())


def run_bare_loop(config_path: Path) -> tuple[float, int]:
    config = load_config(config_path)
    pieces = build_pieces(config)
    train = pieces.data.splits["train"]
    step = jax.jit(make_train_step(pieces.model, pieces.tx))
    batch_size, total = config.data.batch_size, pieces.total_steps
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(len(train)) for _ in range(config.train.epochs + 1)])
    batches = [
        {"inputs": train.inputs[idx], "labels": train.labels[idx]}
        for idx in order[: total * batch_size].reshape(total, batch_size)
    ]
    state, metrics = step(pieces.state, batches[0])  # compile outside the timing
    jax.block_until_ready(metrics)
    state = pieces.state
    started = time.perf_counter()
    for batch in batches:
        state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - started
    return total * batch_size / seconds, total


def main() -> None:
    config_path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "configs" / "digits_cnn.yaml"
    print(f"config: {config_path.relative_to(ROOT) if config_path.is_absolute() else config_path}")
    print(f"devices: {jax.devices()}  cpu cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        wall, metrics = run_toolkit(config_path, Path(tmp))
    training = metrics["training"]
    ours = training["examples_per_s"]
    print(
        f"(a) jaxtrain train, end to end: wall {wall:.1f} s, "
        f"training loop {training['wall_time_s']:.1f} s, "
        f"{ours:,.0f} examples/s, test accuracy {metrics['test']['accuracy']:.4f}"
    )
    bare, steps = run_bare_loop(config_path)
    print(f"(b) bare jitted loop, {steps} steps: {bare:,.0f} examples/s")
    print(f"default_vs_bare_loop: {ours / bare:.2f}")


if __name__ == "__main__":
    main()
