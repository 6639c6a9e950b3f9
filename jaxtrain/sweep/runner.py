"""``run_sweep(config, run_dir)``: every member of a sweep trained as one vmapped program per
group, with successive halving or population-based training between evaluations.

The host loop is the one every verb runs (:func:`jaxtrain.train.periodic.run_periodic`): it
moves chunks of steps in (:func:`jaxtrain.sweep.population.make_population_train`, a vmap of
the scan of the run's one ``train_step``) and per-member metrics out, and evaluates, halves,
exploits and checkpoints (one :class:`jaxtrain.checkpoint.Checkpoints`) every N steps.
"""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxtrain.checkpoint import Checkpoints
from jaxtrain.config import CheckpointConfig, Config
from jaxtrain.config.verbs import check_verb
from jaxtrain.data import prepare_data
from jaxtrain.distributed import is_writer
from jaxtrain.logging import progress as console
from jaxtrain.sweep import population as pop
from jaxtrain.sweep.best import save_best
from jaxtrain.sweep.build import BuiltGroup, build_group, initial_population, monitor_of
from jaxtrain.sweep.pbt import exploit_explore
from jaxtrain.sweep.results import write_results
from jaxtrain.sweep.space import Group, expand, state_entries, vmappable
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
    the running group is (``{"group", "step", "active"}``); its checkpoint's JSON part.
    ``extra`` holds what a search in rounds adds (the round, the wall time so far)."""

    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    best: Best = field(default_factory=Best)
    done: list[int] = field(default_factory=list)
    position: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def meta(self, position) -> dict[str, Any]:
        best = {k: v for k, v in self.best.__dict__.items() if k != "state"}
        return {
            "records": self.records,
            "done": self.done,
            "position": position,
            "best": best,
            "extra": self.extra,
        }


def run_sweep(
    config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train every member of ``config.sweep`` in ``run_dir`` (which must exist) and write
    ``members.csv``, ``members.json``, plots, ``report.md`` and ``best/`` (the best member as
    a run directory with its Orbax checkpoint). With ``resume`` the population checkpoint in
    ``run_dir`` is restored and the sweep continues exactly where it stopped. A search in
    rounds (``sweep.rounds``, an Optuna sampler) runs :func:`jaxtrain.sweep.search.run_search`.

    Returns ``{"run_dir", "metric", "mode", "best": {...}, "members": [row, ...], ...}`` (what
    ``members.json`` holds) plus ``"populations"``: per group trained in this call, the final
    population state (leading axis) and the member ids along that axis.
    """
    run_dir = Path(run_dir)
    check_verb(config, "sweep", run_dir / "config.yaml")
    if config.sweep.search:
        from jaxtrain.sweep.search import run_search

        return run_search(config, run_dir, resume=resume, progress=progress)
    groups = expand(config, str(run_dir))
    started = time.perf_counter()
    done = Progress()
    populations: dict[int, dict[str, Any]] = {}
    checkpoints = Checkpoints(run_dir / POPULATION_DIR, CheckpointConfig(keep=1))
    try:
        if resume:
            restore_progress(checkpoints, done, lambda best: like_state(groups[best.group]))
        total = sum(g.config.train.epochs * len(g.members) for g in groups)  # an estimate
        with progress_bar(total, config.name, progress) as bar:
            bar.update(sum(r["step"] for r in done.records.values()))
            pending = [g for g in groups if g.index not in done.done]
            populations.update(train_groups(config, pending, done, checkpoints, bar))
        checkpoints.wait()
    finally:
        checkpoints.close()
    chosen = next(m for g in groups for m in g.members if m.index == done.best.member)
    summary = finish(config, run_dir, done, chosen.config, len(groups), started)
    return {**summary, "populations": populations}


def progress_bar(total: int, name: str, progress: bool) -> MemberSteps:
    """The sweep's progress (member-steps), shown by the writing process only: a bar on a
    terminal, a line per evaluation elsewhere (speed and time left included)."""
    return MemberSteps(
        console.Progress(
            total, desc=name, unit="member-step", enabled=progress and is_writer(),
            timed="validation",  # a sweep logs evaluations only: they carry the speed
        )
    )  # fmt: skip


class MemberSteps:
    """A :class:`~jaxtrain.logging.progress.Progress` counted in member-steps: each group
    (each device lane, in its own thread) adds the steps it trained times its members."""

    def __init__(self, progress: console.Progress):
        self.progress, self.n = progress, 0
        self._lock = threading.Lock()

    def update(self, count: int) -> None:
        with self._lock:
            self.n += count
            self.progress.update(self.n)

    def record(self, metrics: dict[str, Any]) -> None:
        with self._lock:
            self.progress.record(self.n, "validation", metrics)

    def __enter__(self) -> MemberSteps:
        return self

    def __exit__(self, *exc) -> None:
        self.progress.close()


def finish(
    config: Config,
    run_dir: Path,
    done: Progress,
    best_config: Config,
    groups: int,
    started: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save the best member as ``best/``, evaluate it on the test split and write the rows,
    plots and report (process 0). Returns the summary (``members.json``)."""
    best = done.best
    if best.member is None:
        raise RuntimeError(f"{run_dir}: no member of the sweep reached an evaluation")
    monitor, mode = monitor_of(config, prepare_data(best_config.data))
    test = save_best(run_dir / BEST_DIR, best_config, best, monitor, mode)
    rows = [done.records[i] for i in sorted(done.records)]
    summary = {
        "run_dir": str(run_dir),
        "metric": monitor,
        "mode": mode,
        "groups": groups,
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
        **(extra or {}),
    }
    if is_writer():
        write_results(run_dir, config, summary)
    return summary


def like_state(group: Group) -> Any:
    """A single member's state shaped like ``group``'s (what a checkpoint restores into)."""
    return build_group(group).pieces.state


def restore_progress(checkpoints: Checkpoints, done: Progress, like_of) -> None:
    """The records, best member and position of the newest intact population checkpoint;
    ``like_of(best)`` gives a state shaped like the best member's."""
    step, parts = checkpoints.latest_good({}, records=("meta",))
    if step is None:
        return
    meta = parts["meta"]
    done.records = {int(k): v for k, v in meta["records"].items()}
    done.done, done.position = meta["done"], meta["position"]
    done.extra = meta.get("extra", {})
    done.best = Best(**meta["best"])
    if done.best.member is not None:
        done.best.state = checkpoints.restore_parts(step, {"best": like_of(done.best)})["best"]


# ---------------------------------------------------------------------------------------------
# training one group


@dataclass
class Live:
    """The running population: its state, the member ids along its axis, their datasets, and
    the device layout (rebuilt whenever members stop). Across processes the rows are padded
    to a multiple of the devices (:func:`jaxtrain.sweep.population.padded`); rows past
    ``len(active)`` repeat the last member and are never read."""

    state: Any
    active: list[int]
    data_index: np.ndarray
    step: int
    mesh: Any = None
    index: Any = None
    train_data: Any = None
    validation: Any = None
    available: list | None = None  # the devices this group may use (None: all)

    def place(self, devices: int | None, built: BuiltGroup) -> None:
        """Lay ``state`` (one row per active member) out over the devices."""
        n = len(self.active)
        self.mesh = pop.member_mesh(n, devices, self.available)
        order = list(range(n)) + [n - 1] * (pop.padded(n, self.mesh) - n)
        state = self.state if len(order) == n else pop.take(self.state, order)
        self.state = pop.shard_members(state, self.mesh)
        self.index = pop.shard_members(np.asarray(self.data_index[order], np.int32), self.mesh)
        self.train_data = pop.replicate(built.train_data, self.mesh)
        self.validation = pop.replicate(built.validation, self.mesh)

    def real(self) -> Any:
        """The state without padding rows (one row per active member)."""
        rows = jax.tree.leaves(self.state)[0].shape[0]
        n = len(self.active)
        return self.state if rows == n else pop.take(self.state, list(range(n)))

    def keep(self, positions: list[int], devices: int | None, built: BuiltGroup) -> None:
        """Only the members at ``positions`` go on."""
        self.active = [self.active[p] for p in positions]
        self.data_index = self.data_index[positions]
        self.state = pop.take(self.state, positions)
        self.place(devices, built)


def device_lanes(groups: int, devices: int | None) -> list[list]:
    """The device slices groups train on side by side: as many equal, disjoint slices of the
    devices in use (``sweep.devices``, default all) as there are groups, at most one per
    device; one slice (every device) when there is one group, one device, or several
    processes (there every group spans every process's devices)."""
    available = jax.devices()[: devices or None]
    lanes = min(groups, len(available))
    if lanes <= 1 or jax.process_count() > 1:
        return [available]
    width = len(available) // lanes
    return [available[i * width : (i + 1) * width] for i in range(lanes)]


def train_groups(
    config: Config,
    groups: list[Group],
    done: Progress,
    checkpoints: Checkpoints,
    bar: MemberSteps,
    record: dict[str, Any] | None = None,
    programs: dict[str, Any] | None = None,
) -> dict[int, dict[str, Any]]:
    """Train ``groups`` (one program each) and add them to ``done.done``: one after another
    over every device, or with several devices side by side, each group on its own slice
    (:func:`device_lanes`; group ``i`` on lane ``i mod lanes``, a Python thread per lane:
    JAX runs the lanes' programs at once). Side by side there are no checkpoints inside a
    group (a resumed sweep trains an unfinished group again); one follows the groups. The
    best member is merged in group order either way, so the outcome does not depend on the
    lanes. Returns :func:`train_group`'s result per group index."""
    lanes = device_lanes(len(groups), config.sweep.devices)
    if len(lanes) == 1:
        out = {}
        for group in groups:
            out[group.index] = train_group(
                config, group, done, checkpoints, bar, record, programs, lanes[0]
            )
            done.done.append(group.index)
        return out

    # Data and pieces are built here, one group after another: preparing data is not
    # thread-safe (TFDS's quiet mode swaps sys.stdout); the lanes only train.
    programs = {} if programs is None else programs
    built = {g.index: _built(g, programs) for g in groups}

    def lane(i: int) -> dict[int, dict[str, Any]]:
        return {
            g.index: train_group(
                config,
                g,
                done,
                None,
                bar,
                record,
                programs,
                lanes[i],
                merge=False,
                built=built[g.index],
            )
            for g in groups[i :: len(lanes)]
        }

    with ThreadPoolExecutor(len(lanes), thread_name_prefix="sweep-lane") as pool:
        out = {}
        for future in [pool.submit(lane, i) for i in range(len(lanes))]:
            out.update(future.result())
    for group in groups:  # in group order, as one after another would have found them
        done.best = _merged(done.best, out[group.index].pop("best"), out[group.index]["mode"])
        done.done.append(group.index)
    if checkpoints is not None:
        save_progress(checkpoints, done)
    return out


def _built(group: Group, programs: dict[str, Any]) -> BuiltGroup:
    """``group``'s inputs, built with its program slot's caches (see :func:`train_group`)."""
    return build_group(group, programs.setdefault(json.dumps(group.static, sort_keys=True), {}))


def _merged(best: Best, candidate: Best, mode: str) -> Best:
    """The better of two bests (ties keep ``best``: it was found first)."""
    if candidate.value is None:
        return best
    if best.value is None or (candidate.value > best.value if mode == "max" else
                              candidate.value < best.value):  # fmt: skip
        return candidate
    return best


def save_progress(checkpoints: Checkpoints, done: Progress) -> None:
    """A checkpoint between groups or rounds: records, the best member, no population."""
    arrays = {}
    if done.best.state is not None:
        arrays = {"best": _for_checkpoint(done.best.state, None)}
    checkpoints.save(
        (checkpoints.latest_step() or 0) + 1, None, records={"meta": done.meta(None)},
        arrays=arrays,
    )  # fmt: skip
    checkpoints.wait()


def train_group(
    config: Config,
    group: Group,
    done: Progress,
    checkpoints: Checkpoints | None,
    bar: MemberSteps,
    record: dict[str, Any] | None = None,
    programs: dict[str, Any] | None = None,
    available: list | None = None,
    *,
    merge: bool = True,
    built: BuiltGroup | None = None,
) -> dict[str, Any]:
    """Train ``group``'s members as one population to the end (from ``done.position`` when
    it names this group), updating ``done.records`` at each evaluation and checkpointing
    (unless ``checkpoints`` is None). ``record``: more fields for each member's row (a
    search's round). ``programs``: compiled programs kept across calls, by the group's
    static settings (a search's rounds reuse them: same static settings, same program).
    ``available``: the devices it may use (default all). The group's best member is merged
    into ``done.best`` (``merge``) or returned as ``"best"`` for the caller to merge.
    Returns ``{"members": ids along the population axis, "state": the final population,
    "mode": "min"/"max", "started"/"ended": perf_counter times}``. ``built``: the group's
    inputs when already built."""
    started = time.perf_counter()
    cache = {} if programs is None else programs
    slot = cache.setdefault(json.dumps(group.static, sort_keys=True), {})
    built = built or build_group(group, slot)
    monitor = monitor_of(config, next(iter(built.data.values())))
    here = done.position if done.position and done.position["group"] == group.index else None
    best = Best()
    out = _train_group(
        config, built, monitor, done, checkpoints, here, bar, record or {}, slot, best, available
    )
    out.update(mode=monitor[1], started=started, ended=time.perf_counter())
    if merge:
        done.best = _merged(done.best, best, monitor[1])
    else:
        out["best"] = best
    return out


def _train_group(
    config, built, monitor, done: Progress, checkpoints, resume_at, bar, record, slot, best,
    available,
):  # fmt: skip
    """``best``: this group's best member (merged into ``done.best`` by the caller)."""
    sweep, group, pieces = config.sweep, built.group, built.pieces
    metric, mode = monitor
    ids = [m.index for m in group.members]
    for m in group.members:
        done.records.setdefault(m.index, {**_record(m, group.index), **record})
    active, step = list(ids), 0
    if resume_at is not None:
        active, step = resume_at["active"], resume_at["step"]
    state = initial_population(built, active, slot)
    if resume_at is not None:
        latest = checkpoints.latest_step()
        state = checkpoints.restore_parts(latest, {"state": state})["state"]
    live = Live(state, active, built.data_index[[ids.index(i) for i in active]], step)
    live.available = available
    live.place(sweep.devices, built)
    task, total, every = pieces.task, built.total_steps, built.every
    if "step" not in slot:
        slot["step"] = build_step(group.config, pieces)  # the run's one step, every option on
        slot["eval"] = pop.make_population_eval(make_eval_step(pieces.model, task))
        slot["train"] = {}
    train_step, evaluate_all, programs = slot["step"], slot["eval"], slot["train"]
    points = [*range(every, total, every), total]
    rungs = _event_steps(
        points, [r * built.steps_per_epoch for r in (sweep.halving.rungs if sweep.halving else ())]
    )
    pbt_every = sweep.pbt.every * built.steps_per_epoch if sweep.pbt else None
    entries = state_entries(group.config)  # built-in and registered optimizers alike
    swept = [  # PBT explores the settings this group's members have (conditional axes)
        entries[k]
        for k in sweep.axes
        if k in entries
        and vmappable(k, group.config)
        and any(k in m.settings for m in group.members)
    ]
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    chunk = {"metrics": None, "length": 0}
    multiple_of_devices = jax.process_count() == 1  # across processes the rows are padded

    def advance(live: Live, count: int):
        if count not in programs:
            programs[count] = pop.make_population_train(train_step, count)
        live.state, metrics = programs[count](
            live.state, live.index, jnp.int32(live.step), live.train_data
        )
        live.step += count
        chunk["metrics"], chunk["length"] = metrics, count
        bar.update(count * len(live.active))
        return live, metrics

    def evaluate(at: int, live: Live) -> Live:
        sums = pop.fetch(evaluate_all(live.state, live.index, live.validation))
        fetched = pop.fetch(chunk["metrics"])
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
            if best.value is None or better(value, best.value):
                best.value, best.member, best.group, best.step = value, member_id, group.index, at
                best.validation, best.state = validation, pop.member(live.state, pos)
        finite = [v for p, v in enumerate(values) if p not in diverged and math.isfinite(v)]
        shown = {f"best_{metric}": (max if mode == "max" else min)(finite)} if finite else {}
        if diverged:  # under train.nonfinite=stop a diverged member stops, the rest go on
            kept = [p for p in range(len(live.active)) if p not in diverged]
            values = [values[p] for p in kept]
            live.keep(kept, sweep.devices, built)
            if not live.active:
                raise Halt("finished")
        order = sorted(range(len(live.active)), key=lambda p: values[p], reverse=mode == "max")
        if at in rungs and len(live.active) > 1:
            multiple = live.mesh.size if multiple_of_devices else 1
            keep = _round_up(math.ceil(len(live.active) * sweep.halving.keep), multiple,
                             len(live.active))  # fmt: skip
            for p in order[keep:]:
                done.records[live.active[p]]["status"] = f"stopped at rung {rungs.index(at) + 1}"
            live.keep(sorted(order[:keep]), sweep.devices, built)
        elif (
            pbt_every
            and at < total
            and int(at / pbt_every) > int((at - chunk["length"]) / pbt_every)
        ):
            live.state = exploit_explore(
                live.real(), order, live.active, done.records, sweep, swept, at, group.index
            )
            live.place(sweep.devices, built)
        bar.record({**shown, "members": len(live.active)})
        return live

    def save(at: int, live: Live) -> None:
        last = at == total
        position = None if last else {"group": group.index, "step": at, "active": live.active}
        finished = done.done + ([group.index] if last else [])
        state = None if last else _for_checkpoint(live.real(), live.mesh)
        so_far = _merged(done.best, best, mode)  # what one after another would hold now
        arrays = {}
        if so_far.state is not None:
            arrays = {"best": _for_checkpoint(so_far.state, live.mesh)}
        meta = {**done.meta(position), "done": finished}
        meta["best"] = {k: v for k, v in so_far.__dict__.items() if k != "state"}
        checkpoints.save(
            (checkpoints.latest_step() or 0) + 1,
            state,
            records={"meta": meta},
            arrays=arrays,
        )

    actions = [Every(every, evaluate)]
    if checkpoints is not None and (sweep.checkpoint_every or not sweep.search):
        actions.append(Every(every * (sweep.checkpoint_every or 1), save))
    outcome = run_periodic(live, live.step, total, advance, actions, chunked=True)
    live = outcome.state
    for member_id in live.active:
        done.records[member_id]["status"] = "finished"
    final = pop.fetch(pop.hyperparams(live.state))
    for pos, member_id in enumerate(live.active):
        done.records[member_id]["hyperparams"] = {k: float(v[pos]) for k, v in final.items()}
    if checkpoints is not None:
        checkpoints.wait()
    return {"members": live.active, "state": live.state}


def _for_checkpoint(tree: Any, mesh: Any) -> Any:
    """What Orbax saves: the tree itself, or across processes a copy replicated over every
    process's devices (Orbax writes each array once; digests read it on every process)."""
    if jax.process_count() == 1:
        return tree
    return pop.replicate(tree, mesh or pop.member_mesh(jax.device_count()))


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
