"""The best member of a sweep as an ordinary run directory (``jaxtrain eval`` works on it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from jaxtrain.checkpoint import Checkpoints
from jaxtrain.config import Config, config_to_dict, dump_config
from jaxtrain.data import train_batches
from jaxtrain.distributed import is_writer
from jaxtrain.files import write_json
from jaxtrain.sweep.build import prepare_group_data
from jaxtrain.sweep.population import AXIS, replicate
from jaxtrain.sweep.space import Group, Member
from jaxtrain.train.evaluate import evaluate
from jaxtrain.train.pieces import build_pieces
from jaxtrain.train.step import make_eval_step


def save_best(target: Path, config: Config, best: Any, monitor: str, mode: str) -> dict:
    """``target/``: the member's config, data statistics and a checkpoint at its best step
    (with the data position it had reached), then its test metrics (returned).

    Across processes each one evaluates its own copy on its own device, and the checkpoint
    is saved by all of them together (Orbax writes each replicated array once)."""
    member = Member(best.member, {}, config)
    data = prepare_group_data(Group(best.group, {}, (member,)))[config.data.seed]
    pieces = build_pieces(config, data)
    state = jax.device_put(best.state, jax.local_devices()[0])
    saved_state = state
    if jax.process_count() > 1:
        saved_state = replicate(best.state, Mesh(np.asarray(jax.devices()), (AXIS,)))
    if is_writer():
        target.mkdir(parents=True, exist_ok=True)
        dump_config(config, target / "config.yaml")
        write_json(target / "data_stats.json", data.stats())
    split = data.splits["train"]
    iterator = iter(
        train_batches(split, config.data.batch_size, config.train.epochs, config.data.seed)
    )
    iterator.set_state({"next_index": best.step})
    with Checkpoints(target / "checkpoints", config.train.checkpoint, monitor, mode) as saved:
        saved.save(
            best.step, saved_state, iterator, config_to_dict(config), metrics=best.validation
        )
        saved.wait()
    eval_step = jax.jit(make_eval_step(pieces.model, pieces.task))
    return evaluate(eval_step, state, data.splits["test"], config.data.eval_batch_size, pieces.task)
