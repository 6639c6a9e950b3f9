"""Bias: the biased_credit classifier before and after mitigation, with per-group metrics.

Run: ``.venv/bin/python experiments/bias/run.py [--quick] [--out DIR]``.

``study.yaml`` names the config (``configs/credit_fairness.yaml``), the seeds and the
settings (no mitigation, reweighing). Every run is an ordinary ``jaxtrain.runner.train`` run
whose ``metrics.json`` carries the fairness audit of the test split: per group count,
accuracy, selection rate, TPR and FPR, the demographic parity (DP) difference and ratio and
the equalized odds (EO) difference, for the model's own decisions and after per-group
thresholds fitted on the validation split. Writes ``results.md``, ``results.json``,
``selection_rates.png`` and ``gaps.png`` to ``--out`` (default ``experiments/bias/results``).
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

GAPS = ("accuracy", "demographic_parity_difference", "demographic_parity_ratio",
        "equalized_odds_difference")  # fmt: skip
STAGES = {"model": "model's decisions", "after_thresholds": "+ per-group thresholds"}


def run_one(config: Path, overrides: list[str], runs: Path) -> dict:
    row: dict = {}
    with timed(row):
        result = train(config, overrides, runs_dir=runs, progress=False)
    audit = read_json(result.run_dir / "metrics.json")["fairness"]
    return {**row, "audit": audit}


def summarise(runs: list[dict]) -> dict:
    """Per stage: each gap's mean, min and max over seeds, and seed 0's per-group table."""
    out = {}
    for stage in STAGES:
        values = {k: [r["audit"][stage][k] for r in runs] for k in GAPS}
        out[stage] = {
            k: {"mean": statistics.fmean(v), "min": min(v), "max": max(v)}
            for k, v in values.items()
        }
        out[stage]["by_group_seed0"] = runs[0]["audit"][stage]["by_group"]
    return out


def _span(stat: dict) -> str:
    if stat["min"] == stat["max"]:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} ({stat['min']:.3f}-{stat['max']:.3f})"


def write_results(summary: dict, seeds: list[int], wall: float, out: Path, quick: bool) -> None:
    rows = []
    for setting, stages in summary.items():
        for stage, label in STAGES.items():
            rows.append([f"{setting}, {label}", *(_span(stages[stage][k]) for k in GAPS)])
    groups = []
    for setting, stages in summary.items():
        for stage, label in STAGES.items():
            by_group = stages[stage]["by_group_seed0"]
            for g in range(len(by_group["count"])):
                groups.append(
                    [
                        f"{setting}, {label}",
                        str(g),
                        str(int(by_group["count"][g])),
                        *(
                            f"{by_group[k][g]:.3f}"
                            for k in (
                                "accuracy",
                                "selection_rate",
                                "true_positive_rate",
                                "false_positive_rate",
                            )
                        ),
                    ]
                )
    lines = [
        "# Bias: biased_credit before and after mitigation" + (" (--quick)" if quick else ""),
        "",
        f"Test split, mean over seeds {seeds} (min-max in brackets). DP = demographic parity "
        "(selection-rate gap and ratio between the groups), EO = equalized odds (largest "
        "TPR or FPR gap). The labels are the biased historical decisions, so accuracy is "
        "measured against them.",
        "",
        markdown_table(
            ["training, decisions", "accuracy", "DP difference", "DP ratio", "EO difference"], rows
        ),
        "Per group (seed 0):",
        "",
        markdown_table(
            ["training, decisions", "group", "count", "accuracy", "selection rate", "TPR", "FPR"],
            groups,
        ),
        "![selection rates](selection_rates.png)",
        "",
        "![gaps](gaps.png)",
        "",
        f"Whole study: {wall:.0f} s wall time.",
        "",
    ]
    (out / "results.md").write_text("\n".join(lines))


def plot_selection_rates(summary: dict, path: Path) -> None:
    fig = figure(7.5, 3.8)
    ax = fig.add_subplot()
    labels, width, x = [], 0.38, 0
    for setting, stages in summary.items():
        for stage, label in STAGES.items():
            rates = stages[stage]["by_group_seed0"]["selection_rate"]
            ax.bar(
                x - width / 2,
                rates[0],
                width,
                color="#d62728",
                label="group 0 (penalised)" if x == 0 else None,
            )
            ax.bar(
                x + width / 2, rates[1], width, color="#1f77b4", label="group 1" if x == 0 else None
            )
            labels.append(f"{setting}\n{label}")
            x += 1
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("selection rate (approved share), test")
    ax.set_title("biased_credit: who gets approved (seed 0)")
    ax.legend(fontsize=8)
    save(fig, path)


def plot_gaps(summary: dict, path: Path) -> None:
    fig = figure(7.5, 3.8)
    ax = fig.add_subplot()
    names = list(summary)
    keys = [
        ("demographic_parity_difference", "DP difference"),
        ("equalized_odds_difference", "EO difference"),
    ]
    width = 0.2
    for i, (stage, stage_label) in enumerate(STAGES.items()):
        for j, (key, key_label) in enumerate(keys):
            offset = (2 * i + j - 1.5) * width
            means = [summary[n][stage][key]["mean"] for n in names]
            lows = [summary[n][stage][key]["mean"] - summary[n][stage][key]["min"] for n in names]
            highs = [summary[n][stage][key]["max"] - summary[n][stage][key]["mean"] for n in names]
            ax.bar(
                [x + offset for x in range(len(names))],
                means,
                width,
                yerr=[lows, highs],
                capsize=3,
                label=f"{key_label}, {stage_label}",
            )
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("gap between groups (test; lower is fairer)")
    ax.set_title("Parity gaps, mean and range over seeds")
    ax.legend(fontsize=8)
    save(fig, path)


def main(argv: Sequence[str] | None = None) -> dict:
    args = study_arguments(argv, __doc__, HERE, quick_help="one seed, 2 epochs (tests)")
    study = yaml.safe_load((HERE / "study.yaml").read_text())
    seeds = study["quick"]["seeds"] if args.quick else study["seeds"]
    common = study["quick"]["overrides"] if args.quick else []
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"settings": {}, "seeds": seeds, "quick": args.quick}
    timing: dict = {}
    with timed(timing), tempfile.TemporaryDirectory() as runs:
        for setting, overrides in study["settings"].items():
            per_seed = []
            for seed in seeds:
                run = run_one(
                    ROOT / study["config"], [*common, *overrides, f"seed={seed}"], Path(runs)
                )
                per_seed.append({"seed": seed, **run})
                model = run["audit"]["model"]
                print(
                    f"{setting} seed {seed}: accuracy {model['accuracy']:.3f}, DP difference "
                    f"{model['demographic_parity_difference']:.3f} ({run['wall_s']:.1f} s)"
                )
            results["settings"][setting] = per_seed
    summary = {s: summarise(r) for s, r in results["settings"].items()}
    results["summary"] = summary
    results["wall_s"] = timing["wall_s"]
    write_results(summary, seeds, timing["wall_s"], args.out, args.quick)
    plot_selection_rates(summary, args.out / "selection_rates.png")
    plot_gaps(summary, args.out / "gaps.png")
    write_json(args.out / "results.json", results)
    print((args.out / "results.md").read_text())
    return results


if __name__ == "__main__":
    main()
