"""Search: TPE in rounds against random search on the same budget, 64 trials each.

Run: ``.venv/bin/python experiments/search/run.py [--quick] [--out DIR]``.

``search.yaml`` is a ``jaxtrain sweep`` config: the digits MLP, a conditional space (adamw
with b1 | sgd with momentum; learning rate and weight decay over decades), ``method: tpe``
with 8 rounds of 8 trials and ``compare_random: true`` (Optuna's random sampler on the same
rounds, in ``random/`` of the sweep directory). Each of 5 seeds (``sweep.seed``) runs it once;
a third arm draws the same 64-trial budget as one random population (``samples: 64``: every
member in one program per family). Reports each arm's best validation accuracy and wall time
per seed and their means, and the best-so-far curves. Writes ``results.md``,
``results.json`` and ``best_so_far.png`` to ``--out`` (default ``experiments/search/results``).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import figure, markdown_table, save, study_arguments, write_json  # noqa: E402

from jaxtrain.config import load_config  # noqa: E402
from jaxtrain.sweep import run_sweep  # noqa: E402

CONFIG = HERE / "search.yaml"
SEEDS = (0, 1, 2, 3, 4)
QUICK = ["sweep.batch=2", "sweep.rounds=2", "train.epochs=1"]


def run_seed(seed: int, overrides: list[str], runs: Path) -> dict:
    """One seed: the TPE search with its random baseline, and one random population."""
    config = load_config(CONFIG, [f"sweep.seed={seed}", *overrides])
    run_dir = runs / f"tpe_{seed}"
    run_dir.mkdir(parents=True)
    started = time.perf_counter()
    result = run_sweep(config, run_dir, progress=False)
    total = time.perf_counter() - started
    search = result["search"]
    baseline = search["baseline"]
    trials = config.sweep.trials
    population = load_config(
        CONFIG,
        [f"sweep.seed={seed}", *overrides, "sweep.method=random", "sweep.batch=null",
         "sweep.rounds=null", "sweep.compare_random=false", f"sweep.samples={trials}"],
    )  # fmt: skip
    one_dir = runs / f"population_{seed}"
    one_dir.mkdir()
    started = time.perf_counter()
    one = run_sweep(population, one_dir, progress=False)
    one_time = time.perf_counter() - started
    return {
        "seed": seed,
        "trials": trials,
        "tpe": {
            "best": result["best"]["validation"]["accuracy"],
            "wall_s": search["wall_time_s"],
            "settings": result["best"]["settings"],
            "test": result["best"]["test"]["accuracy"],
            "importance": search.get("importance"),
            "curve": [p["best"] for p in search["best_so_far"]],
        },
        "random_rounds": {
            "best": baseline["best"],
            "wall_s": baseline["wall_time_s"],
            "curve": [p["best"] for p in baseline["best_so_far"]],
        },
        "random_population": {"best": one["best"]["validation"]["accuracy"], "wall_s": one_time},
        "both_searches_end_to_end_s": total,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    args = study_arguments(argv, __doc__, HERE, "2 rounds of 2 trials, 1 epoch, 1 seed")
    seeds = SEEDS[:1] if args.quick else SEEDS
    overrides = QUICK if args.quick else []
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("JAXTRAIN_DATA_DIR", str(Path(tmp) / "tfds"))
        started = time.perf_counter()
        rows = [run_seed(seed, overrides, Path(tmp) / "runs") for seed in seeds]
        wall = time.perf_counter() - started
    arms = ("tpe", "random_rounds", "random_population")
    means = {
        arm: {
            "best": statistics.fmean(r[arm]["best"] for r in rows),
            "wall_s": statistics.fmean(r[arm]["wall_s"] for r in rows),
        }
        for arm in arms
    }
    results = {"seeds": list(seeds), "rows": rows, "means": means, "wall_s": wall,
               "quick": args.quick}  # fmt: skip
    write_json(args.out / "results.json", results)
    table = markdown_table(
        ["seed", "TPE best", "TPE s", "random (rounds) best", "random s",
         "random (1 population) best", "1 population s"],
        [[r["seed"], r["tpe"]["best"], f'{r["tpe"]["wall_s"]:.1f}',
          r["random_rounds"]["best"], f'{r["random_rounds"]["wall_s"]:.1f}',
          r["random_population"]["best"], f'{r["random_population"]["wall_s"]:.1f}']
         for r in rows]
        + [["mean", means["tpe"]["best"], f'{means["tpe"]["wall_s"]:.1f}',
            means["random_rounds"]["best"], f'{means["random_rounds"]["wall_s"]:.1f}',
            means["random_population"]["best"], f'{means["random_population"]["wall_s"]:.1f}']],
    )  # fmt: skip
    (args.out / "results.md").write_text(
        f"# TPE vs random search, {rows[0]['trials']} trials, digits MLP\n\n"
        "Best validation accuracy (269 examples) and wall time of the training rounds "
        "(TPE and random in rounds: asks, training, tells; one population: the whole "
        f"sweep end to end). Total {wall / 60:.1f} min.\n\n" + table
    )
    fig = figure(6.5, 4.0)
    ax = fig.add_subplot()
    for arm, label in (("tpe", "TPE (8 rounds of 8)"), ("random_rounds", "random")):
        curves = [r[arm]["curve"] for r in rows]
        mean = [statistics.fmean(c[i] for c in curves) for i in range(len(curves[0]))]
        ax.step(range(1, len(mean) + 1), mean, where="post", label=label)
    ax.set_xlabel("trials")
    ax.set_ylabel(f"best validation accuracy so far (mean of {len(rows)} seeds)")
    ax.legend()
    save(fig, args.out / "best_so_far.png")
    print(table)
    return results


if __name__ == "__main__":
    main()
