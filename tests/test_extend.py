"""Extending a run honestly: ``--resume RUN train.epochs=N`` adds a stage whose learning
rate continues or restarts as the user picks, and earlier results are kept."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxtrain.config import ConfigError, ScheduleConfig, load_config
from jaxtrain.config.schema import AdamWConfig
from jaxtrain.runner.stages import begin_stage, plan_extension
from jaxtrain.train.extend import Extension
from jaxtrain.train.optim import build_optimizer

PEAK, WARMUP, FIRST, ADDED = 0.1, 3, 10, 8

TINY = """
name: tiny_extend
data: {name: iris, batch_size: 16}
model: {name: mlp, hidden: [8]}
optimizer: {name: adamw, learning_rate: 0.01, schedule: {name: cosine, warmup_steps: 2}}
train: {epochs: 2, log_every: 2}
"""


def _rates(schedule: ScheduleConfig, extensions, steps: int) -> np.ndarray:
    """The rate each update used, read from the optimizer state (the wiring under test)."""
    tx = build_optimizer(
        AdamWConfig(learning_rate=PEAK, schedule=schedule), FIRST, extensions=extensions
    )
    params = {"w": jnp.zeros(2)}
    state, rates = tx.init(params), []
    for _ in range(steps):
        _, state = tx.update({"w": jnp.zeros(2)}, state, params)
        rates.append(float(state.hyperparams["learning_rate"]))
    return np.asarray(rates)


def _cosine_by_hand(count: int, length: int) -> float:
    """Linear warmup then cosine to 0 over ``length`` steps (the closed form)."""
    if count < WARMUP:
        return PEAK * count / WARMUP
    t = min(count - WARMUP, length - WARMUP) / (length - WARMUP)
    return PEAK * 0.5 * (1 + math.cos(math.pi * t))


def test_restart_runs_the_schedule_again_and_continue_holds_its_end() -> None:
    cosine = ScheduleConfig(name="cosine", warmup_steps=WARMUP, final_fraction=0.0)
    total = FIRST + ADDED
    restarted = _rates(cosine, [Extension(FIRST, total, "restart")], total)
    expected = [_cosine_by_hand(c, FIRST) for c in range(FIRST)]
    expected += [_cosine_by_hand(c - FIRST, ADDED) for c in range(FIRST, total)]
    np.testing.assert_allclose(restarted, expected, rtol=1e-6, atol=1e-9)
    # Stage 1 is untouched: the same rates as the run that was never extended.
    np.testing.assert_allclose(restarted[:FIRST], _rates(cosine, [], FIRST), rtol=1e-7)

    decaying = ScheduleConfig(name="cosine", warmup_steps=WARMUP, final_fraction=0.2)
    held = _rates(decaying, [Extension(FIRST, total, "continue")], total)
    np.testing.assert_allclose(held[FIRST:], 0.2 * PEAK, rtol=1e-6)
    np.testing.assert_allclose(held[:FIRST], _rates(decaying, [], FIRST), rtol=1e-7)

    # A second extension continues from wherever the first one ended.
    twice = _rates(
        decaying, [Extension(FIRST, total, "restart"), Extension(total, total + 4, "continue")],
        total + 4,
    )  # fmt: skip
    np.testing.assert_allclose(twice[total:], 0.2 * PEAK, rtol=1e-6)


def _configs(tmp_path: Path, **changes):
    path = tmp_path / "c.yaml"
    path.write_text(TINY)
    before = load_config(path)
    after = load_config(path, [f"train.{k}={v}" for k, v in changes.items()])
    return before, after


def test_a_decaying_schedule_asks_what_to_do_and_shortening_is_refused(tmp_path: Path) -> None:
    before, after = _configs(tmp_path, epochs=4)
    with pytest.raises(ConfigError, match=r"say what the rate does.*continue \(nothing would"):
        plan_extension(tmp_path, before, after, 12, 24, final_rate=0.0)
    _, held = _configs(tmp_path, epochs=4, extend_schedule="continue")
    with pytest.raises(ConfigError, match="would hold the learning rate at 0"):
        plan_extension(tmp_path, before, held, 12, 24, final_rate=0.0)
    _, shorter = _configs(tmp_path, epochs=1)
    with pytest.raises(ConfigError, match="can only be extended"):
        plan_extension(tmp_path, before, shorter, 12, 6, final_rate=0.0)
    assert plan_extension(tmp_path, before, before, 12, 12, final_rate=0.0) is None
    _, restarted = _configs(tmp_path, epochs=4, extend_schedule="restart")
    stages = plan_extension(tmp_path, before, restarted, 12, 24, final_rate=0.0)
    assert [(s["start_step"], s["end_step"], s["schedule"]) for s in stages] == [
        (0, 12, None), (12, 24, "restart")]  # fmt: skip


def test_a_new_stage_moves_the_finished_stage_results_aside(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text('{"test": {"accuracy": 0.5}}')
    (tmp_path / "report.md").write_text("# stage 1")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 1}\n')
    before, after = _configs(tmp_path, epochs=4, extend_schedule="restart")
    stages = plan_extension(tmp_path, before, after, 12, 24, final_rate=0.0)
    moved = begin_stage(tmp_path, stages)
    assert moved == tmp_path / "stages" / "1"
    assert json.loads((moved / "metrics.json").read_text()) == {"test": {"accuracy": 0.5}}
    assert (moved / "report.md").read_text() == "# stage 1"
    assert not (tmp_path / "metrics.json").exists()
    assert (tmp_path / "metrics.jsonl").exists()  # one log over every stage
    assert json.loads((tmp_path / "stages.json").read_text())["stages"] == stages


@pytest.mark.slow  # three short runs (~10 s); the tests above pin each piece
def test_extend_keeps_the_first_stage_metrics_and_reports(tmp_path: Path, capsys) -> None:
    from jaxtrain.cli import main
    from jaxtrain.runner import train

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    first = train(config, [], runs_dir=tmp_path / "runs", progress=False)
    run = first.run_dir
    stage_one = (run / "metrics.json").read_bytes()
    report_one = (run / "report.md").read_bytes()
    config_one = (run / "config.yaml").read_bytes()
    # Refused (a decaying schedule must say what it does): exit 2, nothing changed.
    assert main(["train", "--resume", str(run), "train.epochs=4", "--no-progress"]) == 2
    assert "train.extend_schedule" in capsys.readouterr().err
    assert (run / "config.yaml").read_bytes() == config_one
    assert not (run / "stages").exists()
    code = main(["train", "--resume", str(run), "train.epochs=4", "train.extend_schedule=restart",
                 "--no-progress"])  # fmt: skip
    assert code == 0
    assert (run / "stages" / "1" / "metrics.json").read_bytes() == stage_one
    assert (run / "stages" / "1" / "report.md").read_bytes() == report_one
    second = json.loads((run / "metrics.json").read_text())
    assert second["training"]["steps"] == 24 and second["training"]["resumed_from"] == 12
    stages = json.loads((run / "stages.json").read_text())["stages"]
    assert [s["schedule"] for s in stages] == [None, "restart"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["split"] == "train"]
    assert steps == list(range(2, 25, 2))  # stage 1's log kept, stage 2's appended


def test_a_registered_optimizer_extends_its_schedule_like_the_built_ins() -> None:
    import optax

    import jaxtrain
    from jaxtrain import registry
    from jaxtrain.config import validate

    section = {"name": "optax:sgd", "learning_rate": PEAK,
               "schedule": {"name": "cosine", "warmup_steps": WARMUP}}  # fmt: skip
    raw = {"name": "x", "data": {"name": "iris"}, "optimizer": section}
    optimizer = validate(raw, "test").optimizer
    total = FIRST + ADDED
    tx = build_optimizer(optimizer, FIRST, extensions=[Extension(FIRST, total, "restart")])
    params = {"w": jnp.zeros(2)}
    state, rates = tx.init(params), []
    for _ in range(total):
        _, state = tx.update({"w": jnp.zeros(2)}, state, params)
        rates.append(float(state.hyperparams["learning_rate"]))
    expected = [_cosine_by_hand(c, FIRST) for c in range(FIRST)]
    expected += [_cosine_by_hand(c - FIRST, ADDED) for c in range(FIRST, total)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6, atol=1e-9)
    # A ready transformation carries its own schedule: extending it is refused, by name.
    jaxtrain.register_optimizer("ready_sgd", optax.sgd(0.1))
    try:
        ready = validate({**raw, "optimizer": {"name": "ready_sgd"}}, "test").optimizer
        with pytest.raises(ValueError, match="train.extend_schedule: optimizer 'ready_sgd'"):
            build_optimizer(ready, FIRST, extensions=[Extension(FIRST, total, "continue")])
    finally:
        registry.unregister("optimizer", "ready_sgd")
