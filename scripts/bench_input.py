"""Is the input pipeline faster than the step it feeds? Examples/s of each, and host memory.

Run: ``.venv/bin/python scripts/bench_input.py CONFIG [key=value ...] [--workers 0 1 2]``
e.g. ``configs/digits_cnn.yaml`` (in memory) or, CIFAR-shaped and streamed from disk,
``configs/digits_resnet.yaml data.name=synthetic_images/medium data.stream=true``.

For each worker count the run's own training stream (``jaxtrain.train.advance.
training_stream``: grain, ``data.workers`` processes, the batches put on the device by the
prefetch thread) is drained for ``--batches`` batches after a warm-up (worker start-up and
the first batches are not counted): that is the *input* rate. The *step* rate is the run's
compiled train step on one device batch, over and over (no input at all). Then the two
together: the run's own ``advance`` (step fed by the stream), the rate a training loop sees.
Peak resident memory of this process and of the largest worker comes from ``getrusage``.

The last line is ``input_vs_step: X`` (the best input rate over the step rate; >= 1 means
the step never waits for data, given a core for each).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

from jaxtrain.config import load_config  # noqa: E402
from jaxtrain.data import prepare_data  # noqa: E402
from jaxtrain.train.advance import make_advance, training_stream  # noqa: E402
from jaxtrain.train.parallel import build_placement  # noqa: E402
from jaxtrain.train.pieces import build_pieces, build_step  # noqa: E402


def peak_mb() -> tuple[float, float]:
    """Peak resident memory (MiB) of this process and of its largest finished child."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def input_rate(config, pieces, placement, batches: int, warmup: int) -> float:
    """Examples/s of the training stream alone (drained, every batch made ready)."""
    iterator = iter(training_stream(config, pieces, placement))
    try:
        for _ in range(warmup):
            jax.block_until_ready(next(iterator))
        start = time.perf_counter()
        for _ in range(batches):
            jax.block_until_ready(next(iterator))
        return batches * config.data.batch_size / (time.perf_counter() - start)
    finally:
        iterator.close()


def step_rate(config, pieces, placement, steps: int) -> float:
    """Examples/s of the compiled step on one batch held on the device."""
    iterator = iter(training_stream(config, pieces, placement))
    batch = placement.put_batch(next(iterator))
    iterator.close()
    step = placement.compile(build_step(config, pieces, axis_name=placement.axis_name))
    state = placement.put_state(pieces.state)
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return steps * config.data.batch_size / (time.perf_counter() - start)


def fed_rate(config, pieces, placement, steps: int, warmup: int) -> float:
    """Examples/s of the step fed by the stream (the training loop's ``advance``)."""
    iterator = iter(training_stream(config, pieces, placement))
    advance, _ = make_advance(config, pieces, placement, iterator)
    state = placement.put_state(pieces.state)
    try:
        for _ in range(warmup):
            state, metrics = advance(state, 1)
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = advance(state, 1)
        jax.block_until_ready(metrics)
        return steps * config.data.batch_size / (time.perf_counter() - start)
    finally:
        iterator.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    started = time.perf_counter()
    data = prepare_data(config.data, streamable=not config.train.fused_epochs)
    prepared_s = time.perf_counter() - started
    pieces = build_pieces(config, data)
    placement = build_placement(config.train.parallel)
    train = data.splits["train"]
    kind = "streamed" if type(train).__name__ == "StreamSplit" else "in memory"
    load = os.getloadavg()
    print(f"config: {args.config} {' '.join(args.overrides)}")
    print(f"data: {config.data.name}, train {len(train):,} examples {kind}, input "
          f"{data.input_shape} {train.inputs.dtype}, batch {config.data.batch_size}, "
          f"prepared in {prepared_s:.1f} s")  # fmt: skip
    print(f"model: {config.model.name}; devices: {jax.devices()}; cpu cores: {os.cpu_count()}; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    rates = {}
    for workers in args.workers:
        data_config = dataclasses.replace(config.data, workers=workers)
        with_workers = dataclasses.replace(config, data=data_config)
        warmup = 5 + 2 * workers
        rates[workers] = input_rate(with_workers, pieces, placement, args.batches, warmup)
        print(f"input pipeline, {workers} worker(s): {rates[workers]:,.0f} examples/s")
    steps = step_rate(config, pieces, placement, args.steps)
    print(f"train step alone: {steps:,.0f} examples/s")
    best = max(rates, key=rates.get)
    fed_config = dataclasses.replace(config, data=dataclasses.replace(config.data, workers=best))
    fed = fed_rate(fed_config, pieces, placement, args.steps, 5 + 2 * best)
    print(f"train step fed by the pipeline ({best} worker(s)): {fed:,.0f} examples/s "
          f"({fed / steps:.2f} of the step alone)")  # fmt: skip
    own, child = peak_mb()
    print(f"peak resident memory: {own:,.0f} MiB (this process), {child:,.0f} MiB (largest worker)")
    print(f"input_vs_step: {rates[best] / steps:.2f}")


if __name__ == "__main__":
    main()
