"""``run_sweep(config, run_dir)``: every member of a sweep trained as one vmapped program per
group, with successive halving or population-based training between evaluations.

The host loop is the one every verb runs (:func:`jaxtrain.train.periodic.run_periodic`): it
moves chunks of steps in (:func:`jaxtrain.sweep.population.make_population_train`, a vmap of
the scan of the run's one ``train_step``) and per-member metrics out, and evaluates, halves,
exploits and checkpoints (one :class:`jaxtrain.checkpoint.Checkpoints`) every N steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.checkpoint import Checkpoints
from jaxtrain.config import CheckpointConfig, Config
from jaxtrain.config.verbs import check_verb
from jaxtrain.logging import progress as console
from jaxtrain.sweep import population as pop
from jaxtrain.sweep.best import save_best
from jaxtrain.sweep.build import (
    BuiltGroup,
    build_group,
    group_monitor,
    initial_population,
    monitor_of,
)
from jaxtrain.sweep.pbt import exploit_explore
from jaxtrain.sweep.results import write_results
from jaxtrain.sweep.space import HYPERPARAMS, Group, expand, vmappable
from jaxtrain.train.evaluate import scalars
from jaxtrain.train.periodic import Every, Halt, run_periodic
from jaxtrain.train.pieces import build_step
from jaxtrain.train.step import make_eval_step

BEST_DIR = "best"  # the best member as an ordinary run directory (`jaxtrain eval` works on it)
POPULATION_DIR = "population"  # the population checkpoint a sweep resumes from


@dataclass
class Best:
    """The best member seen so far: where, when, its validation metrics and its state."""

    value: float | None = None
    member: int | None = None
    group: int | None = None
    step: int | None = None
    validation: dict[str, float] = field(default_factory=dict)
    state: Any = None


@dataclass
class Progress:
    """What a sweep has done: per-member records, the best member, finished groups, and where
    the running group is (``{"group", "step", "active"}``); its checkpoint's JSON part."""

    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    best: Best = field(default_factory=Best)
    done: list[int] = field(default_factory=list)
    position: dict[str, Any] | None = None

    def meta(self, position) -> dict[str, Any]:
        best = {k: v for k, v in self.best.__dict__.items() if k != "state"}
        return {"records": self.records, "done": self.done, "position": position, "best": best}


def run_sweep(
    config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train every member of ``config.sweep`` in ``run_dir`` (which must exist) and write
    ``members.csv``, ``members.json``, plots, ``report.md`` and ``best/`` (the best member as
    a run directory with its Orbax checkpoint). With ``resume`` the population checkpoint in
    ``run_dir`` is restored and the sweep continues exactly where it stopped.

    Returns ``{"run_dir", "metric", "mode", "best": {...}, "members": [row, ...], ...}`` (what
    ``members.json`` holds) plus ``"populations"``: per group trained in this call, the final
    population state (leading axis) and the member ids along that axis.
    """
    run_dir = Path(run_dir)
    check_verb(config, "sweep", run_dir / "config.yaml")
    groups = expand(config, str(run_dir))
    started = time.perf_counter()
    done = Progress()
    populations: dict[int, dict[str, Any]] = {}
    checkpoints = Checkpoints(run_dir / POPULATION_DIR, CheckpointConfig(keep=1))
    try:
        if resume:
            _restore_progress(checkpoints, done, groups)
        for group in groups:
            if group.index in done.done:
                continue
            built = build_group(group)
            monitor = monitor_of(config, next(iter(built.data.values())))
            here = (
                done.position if done.position and done.position["group"] == group.index else None
            )
            desc = config.name if len(groups) == 1 else f"{config.name} group {group.index}"
            bar = console.Progress(
                built.total_steps,
                initial=here["step"] if here else 0,
                desc=desc,
                enabled=progress,
                steps_per_epoch=built.steps_per_epoch,
                timed="validation",  # a sweep logs evaluations only: they carry the speed
            )
            with bar:
                populations[group.index] = _train_group(
                    config, built, monitor, done, checkpoints, here, bar
                )
            done.done.append(group.index)
        checkpoints.wait()
    finally:
        checkpoints.close()
    best = done.best
    monitor, mode = group_monitor(config, groups[best.group])
    chosen = next(m for m in groups[best.group].members if m.index == best.member)
    test = save_best(run_dir / BEST_DIR, chosen.config, best, monitor, mode)
    rows = [done.records[i] for i in sorted(done.records)]
    summary = {
        "run_dir": str(run_dir),
        "metric": monitor,
        "mode": mode,
        "groups": len(groups),
        "members": rows,
        "best": {
            "member": best.member,
            "group": best.group,
            "step": best.step,
            "settings": done.records[best.member]["settings"],
            "validation": best.validation,
            "test": scalars(test),
        },
        "wall_time_s": time.perf_counter() - started,
    }
    write_results(run_dir, config, summary)
    return {**summary, "populations": populations}


def _restore_progress(checkpoints: Checkpoints, done: Progress, groups: list[Group]) -> None:
    """The records, best member and position of the newest intact population checkpoint."""
    step, parts = checkpoints.latest_good({}, records=("meta",))
    if step is None:
        return
    meta = parts["meta"]
    done.records = {int(k): v for k, v in meta["records"].items()}
    done.done, done.position = meta["done"], meta["position"]
    done.best = Best(**meta["best"])
    if done.best.group is not None:
        like = build_group(groups[done.best.group]).pieces.state
        done.best.state = checkpoints.restore_parts(step, {"best": like})["best"]


# ---------------------------------------------------------------------------------------------
# training one group


@dataclass
class Live:
    """The running population: its state, the member ids along its axis, their datasets, and
    the device layout (rebuilt whenever members stop)."""

    state: Any
    active: list[int]
    data_index: np.ndarray
    step: int
    mesh: Any = None
    train_data: Any = None
    validation: Any = None

    def place(self, devices: int | None, built: BuiltGroup) -> None:
        self.mesh = pop.member_mesh(len(self.active), devices)
        self.state = pop.shard_members(self.state, self.mesh)
        self.train_data = pop.replicate(built.train_data, self.mesh)
        self.validation = pop.replicate(built.validation, self.mesh)

    def keep(self, positions: list[int], devices: int | None, built: BuiltGroup) -> None:
        """Only the members at ``positions`` go on."""
        self.active = [self.active[p] for p in positions]
        self.data_index = self.data_index[positions]
        self.state = pop.take(self.state, positions)
        self.place(devices, built)


def _train_group(config, built, monitor, done: Progress, checkpoints, resume_at, bar):
    sweep, group, pieces = config.sweep, built.group, built.pieces
    metric, mode = monitor
    ids = [m.index for m in group.members]
    for m in group.members:
        done.records.setdefault(m.index, _record(m, group.index))
    active, step = list(ids), 0
    if resume_at is not None:
        active, step = resume_at["active"], resume_at["step"]
    state = initial_population(built, active)
    if resume_at is not None:
        latest = checkpoints.latest_step()
        state = checkpoints.restore_parts(latest, {"state": state})["state"]
    live = Live(state, active, built.data_index[[ids.index(i) for i in active]], step)
    live.place(sweep.devices, built)
    task, total, every = pieces.task, built.total_steps, built.every
    train_step = build_step(group.config, pieces)  # the run's one step, every option on
    evaluate_all = pop.make_population_eval(make_eval_step(pieces.model, task))
    programs: dict[int, Any] = {}
    points = [*range(every, total, every), total]
    rungs = _event_steps(
        points, [r * built.steps_per_epoch for r in (sweep.halving.rungs if sweep.halving else ())]
    )
    pbt_every = sweep.pbt.every * built.steps_per_epoch if sweep.pbt else None
    swept = [HYPERPARAMS[k] for k in sweep.axes if k in HYPERPARAMS and vmappable(k, group.config)]
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    chunk = {"metrics": None, "length": 0}

    def advance(live: Live, count: int):
        if count not in programs:
            programs[count] = pop.make_population_train(train_step, count)
        index = pop.shard_members(jnp.asarray(live.data_index), live.mesh)
        live.state, metrics = programs[count](
            live.state, index, jnp.int32(live.step), live.train_data
        )
        live.step += count
        chunk["metrics"], chunk["length"] = metrics, count
        bar.examples_per_step = group.config.data.batch_size * len(live.active)
        return live, metrics

    def evaluate(at: int, live: Live) -> Live:
        sums = jax.device_get(
            evaluate_all(
                live.state,
                pop.shard_members(jnp.asarray(live.data_index), live.mesh),
                live.validation,
            )
        )
        fetched = jax.device_get(chunk["metrics"])
        train_loss = np.asarray(fetched["loss"]).mean(axis=1)
        bad = np.asarray(fetched["nonfinite"]).sum(axis=1)
        values, diverged = [], []
        for pos, member_id in enumerate(live.active):
            validation = scalars(task.finalize(jax.tree.map(lambda x, p=pos: x[p], sums)))
            value = validation[metric]
            values.append(value)
            record = done.records[member_id]
            record["step"] = at
            record["skipped_nonfinite_steps"] = record.get("skipped_nonfinite_steps", 0) + int(
                bad[pos]
            )
            history = {f"validation_{k}": v for k, v in validation.items()}
            record["history"].append({"step": at, "train_loss": float(train_loss[pos]), **history})
            if bad[pos] and config.train.nonfinite == "stop":
                record["status"] = f"stopped: non-finite loss, gradient or update before step {at}"
                diverged.append(pos)
                continue
            if record["best_value"] is None or better(value, record["best_value"]):
                record["best_value"], record["best_step"] = value, at
            if done.best.value is None or better(value, done.best.value):
                best = done.best
                best.value, best.member, best.group, best.step = value, member_id, group.index, at
                best.validation, best.state = validation, pop.member(live.state, pos)
        finite = [v for v in values if math.isfinite(v)]
        shown = {f"best_{metric}": (max if mode == "max" else min)(finite)} if finite else {}
        if diverged:  # under train.nonfinite=stop a diverged member stops, the rest go on
            kept = [p for p in range(len(live.active)) if p not in diverged]
            values = [values[p] for p in kept]
            live.keep(kept, sweep.devices, built)
            if not live.active:
                raise Halt("finished")
        order = sorted(range(len(live.active)), key=lambda p: values[p], reverse=mode == "max")
        if at in rungs and len(live.active) > 1:
            keep = _round_up(
                math.ceil(len(live.active) * sweep.halving.keep), live.mesh.size, len(live.active)
            )
            for p in order[keep:]:
                done.records[live.active[p]]["status"] = f"stopped at rung {rungs.index(at) + 1}"
            live.keep(sorted(order[:keep]), sweep.devices, built)
        elif (
            pbt_every
            and at < total
            and int(at / pbt_every) > int((at - chunk["length"]) / pbt_every)
        ):
            live.state = exploit_explore(
                live.state, order, live.active, done.records, sweep, swept, at, group.index
            )
            live.state = pop.shard_members(live.state, live.mesh)
        bar.record(at, "validation", {**shown, "members": len(live.active)})
        return live

    def save(at: int, live: Live) -> None:
        last = at == total
        position = None if last else {"group": group.index, "step": at, "active": live.active}
        finished = done.done + ([group.index] if last else [])
        arrays = {} if done.best.state is None else {"best": done.best.state}
        checkpoints.save(
            (checkpoints.latest_step() or 0) + 1,
            None if last else live.state,
            records={"meta": {**done.meta(position), "done": finished}},
            arrays=arrays,
        )

    outcome = run_periodic(
        live, live.step, total, advance,
        [Every(every, evaluate), Every(every * sweep.checkpoint_every, save)],
        chunked=True,
        progress=bar.update,
    )  # fmt: skip
    live = outcome.state
    for member_id in live.active:
        done.records[member_id]["status"] = "finished"
    final = jax.device_get(pop.hyperparams(live.state))
    for pos, member_id in enumerate(live.active):
        done.records[member_id]["hyperparams"] = {k: float(v[pos]) for k, v in final.items()}
    checkpoints.wait()
    return {"members": live.active, "state": live.state}


def _event_steps(points: list[int], targets: list[float]) -> list[int]:
    """For each target step, the first evaluation at or after it (before the last one)."""
    events = []
    for target in targets:
        hits = [p for p in points[:-1] if p >= target - 1e-9]
        if hits and hits[0] not in events:
            events.append(hits[0])
    return events


def _round_up(count: int, multiple: int, cap: int) -> int:
    return min(cap, max(1, math.ceil(count / multiple) * multiple))


def _record(member, group_index: int) -> dict[str, Any]:
    return {
        "member": member.index,
        "group": group_index,
        "settings": member.settings,
        "best_value": None,
        "best_step": None,
        "step": 0,
        "status": "running",
        "history": [],
        "pbt": [],
        "hyperparams": {},
    }
