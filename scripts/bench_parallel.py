"""Placements side by side on forced CPU devices: pmap, jit over a mesh, FSDP, tensor parallel.

Run: ``.venv/bin/python scripts/bench_parallel.py`` (it forces 8 CPU devices itself unless
``XLA_FLAGS`` is already set; ``BENCH_STEPS`` steps per timed block, default 20).

Each model trains under each ``train.parallel`` layout through the train loop's own pieces
(``build_pieces``, ``build_placement``, ``make_advance``): per step (one compiled call per
batch, the grain pipeline's batches) and fused (``train.fused_epochs``: ``BENCH_STEPS`` steps
as one ``lax.scan`` call over the split held on the devices). Three timed blocks after a
warm-up (compilation) call; the median block gives milliseconds per step and examples/s.
Also printed: the bytes of parameters + optimizer state the busiest device holds (read from
the arrays' shardings).

- ``mlp``: digits, 64-256-256-10, batch 256, AdamW;
- ``lm``: the byte-level Transformer LM on pydoc text, d_model 128, 4 heads, 2 layers,
  sequence 64, batch 32, AdamW.

The last line is ``jit_vs_pmap: X.XX``: per-step time of pmap over that of the jit mesh
(``sharded``) for the LM (above 1: the mesh path is faster).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxtrain.config import load_config  # noqa: E402
from jaxtrain.train.advance import make_advance, training_stream  # noqa: E402
from jaxtrain.train.mesh import bytes_per_device  # noqa: E402
from jaxtrain.train.parallel import build_placement  # noqa: E402
from jaxtrain.train.pieces import build_pieces  # noqa: E402

STEPS = int(os.environ.get("BENCH_STEPS", 20))
MODELS = {
    "mlp": """
name: bench_mlp
data: {name: digits, batch_size: 256}
model: {name: mlp, hidden: [256, 256]}
optimizer: {name: adamw, learning_rate: 0.003}
train: {epochs: 100}
""",
    "lm": """
name: bench_lm
data: {name: pydoc_text, sequence_length: 64, batch_size: 32}
model: {name: transformer_lm, d_model: 128, num_heads: 4, num_layers: 2}
optimizer: {name: adamw, learning_rate: 0.001}
train: {epochs: 2}
""",
}
LAYOUTS = {
    "none": "none",
    "pmap": "pmap",
    "sharded": "sharded",
    "fsdp": "fsdp",
    "4x2": "{mesh: {data: 4, model: 2}}",
    "4x2_fsdp": "{mesh: {data: 4, model: 2}, fsdp: true}",
}


def measure(config_path: Path, layout: str, fused: bool, data) -> tuple[float, int, object]:
    """(median ms per step, busiest device's state bytes, data) for one layout."""
    overrides = [f"train.parallel={LAYOUTS[layout]}", f"train.fused_epochs={str(fused).lower()}"]
    config = load_config(config_path, overrides)
    pieces = build_pieces(config, data)
    placement = build_placement(config.train.parallel, pieces)
    iterator = iter(training_stream(config, pieces, placement))
    advance, _ = make_advance(config, pieces, placement, iterator)
    state = placement.put_state(pieces.state)
    count = STEPS if fused else 1

    def block(state):
        for _ in range(STEPS // count):
            state, metrics = advance(state, count)
        jax.block_until_ready((state, metrics))
        return state

    state = block(state)  # compiles
    times = []
    for _ in range(3):
        started = time.perf_counter()
        state = block(state)
        times.append((time.perf_counter() - started) / STEPS * 1e3)
    host = placement.host_state(state)
    held = max(bytes_per_device((host.params, host.opt_state)).values()) if layout != "pmap" else 0
    return statistics.median(times), held, pieces.data


def main() -> None:
    print(
        f"jax {jax.__version__} on {jax.default_backend()}; {jax.device_count()} devices on "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}); "
        f"{STEPS} steps per block"
    )
    print(f"{'model':6}{'layout':10}{'per-step ms':>13}{'ex/s':>10}{'fused ms':>11}{'ex/s':>10}"
          f"{'state MB/dev':>14}")  # fmt: skip
    per_step: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for model, text in MODELS.items():
            path = Path(folder) / f"{model}.yaml"
            path.write_text(text)
            batch = load_config(path).data.batch_size
            data = None
            for layout in LAYOUTS:
                if model == "mlp" and layout.startswith("4x2"):
                    continue  # the MLP names no tensor-parallel axes
                step_ms, held, data = measure(path, layout, False, data)
                fused_ms, _, data = measure(path, layout, True, data)
                per_step[model, layout] = step_ms
                held_text = f"{held / 1e6:14.3f}" if held else f"{'(replicas)':>14}"
                print(
                    f"{model:6}{layout:10}{step_ms:13.2f}{batch / step_ms * 1e3:10,.0f}"
                    f"{fused_ms:11.2f}{batch / fused_ms * 1e3:10,.0f}{held_text}"
                )
    print(f"jit_vs_pmap: {per_step['lm', 'pmap'] / per_step['lm', 'sharded']:.2f}")


if __name__ == "__main__":
    main()
