"""An epoch over a dataset larger than memory would like, and the memory it took.

Run: ``.venv/bin/python scripts/bench_stream_memory.py [--name synthetic_images/3gb]
[--data-dir /tmp/jaxtrain_bench_tfds] [--workers 2] [--keep]``

Builds the local builder ``--name`` (random uint8 32x32x3 images; ``3gb``: 850,000 + 10,000
of them, about 3.2 GB of array_record on disk) in ``--data-dir`` unless it is there, then
runs ``jaxtrain train`` in this process for one epoch with ``data.stream: auto`` (which
streams it: it is larger than ``data.stream_above_mb``) and a small MLP, and prints the
dataset's size on disk, the path taken, the time and examples/s, and the peak resident
memory of this process and of the largest grain worker (``getrusage``). The dataset is
deleted afterwards unless ``--keep``. The last line is ``peak_rss_mb: X``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = """
name: stream_epoch
seed: 0
data: {{name: {name}, data_dir: "{data_dir}", stream: auto, batch_size: 512,
        eval_batch_size: 1024, workers: {workers}, validation_fraction: 0.05}}
model: {{name: mlp, hidden: [64]}}
optimizer: {{name: adam, learning_rate: 0.001}}
train: {{epochs: 1, log_every: 100, checkpoint: {{keep: 1}}}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="synthetic_images/3gb")
    parser.add_argument("--data-dir", default="/tmp/jaxtrain_bench_tfds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    from jaxtrain.data.sources import _builder

    started = time.perf_counter()
    builder = _builder(args.name, Path(args.data_dir))
    built_s = time.perf_counter() - started
    size = int(subprocess.run(["du", "-sb", builder.data_dir], capture_output=True, text=True,
                              check=True).stdout.split()[0])  # fmt: skip
    print(f"dataset: {args.name} in {builder.data_dir}: {size / 2**30:.2f} GiB on disk, "
          f"{builder.info.splits['train'].num_examples:,} train examples "
          f"(built or found in {built_s:.0f} s)")  # fmt: skip
    load = os.getloadavg()
    print(f"cpu cores: {os.cpu_count()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    del builder
    from jaxtrain.runner import train

    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "stream_epoch.yaml"
        config.write_text(CONFIG.format(name=args.name, data_dir=args.data_dir,
                                        workers=args.workers))  # fmt: skip
        started = time.perf_counter()
        result = train(config, runs_dir=Path(folder) / "runs", progress=False, report=False)
        wall = time.perf_counter() - started
        import json

        metrics = json.loads((result.run_dir / "metrics.json").read_text())
        report = json.loads((result.run_dir / "data_report.json").read_text())
    training = metrics["training"]
    print(f"path: {report['source']}; splits {report['splits']}")
    print(f"one epoch: {training['steps']:,} steps of 512 in {training['wall_time_s']:.0f} s "
          f"({training['examples_per_s']:,.0f} examples/s); whole run {wall:.0f} s; "
          f"test accuracy {metrics['test']['accuracy']:.4f}")  # fmt: skip
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak resident memory: {own:,.0f} MiB (this process), {child:,.0f} MiB (largest "
          "worker or child)")  # fmt: skip
    if not args.keep:
        shutil.rmtree(Path(args.data_dir), ignore_errors=True)
        print(f"removed {args.data_dir}")
    print(f"peak_rss_mb: {own:.0f}")


if __name__ == "__main__":
    main()
