"""``run_sweep(config, run_dir)``: every member of a sweep trained as one vmapped program per
group, with successive halving or population-based training between evaluations.

The host loop only moves chunks of steps in and per-member metrics out; the arithmetic is
``make_population_train`` (a vmap of a scan of the ordinary ``train_step``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from jaxtrain.checkpoint import Checkpoints
from jaxtrain.config import Config, config_to_dict, dump_config
from jaxtrain.data import PreparedData, prepare_data, train_batches
from jaxtrain.sweep import population as pop
from jaxtrain.sweep.results import write_results
from jaxtrain.sweep.space import HYPERPARAMS, Group, expand, hyperparams_of, vmappable
from jaxtrain.train.evaluate import evaluate, scalars
from jaxtrain.train.loop import build_pieces
from jaxtrain.train.step import make_eval_step, make_train_step
from jaxtrain.train.tasks import resolve_monitor, task_for

BEST_DIR = "best"  # the best member as an ordinary run directory (`jaxtrain eval` works on it)
POPULATION_DIR = "population"  # the population checkpoint a sweep resumes from
_BOUNDED = {"b1", "b2", "momentum"}  # PBT keeps these below 1


@dataclass
class _Best:
    """The best member seen so far: where, when, its validation metrics and its state."""

    value: float | None = None
    member: int | None = None
    group: int | None = None
    step: int | None = None
    validation: dict[str, float] = field(default_factory=dict)
    state: Any = None


@dataclass
class _Group:
    """One group's program inputs, built from its configs (deterministic in their seeds)."""

    group: Group
    data: dict[int, PreparedData]  # by data.seed
    pieces: Any
    data_index: np.ndarray  # i32[K]
    train_data: dict[str, np.ndarray]
    validation: dict[str, np.ndarray]
    eval_points: list[int]


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
    groups = expand(config, str(run_dir))
    started = time.perf_counter()
    records: dict[int, dict[str, Any]] = {}
    best = _Best()
    done: list[int] = []
    position: dict[str, Any] | None = None
    populations: dict[int, dict[str, Any]] = {}
    manager = ocp.CheckpointManager(
        (run_dir / POPULATION_DIR).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
    )
    try:
        if resume and manager.latest_step() is not None:
            meta = manager.restore(
                manager.latest_step(), args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            ).meta
            records = {int(k): v for k, v in meta["records"].items()}
            done, position = meta["done"], meta["position"]
            best = _Best(**meta["best"])
            if best.group is not None:
                like = _single_like(groups[best.group])
                best.state = _restore(manager, "best", like)
        total = sum(_total_steps(g.config, None) * len(g.members) for g in groups)
        with tqdm(total=total, disable=None if progress else True, desc=config.name) as bar:
            bar.update(sum(r["step"] for r in records.values()))
            for group in groups:
                if group.index in done:
                    continue
                built = _build(group)
                monitor, mode = _monitor(config, group, built.data)
                resume_at = position if position and position["group"] == group.index else None
                final = _train_group(
                    config, built, monitor, mode, records, best, done, manager, resume_at, bar
                )
                populations[group.index] = final
                done.append(group.index)
        manager.wait_until_finished()
    finally:
        manager.close()
    train_seconds = time.perf_counter() - started
    monitor, mode = _monitor(config, groups[best.group])
    test = _save_best(run_dir, groups[best.group], best, monitor, mode)
    rows = [records[i] for i in sorted(records)]
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
            "settings": records[best.member]["settings"],
            "validation": best.validation,
            "test": scalars(test),
        },
        "wall_time_s": train_seconds,
    }
    write_results(run_dir, config, summary)
    summary["wall_time_s"] = time.perf_counter() - started
    return {**summary, "populations": populations}


# ---------------------------------------------------------------------------------------------
# building a group


def _monitor(config: Config, group: Group, data: dict | None = None) -> tuple[str, str]:
    """The ranking metric and "min"/"max" (``sweep.metric``, else the checkpoint monitor)."""
    data = data or _build(group, light=True).data
    task = task_for(next(iter(data.values())))
    return resolve_monitor(task, config.sweep.metric or config.train.checkpoint.monitor)


def _seed0(group: Group) -> int:
    return group.members[0].config.data.seed


def _total_steps(config: Config, n_train: int | None) -> int:
    if n_train is None:  # only for the progress bar: an estimate is enough before loading
        return config.train.epochs
    return config.train.epochs * n_train // config.data.batch_size


def _build(group: Group, light: bool = False) -> _Group:
    config = group.config
    seeds = sorted({m.config.data.seed for m in group.members})
    data = {
        s: prepare_data(next(m.config.data for m in group.members if m.config.data.seed == s))
        for s in seeds
    }
    if light:
        return _Group(group, data, None, np.zeros(0), {}, {}, [])
    pieces = build_pieces(config, data[seeds[0]])
    splits = [data[s].splits for s in seeds]
    n = len(splits[0]["train"])
    batch = config.data.batch_size
    train_data = {
        "inputs": np.stack([s["train"].inputs for s in splits]),
        "labels": np.stack([s["train"].labels for s in splits]),
        "orders": pop.train_orders(n, batch, config.train.epochs, seeds),
    }
    validation = pop.eval_arrays([s["validation"] for s in splits], config.data.eval_batch_size)
    every = config.train.eval_every or max(1, int(n / batch))
    total = pieces.total_steps
    points = [*range(every, total, every), total]
    data_index = np.asarray([seeds.index(m.config.data.seed) for m in group.members], np.int32)
    return _Group(group, data, pieces, data_index, train_data, validation, points)


def _single_like(group: Group) -> Any:
    """A single member's state shaped like the group's (a restore target)."""
    return _build(group).pieces.state


def _population(built: _Group, indices: list[int]) -> Any:
    members = tuple(m for m in built.group.members if m.index in indices)
    pieces = built.pieces
    inputs = built.data[_seed0(built.group)].splits["train"].inputs
    state = pop.init_population(
        pieces.model,
        pieces.tx,
        built.data[_seed0(built.group)].input_shape,
        np.asarray([m.config.seed for m in members]),
        inputs.dtype,
    )
    return pop.with_hyperparams(state, hyperparams_of(members))


# ---------------------------------------------------------------------------------------------
# training a group


def _train_group(config, built, monitor, mode, records, best, done, manager, resume_at, bar):
    sweep, group, pieces = config.sweep, built.group, built.pieces
    ids = [m.index for m in group.members]
    active, step = list(ids), 0
    for m in group.members:
        records.setdefault(m.index, _record(m, group.index))
    state = _population(built, active)
    if resume_at is not None:
        active, step = resume_at["active"], resume_at["step"]
        state = _restore(manager, "state", _population(built, active))
    positions = [ids.index(i) for i in active]
    data_index = built.data_index[positions]
    task = pieces.task
    train_step = make_train_step(pieces.model, pieces.tx, task, pieces.penalty)
    evaluate_all = pop.make_population_eval(make_eval_step(pieces.model, task))
    programs: dict[int, Any] = {}
    spe = len(built.data[_seed0(group)].splits["train"]) / config.data.batch_size
    rungs = _event_steps(
        built.eval_points, [r * spe for r in (sweep.halving.rungs if sweep.halving else ())]
    )
    pbt_every = sweep.pbt.every * spe if sweep.pbt else None
    swept = [HYPERPARAMS[k] for k in sweep.axes if k in HYPERPARAMS and vmappable(k, group.config)]
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)

    mesh = pop.member_mesh(len(active), sweep.devices)
    state = pop.shard_members(state, mesh)
    train_data = pop.replicate(built.train_data, mesh)
    validation = pop.replicate(built.validation, mesh)
    evaluations = 0
    for at in built.eval_points:
        if at <= step:
            continue
        length = at - step
        if length not in programs:
            programs[length] = pop.make_population_train(train_step, length)
        index = pop.shard_members(jnp.asarray(data_index), mesh)
        state, metrics = programs[length](state, index, jnp.int32(step), train_data)
        sums = jax.device_get(evaluate_all(state, index, validation))
        train_means = {k: np.asarray(v).mean(axis=1) for k, v in jax.device_get(metrics).items()}
        bar.update(length * len(active))
        values = []
        for pos, member_id in enumerate(active):
            validation_metrics = scalars(task.finalize(jax.tree.map(lambda x, p=pos: x[p], sums)))
            value = validation_metrics[monitor]
            values.append(value)
            record = records[member_id]
            record["step"] = at
            record["history"].append(
                {
                    "step": at,
                    "train_loss": float(train_means["loss"][pos]),
                    **{f"validation_{k}": v for k, v in validation_metrics.items()},
                }
            )
            if record["best_value"] is None or better(value, record["best_value"]):
                record["best_value"], record["best_step"] = value, at
            if best.value is None or better(value, best.value):
                best.value, best.member, best.group, best.step = value, member_id, group.index, at
                best.validation = validation_metrics
                best.state = pop.member(state, pos)
        step = at
        evaluations += 1
        order = sorted(range(len(active)), key=lambda p: values[p], reverse=mode == "max")
        if at in rungs and len(active) > 1:
            keep = _round_up(math.ceil(len(active) * sweep.halving.keep), mesh.size, len(active))
            kept = sorted(order[:keep])
            for p in order[keep:]:
                records[active[p]]["status"] = f"stopped at rung {rungs.index(at) + 1}"
            active = [active[p] for p in kept]
            data_index = data_index[kept]
            state = pop.take(state, kept)
            mesh = pop.member_mesh(len(active), sweep.devices)
            state = pop.shard_members(state, mesh)
            train_data = pop.replicate(built.train_data, mesh)
            validation = pop.replicate(built.validation, mesh)
        elif (
            pbt_every
            and at < built.eval_points[-1]
            and int(at / pbt_every) > int((at - length) / pbt_every)
        ):
            state = _exploit_explore(state, order, active, records, sweep, swept, at, group.index)
            state = pop.shard_members(state, mesh)
        last = at == built.eval_points[-1]
        if last or evaluations % sweep.checkpoint_every == 0:
            position = None if last else {"group": group.index, "step": at, "active": active}
            _checkpoint(
                manager,
                state if not last else None,
                best,
                records,
                done + ([group.index] if last else []),
                position,
            )
    for member_id in active:
        records[member_id]["status"] = "finished"
    final = jax.device_get(pop.hyperparams(state))
    for pos, member_id in enumerate(active):
        records[member_id]["hyperparams"] = {k: float(v[pos]) for k, v in final.items()}
    manager.wait_until_finished()
    return {"members": active, "state": state}


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


def _exploit_explore(state, order, active, records, sweep, swept, step, group_index):
    """PBT: the worst members copy a best member's state (keeping their own key), then
    multiply each swept optimizer setting by a factor drawn from ``sweep.pbt.perturb``."""
    rng = np.random.default_rng([sweep.seed, group_index, step])
    n = len(active)
    q = max(1, int(n * sweep.pbt.fraction))
    sources = list(range(n))
    for p in order[n - q :]:
        sources[p] = order[int(rng.integers(0, q))]
    copied = pop.take(state, sources).replace(rng=state.rng)
    values = jax.device_get(pop.hyperparams(copied))
    changed = {name: np.array(values[name]) for name in swept}
    for p in order[n - q :]:
        for name in swept:
            factor = float(rng.choice(sweep.pbt.perturb))
            value = changed[name][p] * factor
            changed[name][p] = min(value, 0.9999) if name in _BOUNDED else value
        records[active[p]]["pbt"].append(
            {
                "step": step,
                "copied": active[sources[p]],
                **{name: float(changed[name][p]) for name in swept},
            }
        )
    return pop.with_hyperparams(copied, changed)


# ---------------------------------------------------------------------------------------------
# records, checkpoints, the best member


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


def _checkpoint(manager, state, best: _Best, records, done, position) -> None:
    meta = {
        "records": records,
        "done": done,
        "position": position,
        "best": {k: v for k, v in best.__dict__.items() if k != "state"},
    }
    items = {"meta": ocp.args.JsonSave(meta)}
    if state is not None:
        items["state"] = ocp.args.StandardSave(state)
    if best.state is not None:
        items["best"] = ocp.args.StandardSave(best.state)
    number = (manager.latest_step() or 0) + 1
    manager.save(number, args=ocp.args.Composite(**items))


def _restore(manager, item: str, like: Any) -> Any:
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    restored = manager.restore(
        manager.latest_step(), args=ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)})
    )
    return restored[item]


def _save_best(run_dir: Path, group: Group, best: _Best, monitor: str, mode: str) -> dict:
    """``best/``: the best member as a run directory (config, data statistics, checkpoint at
    its best step with the data position), evaluated on the test split."""
    chosen = next(m for m in group.members if m.index == best.member)
    member_config = chosen.config
    data = _build(replace(group, members=(chosen,)), light=True).data[member_config.data.seed]
    pieces = build_pieces(member_config, data)
    state = jax.device_put(best.state)
    target = run_dir / BEST_DIR
    target.mkdir(parents=True, exist_ok=True)
    dump_config(member_config, target / "config.yaml")
    (target / "data_stats.json").write_text(json.dumps(data.stats()))
    iterator = iter(
        train_batches(
            data.splits["train"],
            member_config.data.batch_size,
            member_config.train.epochs,
            member_config.data.seed,
        )
    )
    iterator.set_state({"next_index": best.step})
    checkpoints = Checkpoints(target / "checkpoints", member_config.train.checkpoint, monitor, mode)
    try:
        checkpoints.save(
            best.step, state, iterator, config_to_dict(member_config), metrics=best.validation
        )
        checkpoints.wait()
    finally:
        checkpoints.close()
    eval_step = jax.jit(make_eval_step(pieces.model, pieces.task))
    return evaluate(
        eval_step, state, data.splits["test"], member_config.data.eval_batch_size, pieces.task
    )
