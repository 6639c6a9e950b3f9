"""``run_search``: a model-based search in rounds, each round one vmapped population.

Round ``r`` asks the Optuna sampler (TPE, GP, CMA-ES or random) for ``sweep.batch`` trials,
turns each into a member (a standalone config: :func:`jaxtrain.sweep.space.member_of`),
trains the round's members as one population per program shape
(:func:`jaxtrain.sweep.runner.train_group`: the same loop, halving and checkpoints as any
sweep), and tells the study each trial's validation metric (every evaluation as an
intermediate value, members dropped by halving as PRUNED). The study lives in the run
directory (``study.db``, SQLite): ``optuna.load_study(study_name=<config name>,
storage="sqlite:///<run dir>/study.db")`` opens it.

Resume: the population checkpoint holds the records, the best member and where the round
is; the study holds the asked trials. A resumed search re-asks nothing that was asked, asks
what was not with the same seeds, and ends with the same study as an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from jaxtrain.checkpoint import Checkpoints
from jaxtrain.config import CheckpointConfig, Config, ConfigError, config_to_dict, dump_config
from jaxtrain.config.verbs import check_verb
from jaxtrain.data import prepare_data
from jaxtrain.distributed import is_writer
from jaxtrain.sweep.build import monitor_of
from jaxtrain.sweep.runner import (
    POPULATION_DIR,
    Progress,
    finish,
    like_state,
    progress_bar,
    restore_progress,
    save_progress,
    train_groups,
)
from jaxtrain.sweep.space import Group, group_members, member_of

BASELINE_DIR = "random"  # compare_random: the random search on the same budget, a search dir


def run_search(
    config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run (or with ``resume`` continue) the search ``config.sweep`` describes in
    ``run_dir`` and write what :func:`jaxtrain.sweep.run_sweep` writes, plus ``study.db``,
    the best-so-far curves, each hyperparameter's importance and, with
    ``sweep.compare_random``, a random search on the same budget in ``run_dir/random/``.

    Returns the summary (``members.json``): one row per trial (``member`` is the trial
    number, ``round`` its round) and ``"search"``: method, study location, importance,
    best-so-far by trial and wall time (and the random baseline's)."""
    from jaxtrain.sweep import study as studies

    run_dir = Path(run_dir)
    sweep = config.sweep
    if not resume and is_writer() and (run_dir / studies.STUDY_FILE).exists():
        raise FileExistsError(
            f"{run_dir / studies.STUDY_FILE}: a search already ran here; resume it "
            "(resume=True, jaxtrain sweep --resume) or start in a new directory"
        )
    started = time.perf_counter()
    metric, mode = monitor_of(config, prepare_data(config.data))
    base = config_to_dict(replace(config, sweep=None))
    source = str(run_dir / "config.yaml")
    done = Progress()
    programs: dict[str, Any] = {}  # compiled once per program shape, reused by every round
    checkpoints = Checkpoints(run_dir / POPULATION_DIR, CheckpointConfig(keep=1))
    with studies.quiet_optuna():
        study = storage = None
        if is_writer():
            direction = "maximize" if mode == "max" else "minimize"
            study, storage = studies.open_study(run_dir, config.name, direction)
        try:
            if resume:
                restore_progress(
                    checkpoints, done, lambda best: _like(config, done, best, source, base)
                )
            first = done.extra.get("round", 0)
            elapsed = done.extra.get("elapsed", 0.0)
            total = sweep.trials * config.train.epochs
            with progress_bar(total, config.name, progress) as bar:
                bar.update(sum(r["step"] for r in done.records.values()))
                for round_ in range(first, sweep.rounds):
                    if study is not None:  # told before the next ask, as if never stopped
                        studies.tell_finished(study, done.records, metric)
                    segment = time.perf_counter()
                    if done.extra.get("round") != round_:
                        done.done, done.position = [], None
                    done.extra = {"round": round_, "elapsed": elapsed}
                    asked = None if study is None else studies.ask_round(study, sweep, round_)
                    asked = _share(asked)
                    members = []
                    for number, settings in asked:
                        try:
                            member = member_of(config, number, settings, source, base)
                            check_verb(member.config, "sweep", f"{source} (trial {number})")
                            members.append(member)
                        except ConfigError as err:
                            done.records[number] = _invalid(number, settings, round_, err)
                    pending = [g for g in group_members(members) if g.index not in done.done]
                    train_groups(config, pending, done, checkpoints, bar, {"round": round_},
                                 programs)  # fmt: skip
                    elapsed += time.perf_counter() - segment
                    for number, _ in asked:
                        done.records[number]["wall_time_s"] = elapsed
                    done.extra, done.done, done.position = (
                        {"round": round_ + 1, "elapsed": elapsed},
                        [],
                        None,
                    )
                    save_progress(checkpoints, done)
                if study is not None:
                    studies.tell_finished(study, done.records, metric)
            checkpoints.wait()
        finally:
            checkpoints.close()
        search = {
            "method": sweep.method,
            "batch": sweep.batch_size,
            "rounds": sweep.rounds,
            "trials": len(done.records),
            "study": {"name": config.name, "storage": f"sqlite:///{studies.STUDY_FILE}"},
            "best_so_far": best_so_far(done.records, mode),
            "wall_time_s": elapsed,
        }
        if study is not None:
            search["importance"], search["importance_note"] = studies.importances(study, sweep.seed)
            studies.close_study(storage)
    if sweep.compare_random:
        search["baseline"] = _baseline(config, run_dir, resume, progress)
    best = done.best
    if best.member is None:
        raise RuntimeError(f"{run_dir}: no trial of the search reached an evaluation")
    best_config = member_of(
        config, best.member, done.records[best.member]["settings"], source, base
    ).config
    groups = len({(r["round"], r["group"]) for r in done.records.values() if "group" in r})
    return finish(config, run_dir, done, best_config, groups, started, {"search": search})


def best_so_far(records: dict[int, dict], mode: str) -> list[dict[str, Any]]:
    """``[{"trial": n, "wall_time_s": t, "best": v}]``: the best validation metric among the
    first ``n`` trials (in trial order) and the search's wall time when trial ``n`` ended."""
    curve, best = [], None
    for number in sorted(records):
        record = records[number]
        value = record.get("best_value")
        if value is not None and (
            best is None or (value > best if mode == "max" else value < best)
        ):
            best = value
        curve.append({"trial": number + 1, "wall_time_s": record.get("wall_time_s"), "best": best})
    return curve


def _baseline(config: Config, run_dir: Path, resume: bool, progress: bool) -> dict[str, Any]:
    """Optuna's random sampler on the same budget (batch x rounds, same halving), run as a
    search of its own in ``run_dir/random/``: its best-so-far curve and best value."""
    sweep = replace(config.sweep, method="random", compare_random=False, startup_trials=None)
    random = replace(config, sweep=sweep)
    target = run_dir / BASELINE_DIR
    target.mkdir(exist_ok=True)
    if is_writer():
        dump_config(random, target / "config.yaml")
    again = resume and (target / POPULATION_DIR).is_dir()
    summary = run_search(random, target, resume=again, progress=progress)
    return {
        "method": "random",
        "run_dir": BASELINE_DIR,
        "best": summary["best"]["validation"][summary["metric"]],
        "best_so_far": summary["search"]["best_so_far"],
        "wall_time_s": summary["search"]["wall_time_s"],
    }


def _like(config: Config, done: Progress, best, source: str, base: dict) -> Any:
    settings = done.records[best.member]["settings"]
    member = member_of(config, best.member, settings, source, base)
    return like_state(Group(0, {}, (member,)))


def _invalid(number: int, settings: dict, round_: int, err: ConfigError) -> dict[str, Any]:
    """The row of a trial whose settings make an invalid config (told FAIL)."""
    return {
        "member": number,
        "round": round_,
        "settings": settings,
        "best_value": None,
        "best_step": None,
        "step": 0,
        "status": f"invalid settings: {err}",
        "history": [],
        "pbt": [],
        "hyperparams": {},
    }


def _share(value: Any) -> Any:
    """Process 0's JSON ``value`` on every process (itself in a single-process run)."""
    import json

    import jax

    if jax.process_count() == 1:
        return value
    from jaxtrain.distributed import broadcast_text

    text = json.dumps(value) if is_writer() else None
    length = int(broadcast_text(str(len(text.encode())) if text is not None else None, 32))
    return json.loads(broadcast_text(text, max(length, 1)))
