"""Runs that die, files that rot, configs that lie: each protection fails its test without it.

- kill -9 at random moments (saves are asynchronous) never leaves a checkpoint that resumes
  wrongly: the resumed run ends bitwise equal to an uninterrupted one;
- a truncated or edited newest checkpoint is reported with its folder and resume falls back;
- a run directory in use is refused;
- every mutated config ends in one line naming the key, exit 2, no run directory;
- ``--check-determinism`` compares parameter digests of two identical starts.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxtrain.checkpoint import CorruptCheckpoint, state_digest
from jaxtrain.cli import main
from jaxtrain.config import load_config, strict_yaml
from jaxtrain.runner import RunError, run_lock, train
from jaxtrain.train import stop_at_step, train_and_evaluate
from tests.support import ROOT, small_mlp_yaml

# Frequent validations, hence frequent asynchronous checkpoint saves to land a kill in.
OVERRIDES = ["train.epochs=4", "train.eval_every=7", "train.log_every=7"]


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(small_mlp_yaml())
    return path


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run every interrupted one must equal."""
    tmp = tmp_path_factory.mktemp("straight")
    config = load_config(_config(tmp), OVERRIDES)
    (tmp / "run").mkdir()
    return train_and_evaluate(config, tmp / "run", progress=False, report=False)


def _same(a, b) -> bool:
    return state_digest(a.params) == state_digest(b.params) and state_digest(
        a.opt_state
    ) == state_digest(b.opt_state)


@pytest.mark.parametrize("kill_after_lines", [pytest.param(2, marks=pytest.mark.slow), 5])
def test_kill_9_at_random_moments_then_resume_is_bitwise_exact(
    kill_after_lines, straight, tmp_path
) -> None:
    path = _config(tmp_path)
    command = [
        sys.executable, "-m", "jaxtrain", "train", str(path), *OVERRIDES,
        "--runs-dir", str(tmp_path / "runs"), "--no-progress",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    deadline = time.time() + 180
    jsonl = None
    while time.time() < deadline and process.poll() is None:
        found = list((tmp_path / "runs").glob("small_mlp/*/metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= kill_after_lines:
            jsonl = found[0]
            break
        time.sleep(0.01)
    assert jsonl is not None, "training did not get far enough"
    time.sleep(random.Random(kill_after_lines).uniform(0.0, 0.3))  # anywhere in the next steps
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    run_dir = jsonl.parent
    assert not (run_dir / "metrics.json").exists(), "the kill came too late to test anything"
    resumed = train(None, resume=run_dir, progress=False, report=False)
    assert resumed.status == "finished"
    assert _same(resumed.state, straight.state)


def _stopped_run(tmp_path: Path, at: int):
    """A run stopped (with a checkpoint) at step ``at``, as preemption leaves it."""
    config = load_config(_config(tmp_path), OVERRIDES)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(_plain(config)))))
    result = train_and_evaluate(config, run_dir, callbacks=(stop_at_step(at),), progress=False)
    assert result.status == "stopped"
    return run_dir


def _plain(config):
    from jaxtrain.config import config_to_dict

    return config_to_dict(config)


def _largest_file(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_a_truncated_newest_checkpoint_is_reported_and_resume_falls_back(
    straight, tmp_path, capfd
) -> None:
    run_dir = _stopped_run(tmp_path, at=17)  # checkpoints at 7, 14 (validations) and 17 (stop)
    target = _largest_file(run_dir / "checkpoints" / "17" / "state")
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])
    resumed = train(None, resume=run_dir, progress=False, report=False)
    err = capfd.readouterr().err
    assert "checkpoints/17" in err and "trying an older checkpoint" in err
    assert resumed.status == "finished" and _same(resumed.state, straight.state)
    assert (run_dir / "checkpoints" / "17.damaged").is_dir()  # kept for inspection


def test_an_edited_checkpoint_fails_its_digest(straight, tmp_path, capfd) -> None:
    run_dir = _stopped_run(tmp_path, at=17)
    integrity = run_dir / "checkpoints" / "17" / "integrity" / "metadata"
    record = json.loads(integrity.read_text())
    record["state_sha256"] = "0" * 64  # what any change to the arrays amounts to
    integrity.write_text(json.dumps(record))
    resumed = train(None, resume=run_dir, progress=False, report=False)
    assert "do not match the digest" in capfd.readouterr().err
    assert _same(resumed.state, straight.state)


def test_when_every_checkpoint_is_damaged_resume_says_so(tmp_path) -> None:
    run_dir = _stopped_run(tmp_path, at=9)
    for step in ("7", "9"):
        target = _largest_file(run_dir / "checkpoints" / step / "state")
        target.write_bytes(b"")
    with pytest.raises(CorruptCheckpoint, match="no checkpoint restores intact"):
        train(None, resume=run_dir, progress=False)


def test_a_run_directory_in_use_is_refused(tmp_path) -> None:
    run_dir = _stopped_run(tmp_path, at=9)
    with run_lock(run_dir):
        before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
        with pytest.raises(RunError, match="in use by another jaxtrain process"):
            train(None, ["train.epochs=9"], resume=run_dir, progress=False)
        assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before  # untouched
    assert "epochs: 4" in (run_dir / "config.yaml").read_text()


def test_check_determinism_compares_two_starts(tmp_path, capsys) -> None:
    code = main(["train", str(_config(tmp_path)), "--check-determinism", "12"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["deterministic"] and report["steps"] == 12
    assert report["digests"][0] == report["digests"][1]
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------
# Mutated configs: each mutation is invalid by construction, so every case must end in one
# line naming the key, exit 2, and no run directory.

VALID = yaml.safe_load(small_mlp_yaml())

# key path -> values that break it (wrong type or out of range).
BREAKERS: dict[tuple[str, ...], list] = {
    ("data", "batch_size"): [0, -3, "32", 2.5, [32], None],
    ("data", "validation_fraction"): [1.5, -0.1, "0.1", [0.1]],
    ("data", "name"): ["", 7, ["digits"]],
    ("data", "normalize"): ["zscore", 1, True],
    ("model", "hidden"): [[0], [-4], "32", [1.5], 5],
    ("model", "activation"): ["sigmoid", 3],
    ("optimizer", "learning_rate"): [0, -0.1, "fast", [0.1]],
    ("optimizer", "name"): ["adagrad", 1],
    ("train", "epochs"): [0, -1, "10", 1.5],
    ("train", "eval_every"): [0, "often"],
    ("name",): ["../escape", "a/b", "", 12, "/abs"],
    ("seed",): ["zero", 1.5, [0]],
}


def _set(tree: dict, path: tuple[str, ...], value) -> dict:
    tree = json.loads(json.dumps(tree))
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


mutations = st.one_of(
    st.sampled_from([(path, v) for path, values in BREAKERS.items() for v in values]).map(
        lambda pv: ("value", pv[0], pv[1])
    ),
    st.tuples(
        st.sampled_from([(), ("data",), ("model",), ("optimizer",), ("train",)]),
        st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True),
    ).map(lambda pk: ("unknown", pk[0], pk[1])),
    st.sampled_from(["name: [unclosed", "data: {name: digits", "\t- tab", ": :", "a: b: c"]).map(
        lambda text: ("yaml", (), text)
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(mutation=mutations)
def test_every_mutated_config_is_one_line_exit_2_and_writes_nothing(
    mutation, tmp_path, capsys
) -> None:
    kind, path, value = mutation
    if kind == "unknown":
        node = VALID
        for key in path:
            node = node[key]
        if value in node:
            return  # a real key, not a mutation
        text = yaml.safe_dump(_set(VALID, (*path, value), 1))
        key = ".".join((*path, value))
    elif kind == "value":
        text = yaml.safe_dump(_set(VALID, path, value))
        key = ".".join(path)
    else:
        text, key = value, None
    config = tmp_path / f"mutated-{abs(hash(repr(mutation)))}.yaml"
    config.write_text(text)
    runs = tmp_path / f"runs-{abs(hash(repr(mutation)))}"
    code = main(["train", str(config), "--runs-dir", str(runs), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, (mutation, err)
    assert err.count("\n") == 1 and err.startswith("jaxtrain: error: "), err
    assert str(config) in err and "Traceback" not in err
    if key is not None:
        assert key in err, (key, err)
    assert not runs.exists()


def test_nothing_loads_pickle() -> None:
    sources = list((ROOT / "jaxtrain").rglob("*.py"))
    offenders = [
        str(p.relative_to(ROOT))
        for p in sources
        if "import pickle" in p.read_text() or "pickle.load" in p.read_text()
    ]
    assert offenders == []
    # PyYAML's own yaml.load (strict_yaml.load is the safe loader's subclass, not it).
    unsafe = re.compile(r"(?<![\w.])yaml\.load\(")
    assert not [p for p in sources if unsafe.search(p.read_text())]
    assert issubclass(strict_yaml._Loader, yaml.SafeLoader)


# ---------------------------------------------------------------------------------------
# Bad data: each a clear error naming the key/column, or the documented rule.


def _csv_config(tmp_path: Path, csv: str, extra: str = "") -> Path:
    data = tmp_path / "table.csv"
    data.write_text(csv)
    config = tmp_path / "table.yaml"
    config.write_text(
        f"name: table\ndata: {{name: table, path: {data}, label_column: y, batch_size: 2, "
        f"validation_fraction: 0.2, test_fraction: 0.2{extra}}}\n"
        "model: {name: mlp, hidden: [4]}\n"
    )
    return config


def _rows(n: int, label=lambda i: i % 2) -> str:
    return "a,b,y\n" + "".join(f"{i * 0.5},{i % 3},{label(i)}\n" for i in range(n))


@pytest.mark.parametrize(
    ("csv", "extra", "message"),
    [
        (_rows(30).replace("1.5,", "lots,", 1), "", "column 'a'"),  # a word among numbers
        (_rows(30) + "1,1,7\n", ", class_names: ['0', '1']", "not in the label set"),
        (_rows(30).replace("a,b,y", "a,b,label"), "", "label_column"),  # no such column
        ("a,b,y\n", "", "data"),  # an empty file
        (_rows(30), ", class_names: ['0', '1', '2']", "no example in the training split"),
    ],
    ids=["non-numeric-cell", "label-outside-set", "missing-label-column", "empty", "class-missing"],
)
def test_bad_tables_end_in_one_line_naming_the_problem(csv, extra, message, tmp_path, capsys):
    config = _csv_config(tmp_path, csv, extra)
    code = main(["train", str(config), "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()
