"""Trains small configs under placements and saves their final states; run in a subprocess
(the device count is fixed when JAX starts: ``XLA_FLAGS`` and, for several processes,
``JAXTRAIN_COORDINATOR``/``JAXTRAIN_NUM_PROCESSES``/``JAXTRAIN_PROCESS_ID``).

``python -m tests.parallel_worker OUT_DIR SPEC...`` where a SPEC is ``NAME=OVERRIDES``, the
overrides separated by ``;`` (``pmap=train.parallel=pmap``), or
``NAME=OVERRIDES>STOP>RESUME_OVERRIDES``: stopped after STOP steps, then resumed with the
resume overrides (a checkpoint of one placement restored by another). Three tokens may stand
among the overrides: ``@lm`` trains the small Transformer LM of ``LM_YAML`` instead of the
digits MLP, ``@until=N`` stops every leg of the run after step N (its state is then the one
compared), ``@report`` runs the analysis stage (plots, ``report.md``), which is skipped
otherwise (what is compared is the trained state and the test metrics). Process 0 writes
``OUT_DIR/NAME.npz`` (final parameters and optimizer state, flattened by path) and
``OUT_DIR/NAME.json`` (test metrics, steps, devices, processes) for each.
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

# A byte-level LM small enough for CPU (584 steps an epoch: runs stop with @until=N).
LM_YAML = """
name: parallel_lm
seed: 0
data: {name: pydoc_text, sequence_length: 32, batch_size: 16, eval_batch_size: 64}
model: {name: transformer_lm, d_model: 32, num_heads: 4, num_layers: 1}
optimizer: {name: adamw, learning_rate: 0.001}
train: {epochs: 1, eval_every: 25, log_every: 5, checkpoint: {async_save: false}}
"""


def flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(jax.device_get(leaf)) for path, leaf in leaves}


def run(out: Path, config_path: Path, name: str, spec: str):
    from jaxtrain.config import dump_config, load_config
    from jaxtrain.runner import new_run_dir, train
    from jaxtrain.train import stop_at_step, train_and_evaluate

    first, _, rest = spec.partition(">")
    tokens = [o for o in first.split(";") if o]
    if "@lm" in tokens:
        config_path = config_path.with_name("lm.yaml")
    until = [int(t.split("=")[1]) for t in tokens if t.startswith("@until=")]
    callbacks = (stop_at_step(until[0]),) if until else ()
    report = "@report" in tokens
    overrides = [o for o in tokens if not o.startswith("@")]
    if not rest and not until:
        return train(config_path, overrides, runs_dir=out / "runs", progress=False, report=report)
    config = load_config(config_path, overrides)
    run_dir = new_run_dir(out / "runs", name)
    dump_config(config, run_dir / "config.yaml")
    if not rest:
        return train_and_evaluate(
            config, run_dir, callbacks=callbacks, progress=False, report=report
        )
    stop, _, resume_overrides = rest.partition(">")
    stopped = train_and_evaluate(
        config, run_dir, callbacks=(stop_at_step(int(stop)),), progress=False
    )
    assert stopped.status == "stopped", stopped
    resume_overrides = [o for o in resume_overrides.split(";") if o]
    if not until:  # the command's own resume path
        return train(None, resume_overrides, resume=run_dir, progress=False, report=report)
    resume = load_config(run_dir / "config.yaml", resume_overrides)
    return train_and_evaluate(
        resume, run_dir, resume=True, callbacks=callbacks, progress=False, report=report
    )


def main(out_dir: str, *specs: str) -> None:
    initialize(None)  # from the environment when the test starts several processes
    out = Path(out_dir)
    config_path = out / "parallel.yaml"
    if is_writer():
        config_path.write_text(YAML)
        config_path.with_name("lm.yaml").write_text(LM_YAML)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("config written")
    for item in specs:
        name, _, spec = item.partition("=")
        result = run(out, config_path, name, spec)
        if is_writer():
            state = {"params": result.state.params, "opt": result.state.opt_state}
            np.savez(out / f"{name}.npz", **flat(state))
            summary = {
                "test": result.test,
                "step": result.step,
                "devices": jax.device_count(),
                "processes": jax.process_count(),
                "run_dir": str(result.run_dir),
            }
            (out / f"{name}.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main(*sys.argv[1:])
