"""``run_federated(config, run_dir, data)``: the host loop around the jitted round.

Thin like ``train/loop.py``: build the pieces, then per round call the one compiled program,
log, evaluate the global model every ``federated.eval_every`` rounds, checkpoint the server
state (Orbax), and at the end evaluate on test and write ``metrics.json``, plots and
``report.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from jaxtrain.config import Config, config_to_dict
from jaxtrain.config.federated import FederatedConfig
from jaxtrain.data import PreparedData
from jaxtrain.federated.client import make_local_train, num_local_steps
from jaxtrain.federated.partition import ClientData, describe, pack_clients, partition
from jaxtrain.federated.privacy import dp_epsilon
from jaxtrain.federated.server import (
    ServerState,
    build_aggregator,
    build_server_optimizer,
    init_server_state,
    make_round,
)
from jaxtrain.logging import (
    MetricWriter,
    plot_confusion_matrix,
    plot_learning_curves,
    read_metrics,
    truncate_after,
    write_report,
)
from jaxtrain.models import build_model, build_penalty, is_fitted
from jaxtrain.train.callbacks import Callback, chain
from jaxtrain.train.evaluate import evaluate, scalars
from jaxtrain.train.loop import DATA_STATS_FILE
from jaxtrain.train.optim import build_optimizer
from jaxtrain.train.state import count_params, create_train_state
from jaxtrain.train.step import make_eval_step
from jaxtrain.train.tasks import Task, task_for

CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class FederatedPieces:
    """Everything built from a config before the first round (deterministic in its seeds)."""

    data: PreparedData
    model: Any
    task: Task
    parts: list[np.ndarray]
    clients: ClientData  # on the device
    server: ServerState  # before round 1
    run_round: Any  # jitted (server, clients) -> (server, metrics)
    local_steps: int  # steps every client scans per round (idle ones masked)


def federated_section(config: Config) -> FederatedConfig:
    """``config.federated``, or a ValueError telling the user to add it."""
    if config.federated is None:
        raise ValueError("federated: the config has no federated section (see docs/federated.md)")
    return config.federated


def check_federated(config: Config, data: PreparedData) -> None:
    """The cheap checks of :func:`build_federated`, for a runner to call before it creates a
    run directory: a ValueError names the config key at fault."""
    _partition(config, data)


def _partition(config: Config, data: PreparedData) -> list[np.ndarray]:
    fed = federated_section(config)
    if is_fitted(config.model):
        raise ValueError(f"model.name: {config.model.name} is fitted in one step, not federated")
    return partition(
        data.splits["train"].labels,
        fed.num_clients,
        fed.partition,
        alpha=fed.alpha,
        shards_per_client=fed.shards_per_client,
        seed=fed.seed,
    )


def build_federated(config: Config, data: PreparedData) -> FederatedPieces:
    """Partition, model, client and server optimizers, the initial server state and the jitted
    round for ``config``. ValueErrors name the config key at fault."""
    fed = federated_section(config)
    parts = _partition(config, data)
    train = data.splits["train"]
    batch_size = fed.batch_size or config.data.batch_size
    clients = pack_clients(train, parts, batch_size)
    padded = clients.inputs.shape[1]
    steps = num_local_steps(padded, batch_size, fed.local_epochs, fed.local_steps)
    model = build_model(config.model, data.num_outputs, data.input_shape)
    task = task_for(data)
    tx = build_optimizer(config.optimizer, steps)  # the client schedule spans one round
    initial = create_train_state(model, tx, data.input_shape, config.seed, train.inputs.dtype)
    local_train = make_local_train(
        model,
        tx,
        task,
        padded_size=padded,
        batch_size=batch_size,
        local_epochs=fed.local_epochs,
        local_steps=fed.local_steps,
        mu=fed.mu if fed.algorithm == "fedprox" else 0.0,
        penalty=build_penalty(config.model),
    )
    server_tx = build_server_optimizer(fed.server_optimizer)
    scaffold = fed.algorithm == "scaffold"
    run_round = make_round(
        local_train,
        build_aggregator(fed),
        server_tx,
        clients_per_round=fed.clients_per_round,
        size_weighted=fed.dp is None,
        scaffold_learning_rate=config.optimizer.learning_rate if scaffold else None,
    )
    server = init_server_state(
        initial.params, initial.model_state, server_tx, fed.num_clients, fed.seed, scaffold
    )
    return FederatedPieces(
        data, model, task, parts, jax.device_put(clients), server, jax.jit(run_round), steps
    )


def run_federated(
    config: Config,
    run_dir: Path,
    data: PreparedData,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: tuple[Callback, ...] = (),
) -> dict[str, Any]:
    """Run ``config.federated.rounds`` rounds in ``run_dir`` (which must exist).

    Every round is logged (``train`` records: the clients' mean local ``loss``, ``loss_std``,
    ``update_norm``, ``epsilon`` with dp); the server state is checkpointed every
    ``checkpoint_every`` rounds and the global model evaluated on validation every
    ``eval_every`` rounds, both also after the last. With ``resume`` the latest
    checkpoint is restored and the run continues exactly (bitwise) as if never stopped; a
    callback's ``on_step(round)`` may stop it early. Returns ``{"status": "finished" |
    "stopped", "round", "rounds", "validation", "test", "epsilon", "run_dir", "server"}``
    (``server``: the final :class:`ServerState`; ``test`` is None when stopped).
    """
    run_dir = Path(run_dir)
    fed = federated_section(config)
    pieces = build_federated(config, data)
    (run_dir / DATA_STATS_FILE).write_text(json.dumps(data.stats()))  # reused on resume
    keep = config.train.checkpoint.keep
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=config.train.checkpoint.async_save
    )
    manager = ocp.CheckpointManager((run_dir / CHECKPOINT_DIR).absolute(), options=options)
    try:
        return _run(config, fed, run_dir, pieces, manager, resume, progress, chain(*callbacks))
    finally:
        manager.close()


def _run(config, fed, run_dir, pieces, manager, resume, progress, callback) -> dict[str, Any]:
    """The loop proper (see :func:`run_federated`)."""
    server, data, task = pieces.server, pieces.data, pieces.task
    eval_step = jax.jit(make_eval_step(pieces.model, task))
    config_dict = config_to_dict(config)
    resumed_from = 0
    if resume:
        latest = manager.latest_step()
        if latest is not None:
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, server)
            args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            server = manager.restore(latest, args=args).state
            resumed_from = latest
        truncate_after(run_dir, resumed_from)
    sampling_rate = fed.clients_per_round / fed.num_clients
    status, validation = "finished", {}
    started = time.perf_counter()
    compile_s = 0.0
    round_ = resumed_from
    with (
        MetricWriter(run_dir, purge_step=resumed_from + 1 if resumed_from else None) as writer,
        tqdm(
            total=fed.rounds,
            initial=round_,
            disable=None if progress else True,
            desc=config.name,
            unit="round",
        ) as bar,
    ):
        while round_ < fed.rounds:
            server, metrics = pieces.run_round(server, pieces.clients)
            round_ += 1
            logged = {k: float(v) for k, v in jax.device_get(metrics).items()}
            if not compile_s:
                compile_s = time.perf_counter() - started
            if fed.dp is not None:
                logged["epsilon"] = dp_epsilon(
                    fed.dp.noise_multiplier, sampling_rate, round_, fed.dp.delta
                )
            writer.write(round_, "train", logged)
            bar.set_postfix(loss=f"{logged['loss']:.4f}")
            bar.update(1)
            stop = False
            if round_ % fed.eval_every == 0 or round_ == fed.rounds:
                validation = evaluate(
                    eval_step, server, data.splits["validation"], config.data.eval_batch_size, task
                )
                writer.write(round_, "validation", scalars(validation))
                stop = callback.on_eval(round_, validation)
            stop = callback.on_step(round_) or stop
            if round_ % fed.checkpoint_every == 0 or round_ == fed.rounds or stop:
                args = ocp.args.Composite(
                    state=ocp.args.StandardSave(server), config=ocp.args.JsonSave(config_dict)
                )
                manager.save(round_, args=args)
            if stop and round_ < fed.rounds:
                status = "stopped"
                break
    manager.wait_until_finished()
    seconds = time.perf_counter() - started
    epsilon = None
    if fed.dp is not None:
        epsilon = dp_epsilon(fed.dp.noise_multiplier, sampling_rate, round_, fed.dp.delta)
    result = {
        "status": status,
        "round": round_,
        "rounds": fed.rounds,
        "validation": validation,
        "test": None,
        "epsilon": epsilon,
        "run_dir": str(run_dir),
        "server": server,
    }
    if status == "finished":
        test = evaluate(eval_step, server, data.splits["test"], config.data.eval_batch_size, task)
        training = {
            "rounds": round_,
            "steps": round_,
            "wall_time_s": seconds,
            "compile_s": compile_s,
            "rounds_per_s": (round_ - resumed_from - 1) / (seconds - compile_s)
            if round_ - resumed_from > 1 and seconds > compile_s
            else None,
            "resumed_from": resumed_from or None,
        }
        _write_outputs(config, fed, run_dir, pieces, server, validation, test, training, epsilon)
        result["test"] = test
    return result


def _write_outputs(config, fed, run_dir, pieces, server, validation, test, training, epsilon):
    """metrics.json, learning curves (per round), the confusion matrix and report.md."""
    data = pieces.data
    partition_summary = describe(pieces.parts, data.splits["train"].labels)
    privacy = None if fed.dp is None else {"epsilon": epsilon, "delta": fed.dp.delta}
    summary = {
        "name": config.name,
        "task": data.task,
        "algorithm": fed.algorithm,
        "validation": validation,
        "test": test,
        "privacy": privacy,
        "partition": partition_summary,
        "training": training,
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    records = read_metrics(run_dir)
    plots = {}
    if records:
        plots["learning_curves"] = plot_learning_curves(
            records, run_dir / "learning_curves.png", metrics=("loss", "accuracy", "epsilon")
        ).name
    if "confusion_matrix" in test:
        plots["confusion_matrix"] = plot_confusion_matrix(
            test["confusion_matrix"], data.class_names, run_dir / "confusion_matrix.png"
        ).name
    server_opt = fed.server_optimizer
    settings = [
        ("algorithm", fed.algorithm),
        ("clients", f"{fed.num_clients} ({fed.partition} partition)"),
        ("clients per round", fed.clients_per_round),
        ("local steps per round (largest client)", pieces.local_steps),
        ("server optimizer", f"{server_opt.name}, learning rate {server_opt.learning_rate}"),
        ("secure aggregation", fed.secure_aggregation),
        *[(f"partition {k.replace('_', ' ')}", v) for k, v in partition_summary.items()],
    ]
    if privacy is not None:
        settings += [
            ("dp clip norm", fed.dp.clip_norm),
            ("dp noise multiplier", fed.dp.noise_multiplier),
            (f"epsilon at delta={fed.dp.delta:g}", epsilon),
        ]
    environment_file = run_dir / "environment.json"
    write_report(
        run_dir,
        {
            "name": config.name,
            "config": config_to_dict(config),
            "dataset": {
                "name": data.name,
                "num_classes": data.num_classes if data.task == "classification" else None,
                "class_names": list(data.class_names),
                "sizes": data.sizes(),
            },
            "model": {"name": config.model.name, "num_params": count_params(server.params)},
            "training": {**training, "steps": training["rounds"]},
            "validation": scalars(validation),
            "test": test,
            "sections": {
                "Federated (steps are rounds)": [
                    "| setting | value |",
                    "|---|---|",
                    *[f"| {k} | {v} |" for k, v in settings],
                ]
            },
            "plots": plots,
            "environment": json.loads(environment_file.read_text())
            if environment_file.exists()
            else {},
        },
    )
