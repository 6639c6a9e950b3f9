"""``run_federated(config, run_dir, data)``: the one host loop around the jitted round.

The same loop as ``jaxtrain train`` (:func:`jaxtrain.train.periodic.run_periodic`) with a
round as its step: log every round, evaluate the global model every ``federated.eval_every``
rounds, checkpoint the server state every ``federated.checkpoint_every`` (one
:class:`jaxtrain.checkpoint.Checkpoints`, digests and fallback included), and at the end
evaluate on test and write metrics.json, plots and report.md through the run's one writer.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxtrain.checkpoint import Checkpoints
from jaxtrain.config import Config, ConfigError, config_to_dict
from jaxtrain.config.federated import FederatedConfig
from jaxtrain.config.verbs import check_verb
from jaxtrain.data import PreparedData
from jaxtrain.federated.client import make_local_train, num_local_steps
from jaxtrain.federated.partition import ClientData, describe, pack_clients, partition
from jaxtrain.federated.privacy import federated_epsilon, federated_epsilons, privacy_report
from jaxtrain.federated.server import (
    ServerState,
    build_aggregator,
    build_server_optimizer,
    init_server_state,
    make_round,
    round_options,
)
from jaxtrain.files import write_json
from jaxtrain.logging import truncate_after
from jaxtrain.logging.outputs import RunOutputs
from jaxtrain.logging.progress import Progress
from jaxtrain.models import is_fitted
from jaxtrain.train.callbacks import Callback, chain
from jaxtrain.train.evaluate import evaluate, scalars
from jaxtrain.train.loop import DATA_STATS_FILE
from jaxtrain.train.periodic import Every, Halt, run_periodic
from jaxtrain.train.pieces import Pieces, build_pieces, build_step
from jaxtrain.train.post_run import analyse_run
from jaxtrain.train.step import make_eval_step
from jaxtrain.train.train_log import NonFiniteError

CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class FederatedPieces:
    """Everything built from a config before the first round (deterministic in its seeds)."""

    data: PreparedData
    model: Any
    task: Any
    parts: list[np.ndarray]
    clients: ClientData  # on the device
    server: ServerState  # before round 1
    run_round: Any  # jitted (server, clients) -> (server, metrics)
    local_steps: int  # steps every client scans per round (idle ones masked)
    pieces: Pieces | None = None  # the one step's pieces (model, optimizer, task, penalty)


def federated_section(config: Config) -> FederatedConfig:
    """``config.federated``, or a ConfigError telling the user to add it."""
    if config.federated is None:
        raise ConfigError("federated: the config has no federated section (see docs/federated.md)")
    return config.federated


def check_federated(config: Config, data: PreparedData) -> None:
    """The cheap checks of :func:`build_federated`, for a runner to call before it creates a
    run directory: a ValueError names the config key at fault."""
    check_verb(config, "federated")
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
    round for ``config``. Clients train with the run's one step (:func:`build_step`).
    ValueErrors name the config key at fault."""
    fed = federated_section(config)
    check_verb(config, "federated")
    parts = _partition(config, data)
    batch_size = fed.batch_size or config.data.batch_size
    largest = max(max(len(p) for p in parts), 1)
    padded = max(1, math.ceil(largest / batch_size)) * batch_size  # pack_clients' length
    steps = num_local_steps(padded, batch_size, fed.local_epochs, fed.local_steps)
    pieces = build_pieces(config, data, steps=steps)  # the client schedule spans one round
    clients = pack_clients(pieces.data.splits["train"], parts, batch_size)
    local_train = make_local_train(
        functools.partial(build_step, config, pieces),
        pieces.tx,
        padded_size=padded,
        batch_size=batch_size,
        local_epochs=fed.local_epochs,
        local_steps=fed.local_steps,
        mu=fed.mu if fed.algorithm == "fedprox" else 0.0,
    )
    server_tx = build_server_optimizer(fed.server_optimizer)
    scaffold = fed.algorithm == "scaffold"
    run_round = make_round(
        local_train,
        build_aggregator(fed),
        server_tx,
        **round_options(fed),
        scaffold_learning_rate=config.optimizer.learning_rate if scaffold else None,
    )
    initial = pieces.state
    server = init_server_state(
        initial.params, initial.model_state, server_tx, fed.num_clients, fed.seed, scaffold
    )
    return FederatedPieces(pieces.data, pieces.model, pieces.task, parts,
                           jax.device_put(clients), server, jax.jit(run_round), steps,
                           pieces)  # fmt: skip


def run_federated(
    config: Config,
    run_dir: Path,
    data: PreparedData,
    *,
    resume: bool = False,
    progress: bool = True,
    callbacks: tuple[Callback, ...] = (),
    report: bool = True,
) -> dict[str, Any]:
    """Run ``config.federated.rounds`` rounds in ``run_dir`` (which must exist).

    Every round is logged (``train`` records: the clients' mean local ``loss``, ``loss_std``,
    ``update_norm``, ``epsilon`` with dp); the server state is checkpointed every
    ``checkpoint_every`` rounds and the global model evaluated on validation every
    ``eval_every`` rounds, both also after the last. With ``resume`` the newest intact
    checkpoint is restored and the run continues exactly (bitwise) as if never stopped; a
    callback's ``on_step(round)`` may stop it early. A round whose loss is not finite stops
    the run under ``train.nonfinite: stop`` and is counted under ``skip``. Returns
    ``{"status": "finished" | "stopped", "round", "rounds", "validation", "test", "epsilon",
    "run_dir", "server"}`` (``test`` is None when stopped).
    """
    run_dir = Path(run_dir)
    fed = federated_section(config)
    pieces = build_federated(config, data)
    if not resume:
        write_json(run_dir / DATA_STATS_FILE, data.stats())  # reused on resume
    checkpoints = Checkpoints(run_dir / CHECKPOINT_DIR, config.train.checkpoint)
    try:
        return _run(config, fed, run_dir, pieces, checkpoints, resume, progress,
                    chain(*callbacks), report)  # fmt: skip
    finally:
        checkpoints.close()


def _run(config, fed, run_dir, pieces, checkpoints, resume, progress, callback, report):
    """The loop proper (see :func:`run_federated`)."""
    data, task = pieces.data, pieces.task
    eval_step = jax.jit(make_eval_step(pieces.model, task))
    config_dict = config_to_dict(config)
    server, resumed_from = pieces.server, 0
    if resume:
        found, parts = checkpoints.latest_good({"state": server})
        if found is not None:
            server, resumed_from = parts["state"], found
        truncate_after(run_dir, resumed_from)
    epsilon_at = {}
    if fed.dp is not None:  # the curve, once: RDP every round (ms), PLD every eval round (s)
        every = 1 if fed.dp.accountant == "rdp" else fed.eval_every
        logged = [r for r in range(1, fed.rounds + 1) if r % every == 0 or r == fed.rounds]
        epsilon_at = dict(zip(logged, federated_epsilons(fed, logged), strict=True))
    seen = {"validation": {}, "saved": None, "skipped": 0, "compile_s": 0.0}
    started = time.perf_counter()

    def epsilon(rounds: int) -> float | None:
        return None if fed.dp is None else federated_epsilon(fed, rounds)

    def advance(server, count):
        server, metrics = pieces.run_round(server, pieces.clients)
        if not seen["compile_s"]:
            jax.block_until_ready(metrics)
            seen["compile_s"] = time.perf_counter() - started
        return server, metrics

    def log(round_, count, metrics):
        logged = {k: float(v) for k, v in jax.device_get(metrics).items()}
        # The mean of the clients' updates is finite whenever their losses are (and it is
        # logged in every mode, as privatised rounds keep only that).
        watched = [
            v for k, v in logged.items() if k in ("loss", "update_norm", "noisy_update_norm")
        ]
        if not all(math.isfinite(v) for v in watched):
            if config.train.nonfinite == "stop":
                raise NonFiniteError(
                    f"round {round_}: the clients' mean loss is not finite; lower "
                    "optimizer.learning_rate, clip gradients or set train.nonfinite=skip"
                )
            seen["skipped"] += 1
        if round_ in epsilon_at:
            logged["epsilon"] = epsilon_at[round_]
        outputs.log(round_, "train", logged)
        bar.record(round_, "train", logged)  # no loss with federated.dp.log: private

    def validate(round_, server):
        seen["validation"] = evaluate(
            eval_step, server, data.splits["validation"], config.data.eval_batch_size, task
        )
        outputs.log(round_, "validation", scalars(seen["validation"]))
        bar.record(round_, "validation", scalars(seen["validation"]))
        if callback.on_eval(round_, seen["validation"]) and round_ < fed.rounds:
            save(round_, server)
            raise Halt("stopped")

    def save(round_, server):
        checkpoints.save(round_, server, config=config_dict)
        seen["saved"] = round_

    purge = resumed_from + 1 if resumed_from else None
    with (
        RunOutputs(run_dir, purge_step=purge, config=config) as outputs,
        Progress(
            fed.rounds,
            initial=resumed_from,
            desc=config.name,
            unit="round",
            enabled=progress,
            every=config.train.log_every,
        ) as bar,
    ):
        outcome = run_periodic(
            server,
            resumed_from,
            fed.rounds,
            advance,
            [Every(fed.eval_every, validate), Every(fed.checkpoint_every, save)],
            sink=log,
            should_stop=callback.on_step,
            progress=bar.update,
        )
        round_, server = outcome.step, outcome.state
        if outcome.status == "stopped" and seen["saved"] != round_:
            save(round_, server)
        checkpoints.wait()
        seconds = time.perf_counter() - started
        result = {"status": outcome.status, "round": round_, "rounds": fed.rounds,
                  "validation": seen["validation"], "test": None, "epsilon": epsilon(round_),
                  "run_dir": str(run_dir), "server": server}  # fmt: skip
        if outcome.status != "finished":
            outputs.status = "KILLED"  # the tracked run is resumable, not finished
            return result
        if seen["skipped"]:
            print(f"jaxtrain: warning: {seen['skipped']} round(s) had a non-finite loss "
                  "(train.nonfinite=skip)", file=sys.stderr)  # fmt: skip
        test = evaluate(eval_step, server, data.splits["test"], config.data.eval_batch_size, task)
        timed = round_ - resumed_from - 1
        training = {
            "rounds": round_,
            "steps": round_,
            "wall_time_s": seconds,
            "compile_s": seen["compile_s"],
            "rounds_per_s": timed / (seconds - seen["compile_s"])
            if timed > 0 and seconds > seen["compile_s"]
            else None,
            "resumed_from": resumed_from or None,
            "skipped_nonfinite_rounds": seen["skipped"],
        }
        summary = federated_summary(config, pieces, seen["validation"], test, training,
                                    result["epsilon"])  # fmt: skip
        outputs.summary(summary)
        if report:
            analyse_run(config, run_dir, pieces.pieces, server, outputs=outputs,
                        with_cost=False, sections=report_sections(config, summary),
                        curves=("loss", "accuracy", "epsilon"), core=summary)  # fmt: skip
        result["test"] = test
    return result


def federated_summary(config, pieces, validation, test, training, epsilon) -> dict[str, Any]:
    """The core metrics.json of a federated run (the analysis stage adds to it)."""
    fed = config.federated
    report = None if fed.dp is None else privacy_report(fed, rounds=training["rounds"])
    privacy = None if report is None else {k: v for k, v in report.items() if k != "lines"}
    return {
        "name": config.name,
        "model": config.model.name,
        "task": pieces.data.task,
        "best_step": None,
        "monitor": "the global model after the last round",
        "validation": validation,
        "test": test,
        "algorithm": fed.algorithm,
        "privacy": privacy,
        "partition": describe(pieces.parts, pieces.data.splits["train"].labels),
        "local_steps": pieces.local_steps,
        "training": training,
    }


def report_sections(config: Config, summary: dict[str, Any]) -> dict[str, list[str]]:
    """The federated settings table of report.md (steps are rounds)."""
    fed = config.federated
    server_opt = fed.server_optimizer
    settings = [
        ("algorithm", fed.algorithm),
        ("clients", f"{fed.num_clients} ({fed.partition} partition)"),
        ("clients per round", fed.clients_per_round),
        ("local steps per round (largest client)", summary.get("local_steps")),
        ("server optimizer", f"{server_opt.name}, learning rate {server_opt.learning_rate}"),
        ("secure aggregation", fed.secure_aggregation),
        *[(f"partition {k.replace('_', ' ')}", v) for k, v in summary["partition"].items()],
    ]
    table = ["| setting | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in settings]]
    sections = {"Federated (steps are rounds)": table}
    if fed.dp is not None:
        sections["Privacy"] = privacy_report(fed, rounds=summary["training"]["rounds"])["lines"]
    return sections


def report_federated(config: Config, run_dir: Path, data: PreparedData) -> dict[str, Any]:
    """The analysis stage of a finished federated run, re-run from its directory: the
    server state of its last checkpoint, the core metrics.json it wrote."""
    from jaxtrain.files import read_json

    pieces = build_federated(config, data)
    with Checkpoints(run_dir / CHECKPOINT_DIR, config.train.checkpoint) as checkpoints:
        found, parts = checkpoints.latest_good({"state": pieces.server})
    if found is None:
        raise ConfigError(f"{run_dir / CHECKPOINT_DIR}: no checkpoint of the server state")
    summary = read_json(run_dir / "metrics.json", "metrics.json")
    return analyse_run(config, run_dir, pieces.pieces, parts["state"], with_cost=False,
                       sections=report_sections(config, summary),
                       curves=("loss", "accuracy", "epsilon"))  # fmt: skip
