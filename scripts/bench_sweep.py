"""Benchmark a vmapped sweep against running its members one after another.

Run: ``.venv/bin/python scripts/bench_sweep.py``. The digits MLP (hidden width 32, then 256),
AdamW with a cosine schedule, batch 32, ``EPOCHS`` (5) epochs, validation every epoch; 32
learning rates log-spaced in [1e-4, 3e-2], trained three ways:

(a) 32 standalone runs, one after another, through ``jaxtrain.runner.train`` (each: data,
    init, compile, the host loop, per-epoch validation, checkpoints, test evaluation,
    report); at width 256 only 8 of them run and the time is scaled to 32 (printed as such);
(b) 32 fused single runs, one after another: one member's jitted ``lax.scan`` over an epoch
    with the data on the device, per-epoch jitted validation (compiled once, reused: the
    learning rate is a number in the state); data preparation is done once, outside the timing;
(c) one vmapped sweep through ``jaxtrain.sweep.run_sweep`` end to end (data, compile, training,
    per-epoch validation of every member, population checkpoints, best-member checkpoint,
    test evaluation, CSV/JSON, plots, report).

Then (c) with 128 and 512 members. Examples/second per member = one member's training
examples over the wall time. Its line is ``sweep_vs_standalone: X.XX``, (a)/(c) at width 32
with 32 members.

Then a model-based search, 64 trials of TPE over learning rate and weight decay (log-uniform)
on the width-32 MLP, three ways:

(d) batched: ``jaxtrain sweep`` with ``method: tpe, batch: 8, rounds: 8`` end to end (each
    round: 8 trials asked, trained as one vmapped population, told; study in SQLite,
    checkpoints, best member, report, importance);
(e) sequential, Optuna's ordinary loop: ``study.optimize(objective, n_trials=64)`` with the
    same TPE sampler, the objective training one trial with ``jaxtrain.runner.train`` (the
    same model, data and step; the analysis stage skipped) and returning its best validation
    accuracy;
(f) sequential, fastest form: the same ``study.optimize`` whose objective runs the fused
    single-member program of (b) (compiled once, data on the device).

The last line is ``batched_vs_sequential: X.XX``, (e)/(d). ``--search-only`` runs only
(d)-(f).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxtrain.config import load_config  # noqa: E402
from jaxtrain.data import prepare_data  # noqa: E402
from jaxtrain.runner import train  # noqa: E402
from jaxtrain.sweep import run_sweep  # noqa: E402
from jaxtrain.sweep.population import eval_arrays, train_orders, with_hyperparams  # noqa: E402
from jaxtrain.train import build_pieces, make_eval_step, make_train_step  # noqa: E402
from jaxtrain.train.state import create_train_state  # noqa: E402

EPOCHS = 5
STANDALONE_AT_256 = 8  # (a) at width 256 is measured on 8 runs and scaled to 32 (printed)
CONFIG = """
name: bench_sweep
seed: 0
data: {{name: digits, batch_size: 32}}
model: {{name: mlp, hidden: [{width}]}}
optimizer: {{name: adamw, learning_rate: 0.003, schedule: {{name: cosine, warmup_steps: 20}}}}
train: {{epochs: {epochs}, log_every: 10, checkpoint: {{keep: 1}}}}
"""


def learning_rates(k: int) -> list[float]:
    return [float(v) for v in np.geomspace(1e-4, 3e-2, k)]


def write_config(directory: Path, width: int) -> Path:
    path = directory / f"mlp{width}.yaml"
    path.write_text(CONFIG.format(width=width, epochs=EPOCHS))
    return path


def standalone(path: Path, runs: Path, rates: list[float]) -> float:
    started = time.perf_counter()
    for lr in rates:
        train(path, [f"optimizer.learning_rate={lr}"], runs_dir=runs, progress=False)
    return time.perf_counter() - started


def _fused_programs(path: Path):
    """The fused single-member programs of (b) for ``path``: ``(config, data, pieces,
    steps_per_epoch, epoch, evaluate)``; ``epoch(state, first_step)`` scans one epoch,
    ``evaluate(state)`` sums the validation metrics (both jitted, compiled on first call)."""
    config = load_config(path)
    data = prepare_data(config.data)
    pieces = build_pieces(config, data)
    n, batch = len(data.splits["train"]), config.data.batch_size
    steps_per_epoch = n // batch
    order = jnp.asarray(train_orders(n, batch, config.train.epochs, [config.data.seed])[0])
    inputs = jnp.asarray(data.splits["train"].inputs)
    labels = jnp.asarray(data.splits["train"].labels)
    validation = jax.tree.map(
        lambda x: jnp.asarray(x[0]), eval_arrays([data.splits["validation"]], 512)
    )
    step = make_train_step(pieces.model, pieces.tx, pieces.task)
    eval_step = make_eval_step(pieces.model, pieces.task)

    @jax.jit
    def epoch(state, first):
        def body(state, t):
            rows = order[t]
            return step(state, {"inputs": inputs[rows], "labels": labels[rows]})

        return jax.lax.scan(body, state, first + jnp.arange(steps_per_epoch))

    @jax.jit
    def evaluate(state):
        def body(totals, batch):
            return jax.tree.map(jnp.add, totals, eval_step(state, batch)), None

        first = eval_step(state, jax.tree.map(lambda x: x[0], validation))
        return jax.lax.scan(body, first, jax.tree.map(lambda x: x[1:], validation))[0]

    return config, data, pieces, steps_per_epoch, epoch, evaluate


def fused(path: Path, rates: list[float]) -> float:
    config, data, pieces, steps_per_epoch, epoch, evaluate = _fused_programs(path)
    started = time.perf_counter()
    for lr in rates:
        state = create_train_state(pieces.model, pieces.tx, data.input_shape, config.seed)
        state = with_hyperparams(state, {"peak_learning_rate": lr})
        for e in range(config.train.epochs):
            state, _ = epoch(state, jnp.int32(e * steps_per_epoch))
            jax.device_get(evaluate(state))
    return time.perf_counter() - started


def fused_objective(path: Path):
    """``objective(lr, wd) -> best validation accuracy``: one member trained by the fused
    single-member program of (b), compiled once."""
    config, data, pieces, steps_per_epoch, epoch, evaluate = _fused_programs(path)

    def objective(lr: float, wd: float) -> float:
        state = create_train_state(pieces.model, pieces.tx, data.input_shape, config.seed)
        state = with_hyperparams(state, {"peak_learning_rate": lr, "weight_decay": wd})
        best = 0.0
        for e in range(config.train.epochs):
            state, _ = epoch(state, jnp.int32(e * steps_per_epoch))
            sums = pieces.task.finalize(jax.device_get(evaluate(state)))
            best = max(best, float(sums["accuracy"]))
        return best

    return objective


SEARCH_TRIALS, SEARCH_BATCH = 64, 8
SEARCH_AXES = (
    "{optimizer.learning_rate: {distribution: log_uniform, low: 0.0001, high: 0.03}, "
    "optimizer.weight_decay: {distribution: log_uniform, low: 0.000001, high: 0.01}}"
)


def batched_search(path: Path, runs: Path) -> tuple[float, float]:
    """(d): wall time and best validation accuracy of the TPE search in rounds."""
    rounds = SEARCH_TRIALS // SEARCH_BATCH
    sweep = f"sweep={{method: tpe, batch: {SEARCH_BATCH}, rounds: {rounds}, axes: {SEARCH_AXES}}}"
    config = load_config(path, [sweep])
    run_dir = Path(tempfile.mkdtemp(dir=runs))
    started = time.perf_counter()
    result = run_sweep(config, run_dir, progress=False)
    return time.perf_counter() - started, result["best"]["validation"]["accuracy"]


def sequential_search(objective) -> tuple[float, float]:
    """(e)/(f): ``study.optimize`` with the same TPE sampler, one trial at a time."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))

    def trial_objective(trial) -> float:
        lr = trial.suggest_float("optimizer.learning_rate", 1e-4, 3e-2, log=True)
        wd = trial.suggest_float("optimizer.weight_decay", 1e-6, 1e-2, log=True)
        return objective(lr, wd)

    started = time.perf_counter()
    study.optimize(trial_objective, n_trials=SEARCH_TRIALS)
    return time.perf_counter() - started, study.best_value


def train_objective(path: Path, runs: Path):
    """``objective(lr, wd)``: one ``jaxtrain.runner.train`` run, its best validation accuracy."""

    def objective(lr: float, wd: float) -> float:
        overrides = [f"optimizer.learning_rate={lr}", f"optimizer.weight_decay={wd}"]
        result = train(path, overrides, runs_dir=runs, progress=False, report=False)
        lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        return max(r["accuracy"] for r in records if r.get("split") == "validation")

    return objective


def search_comparison(tmp: Path) -> float:
    path = write_config(tmp, 32)
    d, d_best = batched_search(path, tmp / "runs")
    e, e_best = sequential_search(train_objective(path, tmp / "runs"))
    f, f_best = sequential_search(fused_objective(path))
    print(
        f"TPE search, {SEARCH_TRIALS} trials, width 32, {EPOCHS} epochs: (d) batched "
        f"{SEARCH_TRIALS // SEARCH_BATCH} rounds x {SEARCH_BATCH} {d:.1f} s (best val acc "
        f"{d_best:.4f}); (e) study.optimize + jaxtrain train {e:.1f} s ({e_best:.4f}); "
        f"(f) study.optimize + fused program {f:.1f} s ({f_best:.4f})"
    )
    print(f"  e/d {e / d:.2f}x, f/d {f / d:.2f}x")
    return e / d


def vmapped(path: Path, runs: Path, rates: list[float]) -> tuple[float, dict]:
    config = load_config(path, [f"sweep.axes={{optimizer.learning_rate: {rates}}}"])
    run_dir = Path(tempfile.mkdtemp(dir=runs))
    started = time.perf_counter()
    result = run_sweep(config, run_dir, progress=False)
    return time.perf_counter() - started, result


def main() -> None:
    search_only = "--search-only" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("JAXTRAIN_DATA_DIR", str(tmp / "tfds"))
        (tmp / "runs").mkdir()
        if search_only:
            print(f"devices: {jax.devices()}")
            print(f"batched_vs_sequential: {search_comparison(tmp):.2f}")
            return
        n = len(prepare_data(load_config(write_config(tmp, 32)).data).splits["train"])
        examples = EPOCHS * (n // 32) * 32  # one member's training examples
        print(f"devices: {jax.devices()}; {EPOCHS} epochs x {n // 32} steps x batch 32")
        ratio_32 = None
        for width in (32, 256):
            path = write_config(tmp, width)
            rates = learning_rates(32)
            if width == 32:
                a = standalone(path, tmp / "runs", rates)
            else:
                measured = standalone(path, tmp / "runs", rates[:: 32 // STANDALONE_AT_256])
                a = measured * 32 / STANDALONE_AT_256
                print(
                    f"  (a) at width {width}: {STANDALONE_AT_256} standalone runs measured "
                    f"({measured:.1f} s), scaled x{32 // STANDALONE_AT_256} to 32 runs"
                )
            b = fused(path, rates)
            c, result = vmapped(path, tmp / "runs", rates)
            best = result["best"]
            print(
                f"width {width}, 32 members: (a) standalone {a:.1f} s, (b) fused {b:.1f} s, "
                f"(c) vmapped sweep {c:.1f} s | a/c {a / c:.2f}x, b/c {b / c:.2f}x"
            )
            print(
                f"  examples/s per member: (a) {examples / a:.0f}, (b) {examples / b:.0f}, "
                f"(c) {examples / c:.0f}; best lr {best['settings']['optimizer.learning_rate']:.4g}"
                f" val acc {best['validation']['accuracy']:.4f}"
            )
            if width == 32:
                ratio_32 = a / c
            for k in (128, 512):
                c_k, _ = vmapped(path, tmp / "runs", learning_rates(k))
                print(
                    f"  width {width}, {k} members vmapped: {c_k:.1f} s, examples/s per member "
                    f"{examples / c_k:.0f} (all members {examples * k / c_k:.0f})"
                )
        print(f"sweep_vs_standalone: {ratio_32:.2f}")
        print(f"batched_vs_sequential: {search_comparison(tmp):.2f}")


if __name__ == "__main__":
    main()
