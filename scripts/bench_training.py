"""Training throughput: the per-step loop, the fused epoch and PyTorch, side by side.

Run: ``.venv/bin/python scripts/bench_training.py`` (PyTorch is not a jaxtrain dependency:
``.venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu``).

Two models on the digits training split (1149 examples), AdamW (lr 3e-3, weight decay 1e-4),
batch 32 (the default config's) and batch 256:

- ``mlp``: 64-256-256-10 with ReLU;
- ``cnn``: the default experiment's CNN (configs/digits_cnn.yaml: conv 32, conv 64, each
  ReLU + 2x2 max-pool, dense 128, dropout 0.1, 10 logits).

Each trained three ways, ``EPOCHS`` epochs timed after one warm-up epoch:

(a) jaxtrain's per-step loop: the grain pipeline's batches through the jitted ``train_step``,
    one call per step (what ``train.fused_epochs: false`` runs);
(b) jaxtrain's fused epoch: the same step under ``lax.scan`` over the epoch's index batches,
    the split on the device, one call per epoch (``train.fused_epochs: true``);
(c) PyTorch on the CPU written the way its tutorials do: ``DataLoader(TensorDataset(...),
    shuffle=True)``, ``model.train()``, ``zero_grad``/``backward``/``step`` per batch,
    ``torch.optim.AdamW``, as many threads as cores.

Printed: examples/second of each, the ratios, the achieved FLOP/s of each jaxtrain run as a
fraction of a float32 matmul peak measured in the same process (XLA's FLOP count of the
step), for the MLP the same fraction for a bare step (its eight matrix products and an SGD
update, nothing else, fused the same way: the most any implementation of that model can
reach here at that batch size), and the time to first step of ``jaxtrain train
configs/digits_cnn.yaml`` in a fresh process with an empty compilation cache (cold) and
again with the cache it filled (warm).
The last line is ``fused_vs_pytorch: X.XX``: (b)/(c) for the MLP at batch 32.
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

from jaxtrain import cost  # noqa: E402
from jaxtrain.config import load_config  # noqa: E402
from jaxtrain.data import prepare_data, train_batches, train_index_batches  # noqa: E402
from jaxtrain.models import build_model  # noqa: E402
from jaxtrain.train.optim import build_optimizer  # noqa: E402
from jaxtrain.train.scan import make_fused_steps  # noqa: E402
from jaxtrain.train.state import create_train_state  # noqa: E402
from jaxtrain.train.step import make_train_step  # noqa: E402

EPOCHS = int(os.environ.get("BENCH_EPOCHS", 5))
BATCHES = (32, 256)
MODELS = {
    "mlp": "{name: mlp, hidden: [256, 256]}",
    "cnn": "{name: cnn, features: [32, 64], dense: 128, dropout: 0.1}",
}
CONFIG = """
name: bench_training
seed: 0
data: {{name: digits, batch_size: {batch}}}
model: {model}
optimizer: {{name: adamw, learning_rate: 0.003, weight_decay: 0.0001}}
"""


def jax_runs(model_name: str, batch: int, data) -> dict[str, float]:
    """Examples/second and FLOP/s of (a) the per-step loop and (b) the fused epoch."""
    config = load_config_text(CONFIG.format(batch=batch, model=MODELS[model_name]))
    split = data.splits["train"]
    steps = len(split) // batch
    model = build_model(config.model, data.num_outputs, data.input_shape)
    tx = build_optimizer(config.optimizer, steps * (EPOCHS + 1))
    state = create_train_state(model, tx, data.input_shape, 0)
    step_fn = make_train_step(model, tx)
    train_step = jax.jit(step_fn)
    sample = {"inputs": split.inputs[:batch], "labels": split.labels[:batch]}
    flops = cost.compiled_flops(step_fn, state, sample)

    # (a) the per-step loop over the grain pipeline
    iterator = iter(train_batches(split, batch, EPOCHS + 1, seed=0))
    s = state
    for _ in range(steps):  # warm-up epoch (compiles)
        s, metrics = train_step(s, next(iterator))
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for _ in range(steps * EPOCHS):
        s, metrics = train_step(s, next(iterator))
    jax.block_until_ready((s, metrics))
    step_seconds = time.perf_counter() - started

    # (b) the fused epoch over the same stream's index batches
    fused = jax.jit(make_fused_steps(step_fn))
    on_device = jax.device_put({"inputs": split.inputs, "labels": split.labels})
    indices = iter(train_index_batches(len(split), batch, EPOCHS + 1, seed=0))
    epochs = [
        jax.device_put(np.stack([next(indices) for _ in range(steps)])) for _ in range(EPOCHS + 1)
    ]
    s = state
    s, metrics = fused(s, on_device, epochs[0])  # warm-up epoch (compiles)
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for epoch in epochs[1:]:
        s, metrics = fused(s, on_device, epoch)
    jax.block_until_ready((s, metrics))
    fused_seconds = time.perf_counter() - started

    examples = steps * batch * EPOCHS
    return {
        "step": examples / step_seconds,
        "fused": examples / fused_seconds,
        "step_flops": flops * steps * EPOCHS / step_seconds if flops else float("nan"),
        "fused_flops": flops * steps * EPOCHS / fused_seconds if flops else float("nan"),
        "flops_per_step": flops or float("nan"),
    }


def bare_mlp_flops(batch: int, steps: int) -> float:
    """FLOP/s of the least any training step of the 64-256-256-10 MLP must do: its eight
    matrix products (three forward; three weight and two input gradients backward) and a
    plain SGD update, with no activation, bias, loss or optimizer state, ``steps`` steps
    scanned in one call like the fused epoch. Its fraction of the matmul peak bounds what
    any implementation of the model can reach on this machine at this batch size."""
    sizes = (64, 256, 256, 10)
    keys = jax.random.split(jax.random.key(0), len(sizes) + 1)
    weights = [
        jax.random.normal(key, (d_in, d_out)) / np.sqrt(d_in)
        for key, d_in, d_out in zip(keys, sizes[:-1], sizes[1:], strict=False)
    ]
    inputs = jax.random.normal(keys[-2], (steps, batch, sizes[0]))
    targets = jax.random.normal(keys[-1], (steps, batch, sizes[-1]))

    def step(weights, batch):
        activations = [batch[0]]
        for w in weights:
            activations.append(activations[-1] @ w)
        grad_out = activations[-1] - batch[1]  # the squared error's gradient
        grads = []
        for layer in reversed(range(len(weights))):
            grads.insert(0, activations[layer].T @ grad_out)
            if layer:
                grad_out = grad_out @ weights[layer].T
        return [w - 1e-6 * g for w, g in zip(weights, grads, strict=True)], None

    epoch = jax.jit(lambda w, x, y: jax.lax.scan(step, w, (x, y))[0])
    flops = cost.compiled_flops(step, weights, (inputs[0], targets[0]))
    trained = jax.block_until_ready(epoch(weights, inputs, targets))  # compiles
    best = float("inf")
    for _ in range(5):  # a ceiling: the best of five timings, as the peak takes its best
        started = time.perf_counter()
        for _ in range(EPOCHS):
            trained = epoch(trained, inputs, targets)
        jax.block_until_ready(trained)
        best = min(best, time.perf_counter() - started)
    return flops * steps * EPOCHS / best


def torch_run(model_name: str, batch: int, data) -> float:
    """Examples/second of the plain PyTorch loop."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    split = data.splits["train"]
    images = torch.tensor(split.inputs).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    labels = torch.tensor(split.labels, dtype=torch.long)
    if model_name == "mlp":
        images = images.flatten(1)
        net = nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        )
    else:
        net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * 2 * 64, 128), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(128, 10),
        )  # fmt: skip
    loader = DataLoader(TensorDataset(images, labels), batch_size=batch, shuffle=True,
                        drop_last=True)  # fmt: skip
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def epoch() -> int:
        net.train()
        seen = 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            optimizer.step()
            seen += len(x)
        return seen

    epoch()  # warm-up
    started = time.perf_counter()
    examples = sum(epoch() for _ in range(EPOCHS))
    return examples / (time.perf_counter() - started)


def first_step_seconds(cache: Path, runs: Path) -> tuple[float, float]:
    """(first step incl. compilation, process wall time) of a one-epoch default run."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "jaxtrain", "train", "configs/digits_cnn.yaml",
         "train.epochs=1", "--runs-dir", str(runs), "--no-progress"],
        cwd=ROOT, env={**os.environ, "JAXTRAIN_CACHE_DIR": str(cache)}, check=True,
        capture_output=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    newest = max((runs / "digits_cnn").iterdir())
    metrics = json.loads((newest / "metrics.json").read_text())
    return metrics["training"]["compile_s"], wall


def main() -> None:
    config = load_config_text(CONFIG.format(batch=32, model=MODELS["mlp"]))
    data = prepare_data(config.data)
    peak = cost.measure_matmul_peak()
    print(f"devices: {jax.devices()}; cores: {os.cpu_count()}; EPOCHS={EPOCHS}")
    print(f"float32 matmul peak (1024x1024, measured now): {peak / 1e9:.1f} GFLOP/s")
    header = (
        f"{'model':5} {'batch':>5} {'per-step ex/s':>14} {'fused ex/s':>11} "
        f"{'pytorch ex/s':>13} {'fused/step':>10} {'fused/torch':>11} {'step/torch':>10} "
        f"{'step %peak':>10} {'fused %peak':>11} {'bare %peak':>10}"
    )
    print(header)
    headline = None
    for model_name in MODELS:
        for batch in BATCHES:
            ours = jax_runs(model_name, batch, data)
            theirs = torch_run(model_name, batch, data)
            bare = "-"
            if model_name == "mlp":
                steps = len(data.splits["train"]) // batch
                bare = f"{100 * bare_mlp_flops(batch, steps) / peak:.1f}%"
            print(
                f"{model_name:5} {batch:5d} {ours['step']:14,.0f} {ours['fused']:11,.0f} "
                f"{theirs:13,.0f} {ours['fused'] / ours['step']:10.2f} "
                f"{ours['fused'] / theirs:11.2f} {ours['step'] / theirs:10.2f} "
                f"{100 * ours['step_flops'] / peak:9.1f}% "
                f"{100 * ours['fused_flops'] / peak:10.1f}% {bare:>10}"
            )
            if model_name == "mlp" and batch == 32:
                headline = ours["fused"] / theirs
    with tempfile.TemporaryDirectory() as tmp:
        cold = first_step_seconds(Path(tmp) / "cache", Path(tmp) / "runs")
        warm = first_step_seconds(Path(tmp) / "cache", Path(tmp) / "runs")
    print(
        f"time to first step, jaxtrain train configs/digits_cnn.yaml: cold cache "
        f"{cold[0]:.2f} s (process {cold[1]:.1f} s), warm cache {warm[0]:.2f} s "
        f"(process {warm[1]:.1f} s): first_step_cold_vs_warm: {cold[0] / warm[0]:.2f}"
    )
    print(f"fused_vs_pytorch: {headline:.2f}")


def load_config_text(text: str):
    """A config from YAML text (read through a file, as the CLI reads it)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(text)
        return load_config(path)


if __name__ == "__main__":
    main()
