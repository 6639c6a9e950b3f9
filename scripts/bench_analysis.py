"""Benchmark the run's held-out analysis: bootstrap intervals by row counts vs by indices.

Run: ``.venv/bin/python scripts/bench_analysis.py [--rows N] [--classes K]`` (default 5000
rows, 10 classes, the 1,000 resamples of every run's report).

(a) the ROC-AUC interval as the analysis computes it: ``bootstrap_ci_weighted``, each
    resample given as how often each row was drawn, so the scores are sorted once per class;
(b) the same interval by ``bootstrap_ci``: each resample gathers its rows and sorts them.
Both draw the same rows (the intervals are printed and must agree). Compile time is left out
(each program is compiled, then timed as the best of three calls). The last line is
``counts_vs_indices: X.XX``: (b)'s time over (a)'s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxtrain.metrics import bootstrap_ci, bootstrap_ci_weighted, roc_auc_ovr  # noqa: E402
from jaxtrain.train.analysis import BOOTSTRAP_RESAMPLES  # noqa: E402


def best_of_three(compiled, *args) -> tuple[float, list[float]]:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        result = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - started)
    return min(times), [float(x) for x in result]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.integers(0, args.classes, args.rows), jnp.int32)
    logits = rng.normal(size=(args.rows, args.classes)) + 2 * np.eye(args.classes)[labels]
    probs = jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    key = jax.random.key(0)

    def by_counts(y, p, k):
        auc = lambda a, b, w: roc_auc_ovr(a, b, sample_weight=w)  # noqa: E731
        return bootstrap_ci_weighted(auc, y, p, key=k, n_resamples=BOOTSTRAP_RESAMPLES)

    def by_indices(y, p, k):
        auc = lambda a, b: roc_auc_ovr(a, b)  # noqa: E731
        return bootstrap_ci(auc, y, p, key=k, n_resamples=BOOTSTRAP_RESAMPLES)

    print(f"{args.rows} rows, {args.classes} classes, {BOOTSTRAP_RESAMPLES} resamples, "
          f"{jax.devices()[0].device_kind}")  # fmt: skip
    seconds = {}
    for name, fn in (("counts", by_counts), ("indices", by_indices)):
        compiled = jax.jit(fn).lower(labels, probs, key).compile()
        seconds[name], interval = best_of_three(compiled, labels, probs, key)
        print(f"{name:8s} {seconds[name]:8.3f} s   ROC-AUC {interval[0]:.6f} "
              f"[{interval[1]:.6f}, {interval[2]:.6f}]")  # fmt: skip
    print(f"counts_vs_indices: {seconds['indices'] / seconds['counts']:.2f}")


if __name__ == "__main__":
    main()
