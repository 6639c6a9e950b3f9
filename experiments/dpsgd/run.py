"""DP-SGD: test accuracy against the privacy budget epsilon on digits.

Run: ``.venv/bin/python experiments/dpsgd/run.py [--quick] [--out DIR]``.

``study.yaml`` names the config (``configs/digits_dpsgd.yaml``), the seeds and the target
epsilons. Every run is an ordinary ``jaxtrain.runner.train`` run whose ``train.dp`` noise is
calibrated to the target for the whole run; its ``metrics.json`` reports the epsilon the
accountant (PLD, dp-accounting) gives for the sampling actually used. The non-private row is
the same config with the noise off (Poisson batches and clipping kept, epsilon infinite). Writes
``results.md``, ``results.json`` and ``accuracy_vs_epsilon.png`` to ``--out`` (default
``experiments/dpsgd/results``).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import (  # noqa: E402
    ROOT,
    figure,
    markdown_table,
    read_json,
    save,
    study_arguments,
    timed,
    write_json,
)

from jaxtrain.runner import train  # noqa: E402


NO_NOISE = "train.dp={clip_norm: 0.1, noise_multiplier: 0.0}"


def run_one(config: Path, overrides: list[str], runs: Path) -> dict:
    row: dict = {}
    with timed(row):
        result = train(config, overrides, runs_dir=runs, progress=False, report=False)
    summary = read_json(result.run_dir / "metrics.json")
    privacy = summary.get("privacy") or {}
    return {
        **row,
        "test_accuracy": summary["test"]["accuracy"],
        "validation_accuracy": summary["validation"]["accuracy"],
        "epsilon": privacy.get("epsilon"),
        "noise_multiplier": privacy.get("noise_multiplier"),
        "steps": summary["training"]["steps"],
    }


def main(argv: Sequence[str] | None = None) -> dict:
    args = study_arguments(argv, __doc__, HERE, "one epoch, epsilon 3, one seed")
    study = yaml.safe_load((HERE / "study.yaml").read_text())
    config = ROOT / study["config"]
    seeds, epsilons = study["seeds"], [*study["epsilons"], None]
    extra: list[str] = []
    if args.quick:
        seeds, extra = study["quick"]["seeds"], study["quick"]["overrides"]
        epsilons = [*study["quick"]["epsilons"], None]
    args.out.mkdir(parents=True, exist_ok=True)
    rows, timing = {}, {}
    with tempfile.TemporaryDirectory() as runs, timed(timing):
        for target in epsilons:
            # Without a target: the same clipping and sampling, no noise (epsilon infinite), so
            # the gap is what the noise costs.
            dp = [f"train.dp.target_epsilon={target}"] if target else [NO_NOISE]
            rows[target] = [
                run_one(config, [*dp, f"seed={seed}", *extra], Path(runs)) for seed in seeds
            ]
    summary = {
        ("none" if target is None else target): {
            "test_accuracy_mean": statistics.fmean(r["test_accuracy"] for r in runs),
            "test_accuracy_min": min(r["test_accuracy"] for r in runs),
            "test_accuracy_max": max(r["test_accuracy"] for r in runs),
            "epsilon": runs[0]["epsilon"],
            "noise_multiplier": runs[0]["noise_multiplier"],
            "steps": runs[0]["steps"],
            "runs": runs,
        }
        for target, runs in rows.items()
    }
    write_results(summary, seeds, timing["wall_s"], args.out, args.quick)
    plot(summary, args.out / "accuracy_vs_epsilon.png")
    result = {"summary": summary, "seeds": seeds, "wall_s": timing["wall_s"]}
    write_json(args.out / "results.json", result)
    return result


def write_results(summary: dict, seeds: list[int], wall: float, out: Path, quick: bool) -> None:
    rows = []
    for target, entry in summary.items():
        rows.append(
            [
                "none (no noise)" if target == "none" else f"{target:g}",
                "-" if entry["epsilon"] is None else f"{entry['epsilon']:.3f}",
                "-" if entry["noise_multiplier"] is None else f"{entry['noise_multiplier']:.3f}",
                f"{entry['test_accuracy_mean']:.4f} ({entry['test_accuracy_min']:.4f}-"
                f"{entry['test_accuracy_max']:.4f})",
            ]
        )
    lines = [
        "# DP-SGD on digits: accuracy against epsilon" + (" (--quick)" if quick else ""),
        "",
        f"Test accuracy, mean over seeds {seeds} (min-max). Epsilon at delta 1e-5 for the whole "
        "run as the PLD accountant gives it for Poisson sampling (add or remove one example), "
        "the noise multiplier calibrated to the target.",
        "",
        markdown_table(
            ["target epsilon", "epsilon spent", "noise multiplier", "test accuracy"], rows
        ),  # fmt: skip
        "![accuracy against epsilon](accuracy_vs_epsilon.png)",
        "",
        f"Whole study: {wall:.0f} s wall time.",
        "",
    ]
    (out / "results.md").write_text("\n".join(lines))


def plot(summary: dict, path: Path) -> None:
    fig = figure(6, 3.8)
    ax = fig.add_subplot()
    private = [(k, v) for k, v in summary.items() if k != "none"]
    x = [v["epsilon"] for _, v in private]
    y = [v["test_accuracy_mean"] for _, v in private]
    low = [v["test_accuracy_mean"] - v["test_accuracy_min"] for _, v in private]
    high = [v["test_accuracy_max"] - v["test_accuracy_mean"] for _, v in private]
    ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label="DP-SGD")
    if "none" in summary:
        ax.axhline(summary["none"]["test_accuracy_mean"], color="gray", ls="--", label="no noise")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon (delta 1e-5)")
    ax.set_ylabel("test accuracy")
    ax.set_title("digits MLP: accuracy against the privacy budget")
    ax.legend()
    save(fig, path)


if __name__ == "__main__":
    main()
