"""Damaged run directories and bad numbers: each fault injected, each protection checked.

- the same checkpoint step damaged twice is set aside twice, never colliding;
- a run whose checkpoints were all set aside refuses to restart silently (its log kept);
- a damaged run file (data_stats.json, metrics.json) is a one-line error naming it;
- an edited data-iterator position fails its checkpoint's digest;
- Orbax's error text reaches the user as one clean line;
- ``train.nonfinite: stop`` checks every step before any save; ``skip`` counts, warns, and
  gives up when the model is not training; an update that overflows is skipped too;
- metrics.json and the printed summary are strict JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtrain.checkpoint import Checkpoints, CorruptCheckpoint
from jaxtrain.cli import main
from jaxtrain.config import dump_config, load_config
from jaxtrain.data import train_index_batches
from jaxtrain.files import read_json, write_json
from jaxtrain.models import MLP
from jaxtrain.runner import train
from jaxtrain.train import create_train_state, make_train_step, stop_at_step, train_and_evaluate
from jaxtrain.train.loop import NonFiniteError
from tests.support import small_mlp_yaml

FAST = ["train.epochs=1", "train.eval_every=9", "train.log_every=3"]


def _tree(value: float) -> dict:
    return {"w": jnp.full((4,), value), "b": jnp.zeros(2)}


def _truncate(folder: Path) -> None:
    target = max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])


@pytest.mark.slow
def test_the_same_step_damaged_twice_is_set_aside_twice(tmp_path) -> None:
    with Checkpoints(tmp_path) as checkpoints:
        for round_ in range(2):
            checkpoints.save(3, _tree(3.0))
            checkpoints.save(5, _tree(5.0))
            checkpoints.wait()
            _truncate(tmp_path / "5" / "state")
            step, state = checkpoints.restore_latest_good(_tree(0.0))
            assert step == 3 and float(state["w"][0]) == 3.0
            for old in checkpoints.all_steps():  # as a fresh run would, start again
                (tmp_path / str(old)).rename(tmp_path / f"kept-{round_}-{old}")
            checkpoints._manager.reload()
    assert (tmp_path / "5.damaged").is_dir() and (tmp_path / "5.damaged-2").is_dir()


def test_a_run_with_all_checkpoints_set_aside_is_never_reset(tmp_path, capsys) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(small_mlp_yaml())
    config = load_config(path, FAST)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dump_config(config, run_dir / "config.yaml")
    stopped = train_and_evaluate(
        config, run_dir, callbacks=(stop_at_step(12),), progress=False, report=False
    )
    assert stopped.status == "stopped"
    for folder in (run_dir / "checkpoints").iterdir():
        _truncate(folder / "state")
    log = (run_dir / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    for _ in range(2):  # the first call sets them aside, the second finds none intact
        assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("jaxtrain: error:") and "no checkpoint restores" in err[-1]
        assert (run_dir / "metrics.jsonl").read_bytes() == log  # nothing reset
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"9.damaged", "12.damaged"}


def test_a_damaged_run_file_is_one_line_naming_it(tmp_path, capsys) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(small_mlp_yaml())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(path.read_text())
    stats = run_dir / "data_stats.json"
    stats.write_text('{"normalizer": {"shift": [0.1, ')  # a kill mid-write
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data_stats.json" in err[0] and "damaged" in err[0]
    with pytest.raises(ValueError, match="metrics.json"):
        (run_dir / "metrics.json").write_text("{")
        read_json(run_dir / "metrics.json", "metrics.json")


def test_an_edited_iterator_position_fails_the_digest(tmp_path) -> None:
    def stream():
        return iter(train_index_batches(100, 10, 2, 0))

    iterator = stream()
    for _ in range(5):
        next(iterator)
    with Checkpoints(tmp_path) as checkpoints:
        checkpoints.save(5, _tree(1.0), iterator)
        checkpoints.wait()
        position = tmp_path / "5" / "data" / "process_0-of-1.json"
        record = json.loads(position.read_text())
        assert record["next_index"] == 5
        fresh = stream()
        assert checkpoints.restore(5, _tree(0.0), fresh) is not None
        assert fresh.get_state()["next_index"] == 5
        position.write_text(json.dumps({**record, "next_index": 3}))
        with pytest.raises(CorruptCheckpoint, match="'data' part do not match the digest"):
            checkpoints.restore(5, _tree(0.0), stream())


def test_an_unreadable_checkpoint_is_reported_in_one_clean_line(tmp_path) -> None:
    with Checkpoints(tmp_path) as checkpoints:
        checkpoints.save(2, _tree(1.0))
        checkpoints.wait()
        _truncate(tmp_path / "2" / "state")
        with pytest.raises(CorruptCheckpoint) as caught:
            checkpoints.restore(2, _tree(0.0))
    message = str(caught.value)
    assert "\n" not in message and "<bound method" not in message and "pybind" not in message
    assert message.startswith(str(tmp_path / "2")) and len(message) < 400


def _poison(monkeypatch, config_path: Path, batch_index: int) -> None:
    from jaxtrain.data import pipeline
    from tests.test_evaluation import _poisoned

    monkeypatch.setattr(pipeline._Gather, "__call__", _poisoned(config_path, batch_index))


def test_stop_checks_every_step_before_a_save(tmp_path, monkeypatch) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(small_mlp_yaml())
    overrides = ["train.eval_every=5", "train.log_every=100"]  # saves long before a log point
    _poison(monkeypatch, path, 6)  # batch 6 feeds step 7
    with pytest.raises(NonFiniteError, match="at step 7 .*nothing after it was checkpointed"):
        train(path, overrides, runs_dir=tmp_path / "runs", progress=False)
    run_dir = next((tmp_path / "runs" / "small_mlp").iterdir())
    saved = [int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()]
    assert saved == [5]  # step 10 would have held the bad step's successors: never written


def test_an_update_that_overflows_is_skipped() -> None:
    """A finite loss and gradient times a rate float32 cannot hold (1e39 rounds to inf): the
    update is not finite, so the step keeps the old parameters and says so."""
    model, tx = MLP(hidden=(8,), num_classes=3), optax.sgd(1e39)
    state = create_train_state(model, tx, (5,), 0)
    batch = {"inputs": jnp.ones((4, 5)), "labels": jnp.array([0, 1, 2, 0])}
    new, metrics = jax.jit(make_train_step(model, tx))(state, batch)
    assert float(metrics["nonfinite"]) == 1.0 and math.isfinite(float(metrics["loss"]))
    for old, kept in zip(jax.tree.leaves(state.params), jax.tree.leaves(new.params), strict=True):
        np.testing.assert_array_equal(old, kept)


def test_skip_counts_warns_and_gives_up_when_nothing_trains(tmp_path, capsys) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(small_mlp_yaml())
    overrides = ["train.nonfinite=skip", "optimizer.learning_rate=1e39", *FAST]
    assert main(["train", str(path), *overrides, "--runs-dir", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert "update was skipped (train.nonfinite=skip)" in err  # said at the first skip
    assert "the model is not training" in err  # and the run gave up, exit 1
    run_dir = next((tmp_path / "small_mlp").iterdir())
    assert not (run_dir / "metrics.json").exists()


def test_summaries_are_strict_json(tmp_path, capsys) -> None:
    write_json(tmp_path / "metrics.json", {"test": {"loss": float("nan"), "r2": float("-inf")}})

    def refuse(constant):
        raise ValueError(constant)

    text = (tmp_path / "metrics.json").read_text()
    assert json.loads(text, parse_constant=refuse) == {"test": {"loss": None, "r2": None}}
    from jaxtrain.cli import _headline

    headline = _headline({"loss": float("nan"), "accuracy": 0.5})
    assert json.loads(json.dumps(headline), parse_constant=refuse) == {
        "test_accuracy": 0.5,
        "test_loss": None,
    }
    from jaxtrain.logging.report import _cell

    assert "null in metrics.json" in _cell(float("nan"))
