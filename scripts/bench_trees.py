"""Benchmark the JAX CART tree and random forest fits against scikit-learn's, on the same data.

Run: ``.venv/bin/python scripts/bench_trees.py`` (about a minute on 2 CPU cores).

Data: digits (1347 x 64, 10 classes) and breast_cancer (426 x 30, 2 classes), the training
split of ``train_test_split(stratify=y, random_state=0)``, as float32.
Settings, the same on both sides:
  tree:   criterion=gini, max_depth=8, min_samples_leaf=1, all features;
  forest: 50 trees, bootstrap, max_features=sqrt, max_depth=8, sklearn ``n_jobs=1``;
          ours with ``trees_per_step=1`` (trees one after another: fastest on CPU).
Timing: the median of several fits of each, ours jitted and timed to ``block_until_ready``
after a warm-up call whose time is reported apart as compile time. Test accuracies show that
both sides fit the same kind of model.
The last line is ``tree_fit_vs_sklearn: X.XX``: our single-tree fit time over scikit-learn's,
the geometric mean across the datasets (below 1 means faster than scikit-learn).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxtrain.models.trees import fit_forest, fit_tree, predict_forest, predict_tree  # noqa: E402

MAX_DEPTH = 8
N_TREES = 50
DATASETS = {"digits": load_digits, "breast_cancer": load_breast_cancer}


def median_time(fit: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(fit())
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def compile_time(fit: Callable[[], object]) -> float:
    started = time.perf_counter()
    jax.block_until_ready(fit())
    return time.perf_counter() - started


def bench(name: str) -> dict[str, float]:
    x, y = DATASETS[name](return_X_y=True)
    xt, xe, yt, ye = train_test_split(x.astype(np.float32), y, stratify=y, random_state=0)
    k = int(y.max()) + 1
    xj, yj, key = jnp.asarray(xt), jnp.asarray(yt), jax.random.key(0)

    def ours_tree():
        return fit_tree(xj, yj, key, num_classes=k, max_depth=MAX_DEPTH)

    def ours_forest():
        return fit_forest(
            xj, yj, key, n_estimators=N_TREES, num_classes=k, max_depth=MAX_DEPTH, trees_per_step=1
        )

    def sk_tree():
        return DecisionTreeClassifier(max_depth=MAX_DEPTH, random_state=0).fit(xt, yt)

    def sk_forest():
        return RandomForestClassifier(N_TREES, max_depth=MAX_DEPTH, n_jobs=1, random_state=0).fit(
            xt, yt
        )

    r = {"tree_compile": compile_time(ours_tree), "forest_compile": compile_time(ours_forest)}
    r["tree"], r["sk_tree"] = median_time(ours_tree, 15), median_time(sk_tree, 15)
    r["forest"], r["sk_forest"] = median_time(ours_forest, 3), median_time(sk_forest, 3)
    r["tree_acc"] = float((np.asarray(predict_tree(ours_tree(), xe)).argmax(1) == ye).mean())
    r["forest_acc"] = float((np.asarray(predict_forest(ours_forest(), xe)).argmax(1) == ye).mean())
    r["sk_tree_acc"], r["sk_forest_acc"] = sk_tree().score(xe, ye), sk_forest().score(xe, ye)
    r["shape"] = xt.shape
    return r


def main() -> None:
    print(
        f"jax {jax.__version__} on {jax.default_backend()}; tree: gini, max_depth={MAX_DEPTH}; "
        f"forest: {N_TREES} trees, bootstrap, max_features=sqrt, max_depth={MAX_DEPTH}"
    )
    header = (
        f"{'dataset':14s} {'model':6s} {'ours ms':>9s} {'sklearn ms':>11s} {'ratio':>6s} "
        f"{'compile s':>10s} {'acc ours':>9s} {'acc sk':>7s}"
    )
    print(header)
    print("-" * len(header))
    tree_ratios, forest_ratios = [], []
    for name in DATASETS:
        r = bench(name)
        for model in ("tree", "forest"):
            ratio = r[model] / r[f"sk_{model}"]
            (tree_ratios if model == "tree" else forest_ratios).append(ratio)
            print(
                f"{name:14s} {model:6s} {r[model] * 1e3:9.2f} {r[f'sk_{model}'] * 1e3:11.2f} "
                f"{ratio:6.2f} {r[f'{model}_compile']:10.2f} {r[f'{model}_acc']:9.3f} "
                f"{r[f'sk_{model}_acc']:7.3f}"
            )
        print(f"{'':14s} (train shape {r['shape']})")
    geomean = lambda values: float(np.exp(np.mean(np.log(values))))  # noqa: E731
    print(f"forest_fit_vs_sklearn: {geomean(forest_ratios):.2f}")
    print(f"tree_fit_vs_sklearn: {geomean(tree_ratios):.2f}")


if __name__ == "__main__":
    main()
