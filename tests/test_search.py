"""Model-based search in rounds (Optuna as the proposer, each round one vmapped population),
conditional spaces, and what the report says the search learned.

References: a trial's told value is the best validation accuracy of the standalone
``jaxtrain train`` run of its settings (the vmapped member equals it, tests/test_sweep.py);
the study is read back with Optuna's own ``optuna.load_study``; a resumed search is compared
with one never stopped; conditional members are checked against the rule written out by hand.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from jaxtrain.cli import main as cli_main
from jaxtrain.config import AdamWConfig, ConfigError, SGDConfig, load_config
from jaxtrain.config import verbs as config_verbs
from jaxtrain.runner import train
from jaxtrain.sweep import expand, run_sweep
from jaxtrain.sweep import runner as sweep_runner
from jaxtrain.sweep import study as studies
from jaxtrain.sweep.results import search_lines
from jaxtrain.sweep.search import best_so_far
from jaxtrain.sweep.space import draw

BASE = """
name: tiny_search
seed: 0
data: {name: digits, batch_size: 64}
model: {name: mlp, hidden: [8]}
optimizer: {name: adamw, learning_rate: 0.003, b1: 0.85}
train: {epochs: 1, eval_every: 9, log_every: 10, checkpoint: {async_save: false}}
"""

# adamw | sgd with momentum: momentum exists only for sgd, b2 only for adamw
CONDITIONAL = """
sweep:
  method: tpe
  batch: 3
  rounds: 2
  seed: 1
  axes:
    optimizer.name: [adamw, sgd]
    optimizer.learning_rate: {distribution: log_uniform, low: 0.001, high: 0.1}
    optimizer.momentum: {distribution: uniform, low: 0.5, high: 0.95, when: {optimizer.name: sgd}}
    optimizer.b2: {choices: [0.99, 0.999], when: {optimizer.name: adamw}}
"""


def _write(tmp: Path, sweep: str, name: str = "search.yaml") -> Path:
    path = tmp / name
    path.write_text(BASE + sweep)
    return path


def _run(path: Path, run_dir: Path, overrides=(), **kwargs) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_sweep(load_config(path, list(overrides)), run_dir, progress=False, **kwargs)


def _trials(run_dir: Path, name: str = "tiny_search") -> list[dict]:
    """The study as Optuna's own loader reads it, reduced to comparable facts."""
    study = optuna.load_study(study_name=name, storage=studies.storage_url(run_dir))
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "value": t.value,
            "intermediate": t.intermediate_values,
            "round": t.user_attrs["round"],
        }
        for t in study.trials
    ]


def _check_member_settings(settings: dict, config) -> None:
    """The conditional rule by hand: sgd members have a momentum and no b2, adamw members a
    b2 and no momentum; the member config is of that kind with exactly those values, and the
    keys both kinds share keep the base config's values."""
    kind = settings["optimizer.name"]
    optimizer = config.optimizer
    assert optimizer.learning_rate == settings["optimizer.learning_rate"]
    if kind == "sgd":
        assert set(settings) == {"optimizer.name", "optimizer.learning_rate", "optimizer.momentum"}
        assert isinstance(optimizer, SGDConfig)
        assert 0.5 <= settings["optimizer.momentum"] <= 0.95
        assert optimizer.momentum == settings["optimizer.momentum"]
        assert optimizer.weight_decay == AdamWConfig().weight_decay  # shared key: the base's
    else:
        assert set(settings) == {"optimizer.name", "optimizer.learning_rate", "optimizer.b2"}
        assert isinstance(optimizer, AdamWConfig)
        assert optimizer.b2 == settings["optimizer.b2"] and optimizer.b1 == 0.85


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    path = _write(tmp, CONDITIONAL)
    return tmp, path, _run(path, tmp / "whole")


def test_conditional_members_of_a_grid_and_a_random_search_are_valid(tmp_path) -> None:
    grid = """
sweep:
  axes:
    optimizer.name: [adamw, sgd]
    optimizer.learning_rate: [0.001, 0.01]
    optimizer.momentum: {choices: [0.5, 0.9], when: {optimizer.name: sgd}}
    optimizer.b2: {choices: [0.99, 0.999], when: {optimizer.name: adamw}}
"""
    groups = expand(load_config(_write(tmp_path, grid)))
    members = [m for g in groups for m in g.members]
    # 2 rates x (2 momenta for sgd + 2 b2 for adamw): each distinct member once
    assert len(members) == 8
    assert len({json.dumps(m.settings, sort_keys=True) for m in members}) == 8
    for member in members:
        _check_member_settings(member.settings, member.config)
    # one program per optimizer family: momentum and b2 vary inside them
    assert sorted(g.static["optimizer.name"] for g in groups) == ["adamw", "sgd"]
    for group in groups:
        assert {m.settings["optimizer.name"] for m in group.members} == {group.static[
            "optimizer.name"]}  # fmt: skip
    random = CONDITIONAL.replace("method: tpe", "samples: 40").replace("  batch: 3\n", "")
    random = random.replace("  rounds: 2\n", "")
    config = load_config(_write(tmp_path, random, "random.yaml"))
    settings = draw(config.sweep)
    assert {s["optimizer.name"] for s in settings} == {"adamw", "sgd"}
    for group in expand(config):
        for member in group.members:
            _check_member_settings(member.settings, member.config)


def test_optuna_asks_only_valid_conditional_settings() -> None:
    config = load_config_text(BASE + CONDITIONAL)
    study = optuna.create_study(direction="maximize")
    for round_ in range(4):  # random startup, then TPE from told trials
        asked = studies.ask_round(study, config.sweep, round_)
        assert len(asked) == 3
        for number, settings in asked:
            member = expand_one(config, number, settings)
            _check_member_settings(settings, member.config)
            study.tell(number, settings["optimizer.learning_rate"])  # any told value


def load_config_text(text: str):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(text)
        return load_config(path)


def expand_one(config, number, settings):
    from jaxtrain.sweep.space import member_of

    return member_of(config, number, settings, "test")


def test_asking_again_after_a_stop_gives_the_same_trials() -> None:
    """The ask is a function of the study's trials and the trial number: a round asked in
    two goes (stopped after one trial) equals a round asked at once, for every sampler."""
    for method in ("tpe", "random"):
        text = BASE + CONDITIONAL.replace("method: tpe", f"method: {method}")
        sweep = load_config_text(text).sweep
        whole, cut = optuna.create_study(), optuna.create_study()
        for round_ in range(3):
            a = studies.ask_round(whole, sweep, round_)
            if round_ == 1:  # the other study stops after the first ask of round 1
                first = a[0]
                cut.sampler = studies.make_sampler(sweep, studies.trial_seed(sweep.seed, 3))
                trial = cut.ask()
                trial.set_user_attr(studies.ROUND, 1)
                assert studies.suggest(trial, sweep) == first[1]
            b = studies.ask_round(cut, sweep, round_)
            assert a == b, method
            for number, settings in a:
                value = float(np.log(settings["optimizer.learning_rate"]) ** 2)
                whole.tell(number, value)
                cut.tell(number, value)
        assert len({json.dumps(s, sort_keys=True) for _, s in a}) == 3  # a batch, not 1 x 3


def test_search_tells_the_study_what_each_member_reached(search) -> None:
    tmp, path, result = search
    _check_told(Path(result["run_dir"]), result, load_config(path))
    trials = _trials(Path(result["run_dir"]))
    rows = {r["member"]: r for r in result["members"]}
    # The told value is the standalone run's best validation accuracy for the same settings.
    finished = [t for t in trials if t["state"] == "COMPLETE"]
    chosen = finished[-1]
    settings = rows[chosen["number"]]["settings"]
    overrides = [f"{k}={v}" for k, v in settings.items()] + ["sweep=null"]
    if settings["optimizer.name"] == "sgd":
        overrides = ["optimizer={name: sgd}"] + [
            o for o in overrides if not o.startswith("optimizer.name")
        ]
        overrides += ["optimizer.weight_decay=0.0001"]
    alone = train(path, overrides, runs_dir=tmp / "runs", progress=False, report=False)
    records = [
        json.loads(line)
        for line in (alone.run_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "validation"
    ]
    assert max(r["accuracy"] for r in records) == pytest.approx(chosen["value"], abs=1e-5)


def _check_told(run_dir: Path, result: dict, config) -> None:
    """Every trial of the study (read by Optuna) holds what its member reached: its
    evaluations as intermediate values, its best value (finished) or PRUNED with its last."""
    trials = _trials(run_dir)
    rounds, batch = config.sweep.rounds, config.sweep.batch
    assert [t["number"] for t in trials] == list(range(rounds * batch))
    assert [t["round"] for t in trials] == [r for r in range(rounds) for _ in range(batch)]
    rows = {r["member"]: r for r in result["members"]}
    for trial in trials:
        row = rows[trial["number"]]
        _check_member_settings(row["settings"], expand_one(config, 0, row["settings"]).config)
        history = {h["step"]: h["validation_accuracy"] for h in row["history"]}
        assert trial["intermediate"] == pytest.approx(history)
        if row["status"] == "finished":
            assert trial["state"] == "COMPLETE"
            assert trial["value"] == pytest.approx(row["best_value"])
        else:  # halving inside the round stopped it: PRUNED, Optuna keeps its last value
            assert row["status"] == "stopped at rung 1" and trial["state"] == "PRUNED"
            assert trial["value"] == pytest.approx(history[max(history)])


def test_search_report_shows_importance_and_best_so_far(search) -> None:
    _, _, result = search
    run_dir = Path(result["run_dir"])
    info = result["search"]
    assert info["method"] == "tpe" and info["trials"] == 6
    values = [r["best_value"] for r in sorted(result["members"], key=lambda r: r["member"])]
    expected = [max(values[: i + 1]) for i in range(6)]
    assert [p["best"] for p in info["best_so_far"]] == pytest.approx(expected)
    times = [p["wall_time_s"] for p in info["best_so_far"]]
    assert times[0] == times[2] < times[3] == times[5]  # one wall time per round
    assert set(info["importance"]) == {"optimizer.name", "optimizer.learning_rate"}
    assert sum(info["importance"].values()) == pytest.approx(1.0)
    report = (run_dir / "report.md").read_text()
    assert "What the search learned" in report and "optimizer.learning_rate" in report
    for name in ("search_progress.png", "search_importance.png", "members.csv"):
        assert (run_dir / name).stat().st_size > 0


@pytest.mark.slow  # ~20 s; the fast test_asking_again_after_a_stop_gives_the_same_trials
def test_search_killed_mid_round_resumes_to_the_same_study(search, monkeypatch) -> None:
    tmp, path, whole = search
    calls = {"n": 0}
    original = sweep_runner.scalars

    def interrupt_in_round_two(metrics):  # round 1: 3 members x 2 evaluations
        calls["n"] += 1
        if calls["n"] == 8:  # the first evaluation of round 2
            raise KeyboardInterrupt
        return original(metrics)

    monkeypatch.setattr(sweep_runner, "scalars", interrupt_in_round_two)
    with pytest.raises(KeyboardInterrupt):
        _run(path, tmp / "cut")
    monkeypatch.setattr(sweep_runner, "scalars", original)
    stopped = _trials(tmp / "cut")
    assert [t["state"] for t in stopped[3:]] == ["RUNNING"] * 3  # round 2 asked, not told
    resumed = _run(path, tmp / "cut", resume=True)
    assert _trials(tmp / "cut") == _trials(Path(whole["run_dir"]))
    assert resumed["best"]["member"] == whole["best"]["member"]
    for a, b in zip(resumed["members"], whole["members"], strict=True):
        assert a["history"] == b["history"]


def test_best_so_far_and_report_lines_by_hand() -> None:
    records = {
        0: {"best_value": 0.5, "wall_time_s": 1.0},
        1: {"best_value": None, "wall_time_s": 1.0},
        2: {"best_value": 0.4, "wall_time_s": 2.0},
        3: {"best_value": 0.7, "wall_time_s": 2.0},
    }
    curve = best_so_far(records, "max")
    assert [p["best"] for p in curve] == [0.5, 0.5, 0.5, 0.7]
    assert [p["best"] for p in best_so_far(records, "min")] == [0.5, 0.5, 0.4, 0.4]
    search = {
        "method": "tpe",
        "rounds": 2,
        "batch": 2,
        "trials": 4,
        "study": {"name": "x", "storage": "sqlite:///study.db"},
        "best_so_far": curve,
        "wall_time_s": 2.0,
        "importance": {"optimizer.learning_rate": 0.75, "seed": 0.25},
        "importance_note": "fANOVA",
        "baseline": {"run_dir": "random", "best": 0.6, "wall_time_s": 1.5,
                     "best_so_far": best_so_far({**records, 3: {"best_value": 0.6}}, "max")},
    }  # fmt: skip
    lines = search_lines(search, "accuracy")
    assert "| 2 | 0.5 | 0.5 |" in lines and "| 4 | 0.7 | 0.6 |" in lines
    assert "| optimizer.learning_rate | 0.750 |" in lines


def test_search_mistakes_fail_when_the_config_is_read(tmp_path) -> None:
    cases = {
        "sweep.pbt": "pbt: {every: 1}",
        "sweep.samples": "samples: 4",
        "sweep.axes.optimizer.momentum.when.optimizer.name": None,
    }
    for key, extra in cases.items():
        text = CONDITIONAL + (f"  {extra}\n" if extra else "")
        if extra is None:
            text = text.replace("when: {optimizer.name: sgd}", "when: {optimizer.name: adam}")
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(_write(tmp_path, text))
    # b2 swept beside the family without a condition: sgd has no b2
    text = CONDITIONAL.replace(", when: {optimizer.name: adamw}", "")
    with pytest.raises(ConfigError, match=r"optimizer.b2\[0\].*optimizer.name='sgd'.*unknown key"):
        load_config(_write(tmp_path, text))
    # the condition must name an earlier axis; only kind names can be swept
    later = "sweep: {method: tpe, rounds: 1, axes: {seed: {choices: [1], when: {data.seed: 0}}, "
    with pytest.raises(ConfigError, match="name an axis listed before seed"):
        load_config(_write(tmp_path, later + "data.seed: [0]}}"))
    with pytest.raises(ConfigError, match="only optimizer.name and model.name"):
        load_config(_write(tmp_path, "sweep: {axes: {optimizer.schedule.name: [cosine]}}"))
    with pytest.raises(ConfigError, match="method: tpe asks in rounds"):
        load_config(_write(tmp_path, "sweep: {method: tpe, axes: {seed: [0, 1]}}"))


def test_a_search_without_its_package_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path, CONDITIONAL)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        config_verbs.importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("optuna", "torch") else real(name, *a),
    )
    with pytest.raises(
        ConfigError, match=r"sweep.method: tpe needs .*'optuna'.*jaxtrain\[search\]"
    ):
        config_verbs.check_verb(load_config(path), "sweep", path)
    gp = load_config(path, ["sweep.method=gp"])
    with pytest.raises(ConfigError, match="'optuna'"):
        config_verbs.check_verb(gp, "sweep", path)
    code = cli_main(["sweep", str(path), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "'optuna'" in err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_gp_needs_torch_in_one_line(tmp_path, monkeypatch) -> None:
    path = _write(tmp_path, CONDITIONAL)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        config_verbs.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torch" else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"method: gp needs the Python package 'torch'"):
        config_verbs.check_verb(load_config(path, ["sweep.method=gp"]), "sweep", path)


@pytest.mark.slow
def test_search_with_halving_beside_random_search(tmp_path) -> None:
    """Halving inside each round (members it drops are PRUNED trials); compare_random runs
    Optuna's random sampler on the same budget in random/."""
    text = CONDITIONAL.replace("  seed: 1\n", "  seed: 1\n  compare_random: true\n")
    text += "  halving: {rungs: [1], keep: 0.5}\n"
    path = _write(tmp_path, text)
    config = load_config(path, ["train.epochs=2"])
    (tmp_path / "tpe").mkdir()
    result = run_sweep(config, tmp_path / "tpe", progress=False)
    _check_told(tmp_path / "tpe", result, config)
    # 3 members of two families per round: some program has 2 or more, halving drops one
    assert sum(t["state"] == "PRUNED" for t in _trials(tmp_path / "tpe")) >= 2
    baseline = result["search"]["baseline"]
    assert len(baseline["best_so_far"]) == 6
    random_trials = _trials(tmp_path / "tpe" / "random")
    assert [t["round"] for t in random_trials] == [0, 0, 0, 1, 1, 1]
    random_best = max(
        r["best_value"]
        for r in json.loads((tmp_path / "tpe" / "random" / "members.json").read_text())["members"]
    )
    assert baseline["best"] == pytest.approx(random_best)


@pytest.mark.slow  # ~15 s
def test_pbt_over_a_conditional_space_explores_only_what_each_family_has(tmp_path) -> None:
    text = """
sweep:
  axes:
    optimizer.name: [adamw, sgd]
    optimizer.learning_rate: [0.001, 0.01]
    optimizer.momentum: {choices: [0.5, 0.9], when: {optimizer.name: sgd}}
  pbt: {every: 1, fraction: 0.5, perturb: [0.5, 2.0]}
"""
    rows = _run(_write(tmp_path, text), tmp_path / "pbt", ["train.epochs=2"])["members"]
    assert len(rows) == 6 and {r["status"] for r in rows} == {"finished"}
    for row in rows:
        for event in row["pbt"]:
            explored = set(event) - {"step", "copied"}
            family = row["settings"]["optimizer.name"]
            assert explored == ({"peak_learning_rate", "momentum"} if family == "sgd" else
                                {"peak_learning_rate"})  # fmt: skip
    assert any(r["pbt"] for r in rows)


def test_a_second_search_in_the_same_directory_is_refused(tmp_path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "study.db").write_bytes(b"")
    with pytest.raises(FileExistsError, match="a search already ran here"):
        _run(_write(tmp_path, CONDITIONAL), tmp_path / "run")


@pytest.mark.slow  # ~90 s: experiments/search/run.py --quick
def test_search_experiment_quick_mode_writes_its_comparison(tmp_path) -> None:
    import importlib.util as util

    from tests.support import ROOT

    spec = util.spec_from_file_location("experiment_search", ROOT / "experiments/search/run.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--quick", "--out", str(tmp_path)])
    (row,) = results["rows"]
    assert row["trials"] == 4
    for arm in ("tpe", "random_rounds", "random_population"):
        assert 0 < row[arm]["best"] <= 1 and row[arm]["wall_s"] > 0
    for arm in ("tpe", "random_rounds"):  # best so far never falls
        assert row[arm]["curve"] == sorted(row[arm]["curve"]) and len(row[arm]["curve"]) == 4
        assert row[arm]["curve"][-1] == pytest.approx(row[arm]["best"])
    for name in ("results.md", "results.json", "best_so_far.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_cma_es_is_refused_because_it_pickles_its_state(tmp_path) -> None:
    """Optuna's CMA-ES stores its optimizer pickled in study.db; a resume would unpickle it."""
    from jaxtrain.config import ConfigError

    text = BASE + "\nsweep: {method: cmaes, batch: 4, rounds: 2, axes: {optimizer.learning_rate: "
    text += "{distribution: log_uniform, low: 0.001, high: 0.1}}}"
    with pytest.raises(ConfigError, match="cmaes is refused.*pickle"):
        load_config_text(text)
