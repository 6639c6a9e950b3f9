"""Runs ``jaxtrain sweep`` in one process of a multi-process job (or alone) and saves what it
trained; started by tests/test_sweep_processes.py (the device count is fixed when JAX starts).

``python -m tests.sweep_worker CONFIG RUNS_DIR OUT [overrides...]``: the sweep runs through
the runner's ``sweep_run`` (process 0 creates the sweep directory, ``distributed:`` joins the
job from ``JAXTRAIN_COORDINATOR``/``JAXTRAIN_NUM_PROCESSES``/``JAXTRAIN_PROCESS_ID``).
Process 0 writes ``OUT.npz`` (each member's final parameters, ``m<member>/<path>``) and
``OUT.json`` (devices, processes, the sweep directory, the rows).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np


def main(config: str, runs_dir: str, out: str, *overrides: str) -> None:
    from jaxtrain.runner import sweep_run
    from jaxtrain.sweep import population as pop

    run_dir, result = sweep_run(config, list(overrides), runs_dir=runs_dir, progress=False)
    arrays = {}
    for population in result.get("populations", {}).values():
        params = pop.fetch(population["state"].params)  # every process takes part
        sharded = jax.tree.leaves(population["state"].params)[0]
        for position, member in enumerate(population["members"]):
            for path, leaf in jax.tree_util.tree_leaves_with_path(params):
                arrays[f"m{member}/{jax.tree_util.keystr(path)}"] = np.asarray(leaf[position])
    if jax.process_index() == 0:
        np.savez(f"{out}.npz", **arrays)
        summary = {
            "devices": jax.device_count(),
            "processes": jax.process_count(),
            "population_devices": len(sharded.sharding.device_set) if arrays else 0,
            "run_dir": str(run_dir),
            "members": result["members"],
        }
        Path(f"{out}.json").write_text(json.dumps(summary, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:])
