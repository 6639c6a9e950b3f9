"""Trains one small config under a placement and saves its final state; run in a subprocess.

``python -m tests.parallel_worker OUT_DIR NAME [overrides...]`` writes ``OUT_DIR/NAME.npz``
(the final parameters and optimizer state, flattened) and ``OUT_DIR/NAME.json`` (test
metrics, steps, placement). Environment variables decide the devices (``XLA_FLAGS``) and,
with ``JAXTRAIN_COORDINATOR``/``JAXTRAIN_NUM_PROCESSES``/``JAXTRAIN_PROCESS_ID``, the process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

from jaxtrain.distributed import initialize, is_writer

YAML = """
name: parallel
seed: 0
data: {name: digits, batch_size: 64, eval_batch_size: 256}
model: {name: mlp, hidden: [32]}
optimizer: {name: adamw, learning_rate: 0.003}
train: {epochs: 1, eval_every: 10, log_every: 5, checkpoint: {async_save: false}}
"""


def flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(jax.device_get(leaf)) for path, leaf in leaves}


def main(out_dir: str, name: str, *overrides: str) -> None:
    initialize(None)  # from the environment when the test starts two processes
    from jaxtrain.config import load_config
    from jaxtrain.runner import train

    out = Path(out_dir)
    config_path = out / "parallel.yaml"
    if is_writer():
        config_path.write_text(YAML)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("config written")
    load_config(config_path, list(overrides))  # fail early on a bad override
    result = train(config_path, list(overrides), runs_dir=out / "runs", progress=False)
    state = result.state
    if is_writer():
        np.savez(out / f"{name}.npz", **flat({"params": state.params, "opt": state.opt_state}))
        (out / f"{name}.json").write_text(
            json.dumps(
                {
                    "test": result.test,
                    "step": result.step,
                    "devices": jax.device_count(),
                    "processes": jax.process_count(),
                    "run_dir": str(result.run_dir),
                }
            )
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
