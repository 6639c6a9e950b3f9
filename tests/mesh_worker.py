"""Mesh placements of the small Transformer LM, checked in one process of forced CPU devices
(run by ``tests/test_mesh.py`` with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``).

``python -m tests.mesh_worker OUT_DIR STEPS LAYOUT...`` trains ``STEPS`` steps of ``LM_YAML``
under each named layout of ``LAYOUTS`` (the first must be ``single``) through the run's own
pieces (``build_pieces``, ``build_placement``, ``make_advance``: the train loop's step and
placement), then writes

- ``OUT_DIR/<layout>.npz``: the final parameters and optimizer state, flattened by path;
- ``OUT_DIR/roundtrip_*.npz``: states before a checkpoint and after restoring it into another
  layout (FSDP saved, restored on one device; one device saved, restored and laid out for
  FSDP), through :class:`jaxtrain.checkpoint.Checkpoints` as the loop uses it;
- ``OUT_DIR/mesh.json``: per layout the bytes of parameters + optimizer state on each device
  (from the arrays' shardings), the specs of a few parameters, and how the restored arrays
  are laid out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

from tests.parallel_worker import LM_YAML, flat

LAYOUTS = {
    "single": "none",
    "sharded": "sharded",
    "pmap": "pmap",
    "fsdp": "fsdp",
    "4x2": "{mesh: {data: 4, model: 2}}",
    "4x2_fsdp": "{mesh: {data: 4, model: 2}, fsdp: true}",
}
SHOWN = ("['block_0']['mlp_in']['kernel']", "['block_0']['attn']['qkv']['kernel']")


def train(config_path: Path, parallel: str, steps: int, data=None):
    """``(config, pieces, placement, state)`` after ``steps`` steps under ``parallel``."""
    from jaxtrain.config import load_config
    from jaxtrain.train.advance import make_advance, training_stream
    from jaxtrain.train.parallel import build_placement
    from jaxtrain.train.pieces import build_pieces

    config = load_config(config_path, [f"train.parallel={parallel}"])
    pieces = build_pieces(config, data)
    placement = build_placement(config.train.parallel, pieces)
    iterator = iter(training_stream(config, pieces, placement))
    advance, _ = make_advance(config, pieces, placement, iterator)
    state = placement.put_state(pieces.state)
    for _ in range(steps):
        state, _ = advance(state, 1)
    return config, pieces, placement, state


def saved_and_restored(out: Path, name: str, config, pieces, state, into) -> dict:
    """Save ``state`` (a host state) with the run's Checkpoints, restore it as the loop does
    (into ``pieces.state``'s one-device layout, then ``into.put_state``); writes both."""
    checkpoints = pieces.checkpoints(out / name, config)
    checkpoints.save(3, state)
    checkpoints.wait()
    restored = into.put_state(checkpoints.restore(3, pieces.state))
    checkpoints.close()
    for kind, tree in (("saved", state), ("restored", restored)):
        keyless = tree.replace(rng=jax.random.key_data(tree.rng))
        np.savez(out / f"roundtrip_{name}_{kind}.npz", **flat(keyless))
    layout = {
        "restored_devices": sorted({len(x.sharding.device_set) for x in jax.tree.leaves(restored)})
    }
    if into.kind == "sharded":  # laid out exactly as the placement lays out a fresh state
        expected = jax.tree.leaves(into.state_shardings(restored))
        layout["restored_as_placed"] = all(
            leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
            for leaf, sharding in zip(jax.tree.leaves(restored), expected, strict=True)
        )
    return layout


def main(out_dir: str, steps: str, *layouts: str) -> None:
    from jaxtrain.compilation_cache import enable_compilation_cache
    from jaxtrain.train.mesh import bytes_per_device
    from jaxtrain.train.parallel import build_placement

    enable_compilation_cache()
    out = Path(out_dir)
    config_path = out / "lm.yaml"
    config_path.write_text(LM_YAML)
    report: dict = {"devices": jax.device_count(), "layouts": {}}
    data, states = None, {}
    for name in layouts:
        config, pieces, placement, state = train(config_path, LAYOUTS[name], int(steps), data)
        data = pieces.data
        host = placement.host_state(state)
        states[name] = (config, pieces, placement, host)
        np.savez(out / f"{name}.npz", **flat({"params": host.params, "opt": host.opt_state}))
        held = bytes_per_device((host.params, host.opt_state)) if name != "pmap" else {}
        flat_params = dict(jax.tree_util.tree_leaves_with_path(host.params))
        specs = {
            jax.tree_util.keystr(path): str(getattr(leaf.sharding, "spec", None))
            for path, leaf in flat_params.items()
        }
        report["layouts"][name] = {
            "describe": placement.describe(),
            "max_bytes_per_device": max(held.values()) if held else None,
            "specs": {key: specs[key] for key in SHOWN},
        }
    config, pieces, fsdp, fsdp_state = states[next(n for n in layouts if "fsdp" in n)]
    single = build_placement("none")
    report["fsdp_to_single"] = saved_and_restored(
        out, "fsdp_to_single", config, pieces, fsdp_state, single
    )
    report["single_to_fsdp"] = saved_and_restored(
        out, "single_to_fsdp", config, pieces, states["single"][3], fsdp
    )
    (out / "mesh.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
