"""Vmapped sweeps: member i equals its standalone run, the search space, halving, PBT, exact
resume, outputs, and a population sharded over 8 devices.

Tolerance for member-vs-standalone parameters: atol 1e-6 (measured differences <= 1e-7 after
two epochs of AdamW on the digits MLP, parameters of size ~0.5): the vmapped program batches
the same float32 arithmetic, so only the order of a few reductions may differ. A wrong data
order, seed or learning rate moves parameters by > 1e-3.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxtrain.config import ConfigError, load_config
from jaxtrain.runner import evaluate_run, train
from jaxtrain.sweep import expand, run_sweep
from jaxtrain.sweep import runner as sweep_runner
from jaxtrain.sweep.space import draw
from tests.support import ROOT, forced_devices

ATOL = 1e-6

BASE = """
name: tiny_sweep
seed: 0
data: {name: digits, batch_size: 32}
model: {name: mlp, hidden: [16]}
optimizer: {name: adamw, learning_rate: 0.003, schedule: {name: cosine, warmup_steps: 5}}
train: {epochs: 2, log_every: 10, checkpoint: {async_save: false}}
"""


def _write(tmp: Path, sweep: str, name: str = "sweep.yaml") -> Path:
    path = tmp / name
    path.write_text(BASE + sweep)
    return path


def _run(path: Path, tmp: Path, overrides=(), **kwargs) -> dict:
    run_dir = tmp / "sweep_run"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_sweep(load_config(path, list(overrides)), run_dir, progress=False, **kwargs)


def _params_of(result: dict, member: int):
    population = result["populations"][0]
    position = population["members"].index(member)
    return jax.tree.map(lambda x: np.asarray(x[position]), population["state"].params)


def _max_difference(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("grid")
    path = _write(
        tmp,
        """
sweep:
  axes:
    optimizer.learning_rate: [0.001, 0.01]
    seed: [0, 1]
    data.seed: [0, 3]
""",
    )
    return tmp, path, _run(path, tmp)


@pytest.mark.slow
def test_member_of_a_vmapped_sweep_equals_its_standalone_run(grid) -> None:
    tmp, path, result = grid
    for member in (0, 7):  # (lr 1e-3, seed 0, data.seed 0) and (lr 1e-2, seed 1, data.seed 3)
        settings = result["members"][member]["settings"]
        overrides = [f"{k}={v}" for k, v in settings.items()] + ["sweep=null"]
        alone = train(path, overrides, runs_dir=tmp / "runs", progress=False)
        assert alone.step == result["members"][member]["step"]
        assert _max_difference(alone.state.params, _params_of(result, member)) <= ATOL
        validation = json.loads((alone.run_dir / "metrics.json").read_text())["validation"]
        history = result["members"][member]["history"][-1]
        assert history["validation_loss"] == pytest.approx(validation["loss"], abs=1e-5)
    # and the members really differ (so the comparison above could fail)
    assert _max_difference(_params_of(result, 0), _params_of(result, 7)) > 1e-2


def test_sweep_directory_holds_rows_plots_report_and_best_checkpoint(grid) -> None:
    _, _, result = grid
    run_dir = Path(result["run_dir"])
    with (run_dir / "members.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and {r["status"] for r in rows} == {"finished"}
    assert set(rows[0]) >= {
        "member",
        "optimizer.learning_rate",
        "seed",
        "data.seed",
        "best_accuracy",
        "best_step",
        "step",
    }
    stored = json.loads((run_dir / "members.json").read_text())
    assert stored["best"]["member"] == result["best"]["member"]
    best_value = max(float(r["best_accuracy"]) for r in rows)
    assert result["best"]["validation"]["accuracy"] == pytest.approx(best_value)
    for name in ("report.md", "sweep_settings.png", "sweep_curves.png"):
        assert (run_dir / name).stat().st_size > 0
    # best/ is an ordinary run directory: `jaxtrain eval` re-evaluates the best member
    evaluated = evaluate_run(run_dir / "best")
    assert evaluated["step"] == result["best"]["step"]
    assert evaluated["validation"]["accuracy"] == pytest.approx(best_value)
    assert evaluated["test"]["accuracy"] == pytest.approx(result["best"]["test"]["accuracy"])


def test_grid_is_the_product_and_random_search_is_seeded(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "sweep: {axes: {seed: [0, 1, 2], data.seed: [0, 1]}}"))
    assert len(draw(config.sweep)) == 6
    random = """
sweep:
  samples: 50
  seed: 3
  axes:
    optimizer.learning_rate: {distribution: log_uniform, low: 0.0001, high: 0.1}
    optimizer.weight_decay: {distribution: uniform, low: 0.0, high: 0.01}
    seed: {distribution: int_uniform, low: 0, high: 9}
    model.hidden: [[8], [16]]
"""
    config = load_config(_write(tmp_path, random))
    members = draw(config.sweep)
    assert members == draw(config.sweep) and len(members) == 50
    rates = np.array([m["optimizer.learning_rate"] for m in members])
    assert rates.min() >= 1e-4 and rates.max() <= 0.1 and np.median(rates) < 0.01  # log scale
    assert {m["seed"] for m in members} <= set(range(10))
    groups = expand(config)  # widths change shapes: one program per width
    assert sorted(g.static["model.hidden"][0] for g in groups) == [8, 16]
    assert sum(len(g.members) for g in groups) == 50


def test_sweep_mistakes_fail_before_training_naming_the_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "sweep: {axes: {optimizer.learning_rate: {distribution: uniform, low: 0.1, high: 0.2}}}",
    )
    with pytest.raises(ConfigError, match="sweep.samples"):
        load_config(path)
    with pytest.raises(ConfigError, match="low"):
        load_config(path, ["sweep.samples=4", "sweep.axes.optimizer.learning_rate.low=0.3"])
    with pytest.raises(ConfigError, match=r"sweep.axes.optimizer.momentum\[0\].*unknown key"):
        load_config(_write(tmp_path, "sweep: {axes: {optimizer.momentum: [0.9]}}"))
    # Each value fits alone; only the combination does not (30 % 4): found on expansion.
    combined = "sweep: {axes: {data.batch_size: [30], train.micro_batches: [4]}}"
    config = load_config(_write(tmp_path, combined))
    with pytest.raises(ConfigError, match=r"sweep member 0.*train.micro_batches"):
        expand(config)


def test_successive_halving_keeps_the_best_half_at_each_rung(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
sweep:
  axes: {optimizer.learning_rate: [0.0001, 0.0003, 0.003, 0.01]}
  halving: {rungs: [1], keep: 0.5}
""",
    )
    result = _run(path, tmp_path)
    rows = result["members"]
    finished = [r for r in rows if r["status"] == "finished"]
    stopped = [r for r in rows if r["status"] == "stopped at rung 1"]
    assert len(finished) == len(stopped) == 2
    assert len(result["populations"][0]["members"]) == 2  # compacted: dropped ones are gone
    rung_step = stopped[0]["step"]
    assert finished[0]["step"] > rung_step
    at_rung = [
        next(h["validation_accuracy"] for h in r["history"] if h["step"] == rung_step) for r in rows
    ]
    kept = [at_rung[r["member"]] for r in finished]
    assert min(kept) >= max(at_rung[r["member"]] for r in stopped)


def test_pbt_copies_a_better_member_and_perturbs_its_hyperparameters(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
sweep:
  axes: {optimizer.learning_rate: [0.0001, 0.001, 0.003, 0.01]}
  pbt: {every: 1, fraction: 0.25, perturb: [0.5, 2.0]}
""",
    )
    rows = _run(path, tmp_path, ["train.epochs=3"])["members"]
    events = [(r, e) for r in rows for e in r["pbt"]]
    assert len(events) == 2  # after epochs 1 and 2, one member each time
    for row, event in events:
        source = rows[event["copied"]]
        assert event["copied"] != row["member"]
        assert event["step"] in [h["step"] for h in source["history"]]
    for row, event in events:
        source = rows[event["copied"]]
        if not [e for e in source["pbt"] if e["step"] <= event["step"]]:  # source unperturbed
            ratio = event["peak_learning_rate"] / source["settings"]["optimizer.learning_rate"]
            assert ratio == pytest.approx(0.5, rel=1e-5) or ratio == pytest.approx(2.0, rel=1e-5)
        last = row["pbt"][-1]
        assert row["hyperparams"]["peak_learning_rate"] == pytest.approx(
            last["peak_learning_rate"], rel=1e-6
        )
    assert {r["status"] for r in rows} == {"finished"}


def test_resumed_sweep_ends_exactly_like_an_uninterrupted_one(tmp_path, monkeypatch) -> None:
    path = _write(tmp_path, "sweep: {axes: {optimizer.learning_rate: [0.001, 0.01]}}")
    overrides = ["train.epochs=1", "train.eval_every=10"]  # 4 evaluations of 2 members
    whole = _run(path, tmp_path / "whole", overrides)

    calls = {"n": 0}
    original = sweep_runner.scalars

    def interrupt_in_third_evaluation(metrics):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(metrics)

    monkeypatch.setattr(sweep_runner, "scalars", interrupt_in_third_evaluation)
    with pytest.raises(KeyboardInterrupt):
        _run(path, tmp_path / "cut", overrides)
    monkeypatch.setattr(sweep_runner, "scalars", original)
    resumed = _run(path, tmp_path / "cut", overrides, resume=True)
    for member in (0, 1):
        assert _max_difference(_params_of(whole, member), _params_of(resumed, member)) == 0.0
        assert resumed["members"][member]["history"] == whole["members"][member]["history"]


EIGHT_DEVICES = """
import json, sys
from pathlib import Path
import jax, numpy as np
from jaxtrain.config import load_config
from jaxtrain.sweep import run_sweep
out = run_sweep(load_config(sys.argv[1], ["train.epochs=1"]), Path(sys.argv[2]), progress=False)
state = out["populations"][0]["state"]
leaf = jax.tree.leaves(state.params)[0]
np.savez(sys.argv[3], *[np.asarray(x) for x in jax.tree.leaves(state.params)])
print(json.dumps({"devices": len(leaf.sharding.device_set), "local": jax.device_count()}))
"""


@pytest.mark.slow
def test_population_is_sharded_over_eight_devices_and_unchanged(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "sweep: {axes: {optimizer.learning_rate: [0.001, 0.002, 0.003, "
        "0.004, 0.005, 0.006, 0.007, 0.008], seed: [0, 1]}}",
    )
    (tmp_path / "eight").mkdir()
    env = {
        **os.environ,
        "XLA_FLAGS": forced_devices(8),
        "JAX_PLATFORMS": "cpu",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            EIGHT_DEVICES,
            str(path),
            str(tmp_path / "eight"),
            str(tmp_path / "eight.npz"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"devices": 8, "local": 8}  # 16 members, 2 per device
    single = _run(path, tmp_path / "one", ["train.epochs=1"])
    leaves = jax.tree.leaves(single["populations"][0]["state"].params)
    sharded = np.load(tmp_path / "eight.npz")
    for i, leaf in enumerate(leaves):
        np.testing.assert_allclose(sharded[f"arr_{i}"], np.asarray(leaf), atol=ATOL, rtol=0)


@pytest.mark.slow
def test_shipped_sweep_config_runs_shortened(tmp_path: Path) -> None:
    shortened = [
        "train.epochs=1",
        "model.features=[4]",
        "model.dense=8",
        "sweep.samples=2",
        "sweep.halving=null",
    ]
    result = _run(ROOT / "configs" / "digits_lr_sweep.yaml", tmp_path, shortened)
    assert [r["status"] for r in result["members"]] == ["finished", "finished"]


SIDE_BY_SIDE = """
import json, sys
from pathlib import Path
import jax, numpy as np
from jaxtrain.config import load_config
from jaxtrain.sweep import run_sweep
out = run_sweep(load_config(sys.argv[1], ["train.epochs=1"]), Path(sys.argv[2]), progress=False)
report, arrays = {}, {}
for index, population in out["populations"].items():
    leaves = jax.tree.leaves(population["state"].params)
    devices = sorted(d.id for d in leaves[0].sharding.device_set)
    report[index] = {"devices": devices, "started": population["started"],
                     "ended": population["ended"], "members": population["members"]}
    for i, leaf in enumerate(leaves):
        arrays[f"g{index}_{i}"] = np.asarray(leaf)
np.savez(sys.argv[3], **arrays)
print(json.dumps(report))
"""


@pytest.mark.slow  # ~30 s: a subprocess on 8 forced devices and the one-device sweep
def test_groups_of_different_shapes_train_side_by_side_on_eight_devices(tmp_path) -> None:
    """Two widths (two programs) on 8 devices: each group on its own 4 devices, at the same
    time (threads, one per lane), every member equal to the one-device sweep."""
    path = _write(
        tmp_path,
        "sweep: {axes: {model.hidden: [[8], [16]], optimizer.learning_rate: "
        "[0.001, 0.002, 0.003, 0.004]}}",
    )
    (tmp_path / "eight").mkdir()
    env = {
        **os.environ,
        "XLA_FLAGS": forced_devices(8),
        "JAX_PLATFORMS": "cpu",
    }
    args = [str(path), str(tmp_path / "eight"), str(tmp_path / "eight.npz")]
    done = subprocess.run(
        [sys.executable, "-c", SIDE_BY_SIDE, *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["0"]["devices"] == [0, 1, 2, 3] and report["1"]["devices"] == [4, 5, 6, 7]
    first, second = report["0"], report["1"]
    assert first["started"] < second["ended"] and second["started"] < first["ended"]  # overlap
    single = _run(path, tmp_path / "one", ["train.epochs=1"])
    sharded = np.load(tmp_path / "eight.npz")
    for index, population in single["populations"].items():
        assert population["members"] == report[str(index)]["members"]
        for i, leaf in enumerate(jax.tree.leaves(population["state"].params)):
            np.testing.assert_allclose(
                sharded[f"g{index}_{i}"], np.asarray(leaf), atol=ATOL, rtol=0
            )
    assert (
        single["best"]["member"]
        == json.loads((tmp_path / "eight" / "members.json").read_text())["best"]["member"]
    )
